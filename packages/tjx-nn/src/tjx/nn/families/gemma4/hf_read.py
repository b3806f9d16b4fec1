"""config.json → tjx config for Gemma 4 (``gemma4_text``; what maps to what:
:mod:`tjx.nn.families.gemma4.hf`).

``layer_types`` as transformers reads it (default: five sliding layers, then a full one; the last
layer always full). Refused in one line naming the key: ``use_bidirectional_attention`` ``"all"``
(``"vision"`` changes no text token), another activation, a RoPE scaling (``factor``, another
``rope_type``), a ``per_layer_config`` other than one override of the global layers,
``attention_bias`` and unknown keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig, make_config
from tjx.nn.families.gemma4.hf import GEMMA4, MOE_NEEDS, NEEDS
from tjx.nn.families.gemma4.options import FLAT_GEMMA4_KEYS
from tjx.nn.hf.config import partial_rotary_factor
from tjx.nn.hf.family_base import base_fields, check_keys, windows
from tjx.nn.hf.gemma import check_tanh_gelu
from tjx.nn.hf.keys import (
    ABSENT,
    ATTENTION_KINDS,
    BASE,
    count,
    flag,
    layer_list,
    obj,
    positive,
    size,
    text,
)
from tjx.nn.moe.config import MoEConfig

#: Gemma 4's keys beyond ``family_base.BASE_KEYS``.
KEYS = frozenset(
    {
        "hidden_activation",
        "sliding_window",
        "layer_types",
        "final_logit_softcapping",
        "use_bidirectional_attention",
        "vocab_size_per_layer_input",
        "hidden_size_per_layer_input",
        "attention_k_eq_v",
        "num_kv_shared_layers",
        "enable_moe_block",
        "use_double_wide_mlp",
        "num_experts",
        "top_k_experts",
        "moe_intermediate_size",
        "global_head_dim",
        "num_global_key_value_heads",
        "per_layer_config",
    }
)
#: The keys Gemma 4's import reads (`keys.Spec`), with transformers 5.24's ``Gemma4TextConfig``
#: defaults; ``global_head_dim`` and ``num_global_key_value_heads`` are the release form's
#: keyword arguments (``per_layer_config`` is what transformers 5.24 writes), null as left out.
SPEC = BASE.but(
    "Gemma4TextConfig",
    hidden_activation=text("gelu_pytorch_tanh"),
    num_key_value_heads=size(4),
    head_dim=size(256),
    max_position_embeddings=size(131_072),
    tie_word_embeddings=flag(True),
    sliding_window=size(512),
    layer_types=layer_list(ATTENTION_KINDS),
    final_logit_softcapping=positive(None, null=None),
    use_bidirectional_attention=text(None, null=None),
    vocab_size_per_layer_input=size(262_144),
    hidden_size_per_layer_input=count(256),
    attention_k_eq_v=flag(False),
    num_kv_shared_layers=count(0),
    enable_moe_block=flag(False),
    use_double_wide_mlp=flag(False),
    num_experts=size(None, null=None),
    top_k_experts=size(None, null=None),
    moe_intermediate_size=size(None, null=None),
    global_head_dim=size(512, null=512),
    num_global_key_value_heads=size(ABSENT, null=ABSENT),
    per_layer_config=obj(),
    rules=(
        ("top_k_experts", "<=", "num_experts"),
        ("num_kv_shared_layers", "<=", "num_hidden_layers"),
        ("num_global_key_value_heads", "divides", "num_attention_heads"),
    ),
)
#: transformers' RoPE per layer type when ``rope_parameters`` is left out.
ROPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    "full_attention": {
        "rope_type": "proportional",
        "partial_rotary_factor": 0.25,
        "rope_theta": 1_000_000.0,
    },
}


def _layer_types(get: Mapping[str, Any], layers: int) -> list[str]:
    """``layer_types`` as transformers reads it: given or five sliding then one full, the last
    layer forced to full attention."""
    types = get.get("layer_types")  # its length and kinds: read with the spec
    if types is None:
        types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(layers)]
    return [*types[:-1], "full_attention"]


def _rope(get: Mapping[str, Any], types: list[str]) -> dict[str, Any]:
    """``rope_theta``, ``rope_local_theta`` and ``global_rope_proportion`` from the per-type
    ``rope_parameters`` (transformers' defaults where it is left out); a scaling is refused."""
    if get.get("rope_scaling"):
        raise ValueError("config.json rope_scaling is not supported for gemma4_text")
    params = get.get("rope_parameters") or ROPE_DEFAULTS
    out: dict[str, Any] = {"position.rope_local_theta": None, "global_rope_proportion": 1.0}
    for kind in sorted(set(types)):
        entry = params.get(kind) if isinstance(params, Mapping) else None
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"config.json rope_parameters needs an entry for {kind!r} (one per layer type); "
                f"got {params!r}"
            )
        rope_type = entry.get("rope_type", "default")
        allowed = ("default", "proportional") if kind == "full_attention" else ("default",)
        if rope_type not in allowed or entry.get("factor", 1.0) != 1.0:
            raise ValueError(
                f"config.json rope_parameters.{kind} rope_type {rope_type!r} (factor "
                f"{entry.get('factor', 1.0)}) is not supported; tjx rotates gemma4_text's "
                f"{kind} layers with {' or '.join(allowed)} RoPE, factor 1"
            )
        theta = float(entry.get("rope_theta", 10_000.0))
        if kind == "sliding_attention":
            out["position.rope_local_theta"] = theta
            continue
        out["position.rope_theta"] = theta
        if rope_type == "proportional":  # the default RoPE ignores partial_rotary_factor
            partial = entry.get("partial_rotary_factor", 1.0)
            out["global_rope_proportion"] = partial_rotary_factor(partial)
    return out


def _global_geometry(get: Mapping[str, Any], types: list[str], fields: dict[str, Any]) -> None:
    """The full-attention layers' ``head_dim`` and key/value heads, from ``per_layer_config``
    (transformers 5.24's form: one override of the global layers) or ``global_head_dim`` and
    ``num_global_key_value_heads`` (read only with ``attention_k_eq_v``, as transformers does)."""
    overrides = get.get("per_layer_config")
    if overrides is None:
        head_dim = get["global_head_dim"]
        kv = get.get("num_global_key_value_heads") if get["attention_k_eq_v"] else None
    else:
        full = {i for i, t in enumerate(types) if t == "full_attention"}
        by_layer = _per_layer(overrides)
        distinct = {tuple(sorted(v.items())) for v in (by_layer or {}).values()}
        if by_layer is None or set(by_layer) != full or len(distinct) != 1:
            raise ValueError(
                "config.json per_layer_config must override the full_attention layers "
                f"({sorted(full)}) alike, with head_dim and num_key_value_heads (integers >= 1) "
                f"only; got {dict(overrides)!r}"
            )
        override = next(iter(by_layer.values()))
        head_dim = override.get("head_dim", fields["head_dim"])
        kv = override.get("num_key_value_heads")
    kv = kv if kv is not None else fields["num_kv_heads"]
    if "sliding_attention" not in types:  # every layer global: the global geometry is all
        fields |= dict(head_dim=head_dim, num_kv_heads=kv)
        return
    if head_dim != fields["head_dim"]:
        fields["global_head_dim"] = head_dim
    if kv != fields["num_kv_heads"]:
        fields["global_kv_heads"] = kv


def _per_layer(overrides: Mapping[str, Any]) -> dict[int, dict[str, int]] | None:
    """``per_layer_config`` as layer index → its overrides, or None unless every key is a layer
    index and every override sets only ``head_dim`` and ``num_key_value_heads``, integers >= 1."""
    out: dict[int, dict[str, int]] = {}
    for key, override in overrides.items():
        if not str(key).isdigit() or not isinstance(override, Mapping):
            return None
        sizes = dict(override)
        known = set(sizes) <= {"head_dim", "num_key_value_heads"}
        if not known or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes.values()
        ):
            return None
        out[int(key)] = sizes
    return out


def gemma4_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` from a gemma4_text ``config.json`` dict (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown key, or a value tjx does not compute as transformers does, named.
    """
    get = SPEC.read(hf)
    check_keys(get, GEMMA4, KEYS)
    check_tanh_gelu(get)
    # "vision": image tokens see each other both ways, text stays causal (no image here).
    if hf.get("use_bidirectional_attention") not in (None, "vision"):
        raise ValueError(
            "config.json use_bidirectional_attention "
            f"{hf['use_bidirectional_attention']!r} is not supported: bidirectional attention "
            "over text (tjx loads a causal decoder; null or 'vision' load)"
        )
    fields = base_fields(get)
    types = _layer_types(get, fields["num_layers"])
    sliding = [t == "sliding_attention" for t in types]
    fields |= windows(get["sliding_window"], sliding)
    fields |= _rope(get, types)
    _global_geometry(get, types, fields)
    shared = get["num_kv_shared_layers"]
    ple = get["hidden_size_per_layer_input"]
    ple_vocab = get["vocab_size_per_layer_input"]
    fields |= NEEDS  # what the export checks is what the import sets
    fields |= dict(
        final_logit_softcap=get["final_logit_softcapping"],
        global_values_from_keys=get["attention_k_eq_v"],
        kv_shared_layers=shared,
        kv_shared_mlp_dim=(
            2 * fields["mlp.dim"] if shared and get["use_double_wide_mlp"] else None
        ),
        per_layer_input_dim=ple,
        per_layer_vocab_size=ple_vocab if ple and ple_vocab != fields["vocab_size"] else None,
    )
    if get["enable_moe_block"]:
        fields |= _moe_fields(get)
    for name in FLAT_GEMMA4_KEYS:  # the family's switches, read flat above, are its section's
        if name in fields:
            fields[f"gemma4.{name}"] = fields.pop(name)
    return make_config(LlamaConfig, {**fields, **overrides})


def _moe_fields(get: Mapping[str, Any]) -> dict[str, Any]:
    """The MoE block beside every layer's MLP (``enable_moe_block``): softmax top-k of
    ``num_experts``, renormalised, times a learned scale per expert; the router reads the
    residual RMS-normed with a scale of its own. transformers adds no router loss."""
    for key in ("num_experts", "top_k_experts", "moe_intermediate_size"):
        if not get.get(key):
            raise ValueError(f"config.json enable_moe_block true needs {key}; got {get.get(key)!r}")
    moe = MoEConfig(
        num_experts=get["num_experts"],
        experts_per_token=get["top_k_experts"],
        expert_mlp_dim=get["moe_intermediate_size"],
        router_aux_loss=0.0,
        **MOE_NEEDS,  # what the export checks is what the import sets
    )
    return dict(moe=moe)
