"""Hugging Face Gemma 4 text (``Gemma4ForCausalLM``, ``gemma4_text``) ↔ tjx ``Llama``.

Gemma 4 is Gemma 3's decoder (sandwich norms, embeddings × ``sqrt(d)``, GeGLU with the tanh
GELU, q/k norms, windowed and global layers at their own RoPE bases) with these changes, each a
``LlamaConfig`` switch (Gemma 4's own in its section ``gemma4``, `Gemma4Options`; below without
the prefix):

=========================================  ====================================================
config.json / tensor                       tjx
=========================================  ====================================================
norms scale by ``weight`` (not ``1 + w``)  ``norm.plus_one`` False
attention scale 1                          ``query_pre_attn_scalar`` 1
``v_norm`` (no weight)                     ``value_norm``
``layer_scalar`` ``[1]`` per layer         ``layer_scale`` (``stack.layers.<i>.scale``)
``global_head_dim`` (default 512) or       ``global_head_dim``; ``global_kv_heads`` (read only
``per_layer_config``;                      with ``attention_k_eq_v``, as transformers does)
``num_global_key_value_heads``
``attention_k_eq_v`` (no ``v_proj`` on     ``global_values_from_keys``
global layers)
``rope_parameters.full_attention``         ``rope_theta``, ``global_rope_proportion``
(``proportional``, ``partial_rotary_``     (``partial_rotary_factor``; ``default``: 1)
``factor`` 0.25); ``sliding_attention``    ``rope_local_theta``
``num_kv_shared_layers``,                  ``kv_shared_layers``; ``kv_shared_mlp_dim`` (2 ×
``use_double_wide_mlp``                    ``mlp.dim`` on those layers)
``hidden_size_per_layer_input``,           ``per_layer_input_dim``, ``per_layer_vocab_size``:
``vocab_size_per_layer_input``,            ``per_layer.table``, ``per_layer.proj``,
``embed_tokens_per_layer``,                ``per_layer.norm``; each layer's
``per_layer_model_projection`` ...         ``per_layer.gate``/``proj``/``norm``
``enable_moe_block``, ``num_experts``,     MoE layers (every layer) with ``moe.beside_mlp``:
``top_k_experts``,                         the MLP stays, the experts beside it (softmax top-k,
``moe_intermediate_size``; ``router.*``,   renormalised; ``moe.router_expert_scale``,
``experts.gate_up_proj`` ``[E, 2f, d]``    ``moe.router_input_norm``); gate_up split into
(gate rows first), ``down_proj``           ``fc_gate``/``fc_in`` on load, fused on export
=========================================  ====================================================

``layer_types`` as transformers reads it (default: five sliding layers, then a full one; the last
layer always full). Refused in one line naming the key: ``use_bidirectional_attention`` ``"all"``
(``"vision"`` changes no text token), another activation, a RoPE scaling (``factor``, another
``rope_type``), a ``per_layer_config`` other than one override of the global layers,
``attention_bias`` and unknown keys.

The published folders are the image-text model's (``gemma4``, ``Gemma4ForConditionalGeneration``):
tjx reads its ``text_config`` (tied by the top-level ``tie_word_embeddings``) and the
``model.language_model.*`` tensors, skips the vision and audio towers and their embedders in one
line (`skip_towers`), and exports the text model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tjx.nn.configs import LlamaConfig, make_config, setting_value
from tjx.nn.families.gemma4.options import FLAT_GEMMA4_KEYS
from tjx.nn.family_config import layer_shape
from tjx.nn.hf.config import partial_rotary_factor
from tjx.nn.hf.family_base import (
    base_fields,
    check_exportable,
    check_keys,
    common_to_hf,
    layer_types,
    mismatches,
    refuse_mismatches,
    windows,
)
from tjx.nn.hf.gemma import TANH_GELU
from tjx.nn.hf.image_text import skip_beside, text_config
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
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.tables import Convert, Tables
from tjx.nn.moe.config import MoEConfig, expert_mlp_dim

GEMMA4 = "gemma4_text"
ARCHITECTURE = "Gemma4ForCausalLM"
#: The image-text model's type, and its keys beside ``text_config``: the towers' configs and the
#: tokens that mark images, video and audio in a prompt (none changes the text model's numbers).
IMAGE_TEXT = "gemma4"
IMAGE_TEXT_KEYS = frozenset(
    {
        "text_config",
        "vision_config",
        "audio_config",
        "boi_token_id",
        "eoi_token_id",
        "image_token_id",
        "video_token_id",
        "boa_token_id",
        "eoa_token_index",
        "audio_token_id",
        "initializer_range",
        "tie_word_embeddings",
    }
)
#: What an image-text checkpoint holds beside its language model (``model.language_model.*``).
TOWERS = ("model.vision_tower.", "model.audio_tower.", "model.embed_vision.", "model.embed_audio.")
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
#: What a config must compute to be written as Gemma 4 (beside ``check_exportable``'s).
NEEDS: dict[str, Any] = dict(
    scale_embeddings=True,
) | {
    "attention.qk_norm": True,
    "attention.qk_norm_scope": "head",
    "attention.query_pre_attn_scalar": 1.0,
    "attention.logit_softcap": None,
    "norm.position": "sandwich",
    "norm.plus_one": False,
    "mlp.activation": "geglu",
    "gemma4.value_norm": True,
    "gemma4.layer_scale": True,
}
#: What Gemma 4's MoE block computes (a config with experts must have these ``moe`` section fields
#: to be written; the last three are Gemma 4's own, which make it save as gemma4_text).
MOE_NEEDS: dict[str, Any] = dict(
    router="softmax",
    router_norm_topk=True,
    num_shared_experts=0,
    layer_step=1,
    first_dense=0,
    capacity_factor=None,
    router_logit_bias=False,
    router_scale=1.0,
    router_groups=1,
    beside_mlp=True,
    router_input_norm=True,
    router_expert_scale=True,
)
#: The switches only Gemma 4 computes: a config with any of them saves as gemma4_text.
OWN = (
    *(f"gemma4.{name}" for name in FLAT_GEMMA4_KEYS),
    "moe.beside_mlp",
    "moe.router_input_norm",
    "moe.router_expert_scale",
)


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
    act = get["hidden_activation"]
    if act not in TANH_GELU:
        raise ValueError(
            f"config.json hidden_activation must be one of {TANH_GELU} (GeGLU with the tanh "
            f"GELU); got {act!r}"
        )
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
        router="softmax",
        router_norm_topk=True,
        router_aux_loss=0.0,
        capacity_factor=None,
        beside_mlp=True,
        router_input_norm=True,
        router_expert_scale=True,
    )
    return dict(moe=moe)


def is_gemma4(config: LlamaConfig, model_type: str | None) -> bool:
    """Whether ``config`` saves as gemma4_text: asked for, or it has a switch only Gemma 4
    computes (``OWN``; another type asked for is then refused, naming them)."""
    default = LlamaConfig()
    own = [n for n in OWN if setting_value(config, n) != setting_value(default, n)]
    if model_type not in (None, GEMMA4) and own:
        raise ValueError(
            f"model_type {model_type!r} cannot express {', '.join(own)} (Gemma 4's switches); "
            f"save as model_type={GEMMA4!r}, or change the config"
        )
    return model_type == GEMMA4 or bool(own)


def gemma4_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as gemma4_text.

    Raises
    ------
    ValueError
        ``config`` computes something Gemma 4 cannot express (every such field named).
    """
    c = config
    check_exportable(c)
    g = c.gemma4
    wrong = mismatches(c, NEEDS)
    if c.moe.num_experts:
        wrong |= mismatches(c, MOE_NEEDS, "moe")
    if g.kv_shared_mlp_dim not in (None, c.mlp.dim, 2 * (c.mlp.dim or 0)):
        wrong["gemma4.kv_shared_mlp_dim"] = (g.kv_shared_mlp_dim, f"None or {2 * (c.mlp.dim or 0)}")
    if g.global_kv_heads not in (None, c.num_kv_heads) and not g.global_values_from_keys:
        wrong["gemma4.global_values_from_keys"] = (False, True)  # transformers reads them only then
    refuse_mismatches(wrong, f"model_type {GEMMA4!r} cannot express this model")
    assert c.head_dim is not None and c.mlp.dim is not None
    types = layer_types(c)
    if types[-1] != "full_attention":
        raise ValueError(
            "model_type 'gemma4_text' makes its last layer global; got attention.window_pattern "
            f"{list(c.attention.window_pattern or ('local',))} with a window on the last layer"
        )
    full: dict[str, Any] = {
        "rope_type": "proportional",
        "partial_rotary_factor": g.global_rope_proportion,
        "rope_theta": c.position.rope_theta,
    }
    local_theta = c.position.rope_local_theta or c.position.rope_theta
    local = {"rope_type": "default", "rope_theta": local_theta}
    out = {
        "architectures": [ARCHITECTURE],
        "model_type": GEMMA4,
        **common_to_hf(c),
        "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": False,
        "final_logit_softcapping": c.final_logit_softcap,
        "sliding_window": c.attention.sliding_window or c.max_seq_len,
        "layer_types": types,
        "rope_parameters": {"full_attention": full, "sliding_attention": local},
        "use_bidirectional_attention": None,
        "global_head_dim": g.global_head_dim or c.head_dim,
        "attention_k_eq_v": g.global_values_from_keys,
        "num_kv_shared_layers": g.kv_shared_layers,
        "use_double_wide_mlp": g.kv_shared_mlp_dim == 2 * c.mlp.dim,
        "hidden_size_per_layer_input": g.per_layer_input_dim,
        "vocab_size_per_layer_input": g.per_layer_vocab_size or c.vocab_size,
        "enable_moe_block": bool(c.moe.num_experts),
    }
    if c.moe.num_experts:
        out |= {
            "num_experts": c.moe.num_experts,
            "top_k_experts": c.moe.experts_per_token,
            "moe_intermediate_size": expert_mlp_dim(c),
        }
    del out["rope_theta"]
    if g.global_values_from_keys:
        out["num_global_key_value_heads"] = g.global_kv_heads or c.num_kv_heads
    return out


def gemma4_mapping(c: LlamaConfig) -> HFMapping:
    """The HF ↔ tjx correspondence of a Gemma 4 ``c`` (see ``HFMapping``): each layer at its
    own geometry (`layer_shape`), the PLE tensors and the layer scalars."""
    assert c.head_dim is not None and c.mlp.dim is not None
    d, h, v, p = c.d_model, c.num_heads, c.vocab_size, c.gemma4.per_layer_input_dim
    tables = Tables()
    same, linear = tables.same, tables.linear
    same("model.embed_tokens.weight", "embed.embedding", (v, d))
    reads_other: set[str] = set()
    for i in range(c.num_layers):
        shape = layer_shape(c, i)
        hd, hk, m = shape.head_dim, shape.kv_heads, shape.mlp_dim
        pre, t = f"model.layers.{i}.", f"stack.layers.{i}."
        linear(pre + "self_attn.q_proj", t + "attn.query", (d,), (h, hd))
        linear(pre + "self_attn.o_proj", t + "attn.out", (h, hd), (d,))
        same(pre + "self_attn.q_norm.weight", t + "attn.q_norm.scale", (hd,))
        if shape.kv_source is None:
            linear(pre + "self_attn.k_proj", t + "attn.key", (d,), (hk, hd))
            same(pre + "self_attn.k_norm.weight", t + "attn.k_norm.scale", (hd,))
            if not shape.values_from_keys:
                linear(pre + "self_attn.v_proj", t + "attn.value", (d,), (hk, hd))
        else:  # transformers skips these names in a checkpoint (its shared layers have none)
            reads_other |= {pre + f"self_attn.{n}." for n in ("k_proj", "v_proj", "k_norm")}
        linear(pre + "mlp.gate_proj", t + "mlp.fc_gate", (d,), (m,))
        linear(pre + "mlp.up_proj", t + "mlp.fc_in", (d,), (m,))
        linear(pre + "mlp.down_proj", t + "mlp.fc_out", (m,), (d,))
        for hf_norm, tjx_norm in (
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "attn_post_norm"),
            ("pre_feedforward_layernorm", "mlp_norm"),
            ("post_feedforward_layernorm", "mlp_post_norm"),
        ):
            same(f"{pre}{hf_norm}.weight", f"{t}{tjx_norm}.scale", (d,))
        if c.moe.num_experts:
            _moe_tensors(tables, c, pre, t)
        if p:
            linear(pre + "per_layer_input_gate", t + "per_layer.gate", (d,), (p,))
            linear(pre + "per_layer_projection", t + "per_layer.proj", (p,), (d,))
            same(pre + "post_per_layer_input_norm.weight", t + "per_layer.norm.scale", (d,))
        same(pre + "layer_scalar", t + "scale", (1,))
    same("model.norm.weight", "final_norm.scale", (d,))
    if p:
        rows, width = c.gemma4.per_layer_vocab_size or v, c.num_layers * p
        same("model.embed_tokens_per_layer.weight", "per_layer.table.embedding", (rows, width))
        linear("model.per_layer_model_projection", "per_layer.proj", (d,), (width,))
        same("model.per_layer_projection_norm.weight", "per_layer.norm.scale", (p,))
    if not c.tie_embeddings:
        linear("lm_head", "head", (d,), (v,))

    def ignored(name: str) -> bool:
        # RoPE buffers; a tied head saved as a copy; a shared layer's unused key/value tensors.
        return (
            "rotary_emb." in name
            or (c.tie_embeddings and name == "lm_head.weight")
            or any(name.startswith(prefix) for prefix in reads_other)
        )

    return tables.mapping(ignored)


def _gate_up(name: str, half: int, part: int) -> Convert:
    """One half of HF's fused ``experts.gate_up_proj`` ``[E, 2f, d]`` (gate rows first) as a tjx
    ``[E, d, f]`` kernel."""
    return lambda read: read(name)[:, part * half : (part + 1) * half].transpose(0, 2, 1)


def _fused_gate_up(gate: str, up: str) -> Convert:
    """tjx's gate and up ``[E, d, f]`` kernels as HF's ``[E, 2f, d]`` ``gate_up_proj``."""
    return lambda read: np.concatenate(
        [read(gate).transpose(0, 2, 1), read(up).transpose(0, 2, 1)], axis=1
    )


def _transposed_experts(name: str) -> Convert:
    """``[E, a, b]`` ↔ ``[E, b, a]`` (HF's ``down_proj`` ``[E, d, f]``, tjx's ``[E, f, d]``)."""
    return lambda read: read(name).transpose(0, 2, 1)


def _moe_tensors(tables: Tables, c: LlamaConfig, pre: str, t: str) -> None:
    """Layer ``pre``'s (tjx ``t``'s) MoE block beside its MLP: the router (its projection,
    input scale and per-expert scale), the fused experts and the block's three extra norms."""
    d, e, f = c.d_model, c.moe.num_experts, expert_mlp_dim(c)
    tables.linear(pre + "router.proj", t + "moe.router", (d,), (e,))
    tables.same(pre + "router.scale", t + "moe.router.input_scale", (d,))
    tables.same(pre + "router.per_expert_scale", t + "moe.router.expert_scale", (e,))
    gate_up, down = pre + "experts.gate_up_proj", pre + "experts.down_proj"
    gate, up, out = (f"{t}moe.experts.{n}.kernel" for n in ("fc_gate", "fc_in", "fc_out"))
    tables.shapes[gate_up] = (e, 2 * f, d)
    tables.to_tjx[gate] = _gate_up(gate_up, f, 0)
    tables.to_tjx[up] = _gate_up(gate_up, f, 1)
    tables.to_hf[gate_up] = _fused_gate_up(gate, up)
    tables.shapes[down] = (e, d, f)
    tables.to_tjx[out] = _transposed_experts(down)
    tables.to_hf[down] = _transposed_experts(out)
    for hf_norm, tjx_norm in (
        ("post_feedforward_layernorm_1", "mlp_mid_norm"),
        ("pre_feedforward_layernorm_2", "moe_norm"),
        ("post_feedforward_layernorm_2", "moe_post_norm"),
    ):
        tables.same(f"{pre}{hf_norm}.weight", f"{t}{tjx_norm}.scale", (d,))


def gemma4_image_text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The text model's ``config.json`` dict of a Gemma 4 image-text ``config.json``
    (`tjx.nn.hf.image_text.text_config`; tied unless it says otherwise)."""
    return text_config(
        hf, image_text=IMAGE_TEXT, text=GEMMA4, keys=IMAGE_TEXT_KEYS, tied=True, spec=SPEC
    )


def skip_towers(base: Callable[[str], bool]) -> Callable[[str], bool]:
    """``base``'s ignored names, and the image-text model's vision and audio towers and their
    embedders (`TOWERS`), said in one line when a checkpoint holds them (transformers' causal LM
    does not read them either)."""
    what = (
        "vision and audio towers (model.vision_tower.*, model.audio_tower.*, "
        "model.embed_vision/embed_audio.*): tjx loads the text model"
    )
    return skip_beside(base, {TOWERS: what})
