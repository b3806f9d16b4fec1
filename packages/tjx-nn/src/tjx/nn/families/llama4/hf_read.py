"""config.json → tjx config for Llama 4 (``llama4_text``; what maps to what:
:mod:`tjx.nn.families.llama4.hf`).

Refused in one line naming the key: ``attention_bias`` true, an activation other than silu, a
RoPE scaling other than llama3's, NoPE layers without ``attention_chunk_size`` (tjx's NoPE layers
are the global ones of a chunked pattern), a ``layer_types`` that does not chunk exactly the RoPE
layers, ``moe_layers`` that no step and first layer give, unknown keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig, make_config
from tjx.nn.families.llama4.hf import LLAMA4, MOE_NEEDS
from tjx.nn.hf.config import BASE_KEYS, HARMLESS, check_known, rope_from_hf
from tjx.nn.hf.family_base import shortest_pattern
from tjx.nn.hf.keys import BASE, flag, int_list, layer_list, nonneg, positive, size, text
from tjx.nn.moe.config import MoEConfig

#: Llama 4's keys beyond ``config.BASE_KEYS``.
KEYS = frozenset(
    {
        "hidden_act",
        "intermediate_size_mlp",
        "num_local_experts",
        "num_experts_per_tok",
        "moe_layers",
        "interleave_moe_layer_step",
        "use_qk_norm",
        "no_rope_layers",
        "no_rope_layer_interval",
        "attention_chunk_size",
        "layer_types",
        "attn_temperature_tuning",
        "floor_scale",
        "attn_scale",
        "router_aux_loss_coef",
        # transformers' Llama 4 router never reads it (nor does its loss), so tjx need not.
        "router_jitter_noise",
        "output_router_logits",  # what a forward returns, not what it computes
    }
)
#: The keys Llama 4's import reads (`keys.Spec`), with transformers 5.24's ``Llama4TextConfig``
#: defaults (Scout's); ``head_dim`` null is hidden_size // num_attention_heads (its
#: ``__post_init__``), ``moe_layers`` and ``no_rope_layers`` null or left out follow the step and
#: the interval.
SPEC = BASE.but(
    "Llama4TextConfig",
    hidden_act=text("silu"),
    intermediate_size_mlp=size(16384),
    num_key_value_heads=size(8, null=None),
    head_dim=size(128, null=None),
    max_position_embeddings=size(4096 * 32),
    rms_norm_eps=positive(1e-5),
    num_experts_per_tok=size(1),
    num_local_experts=size(16),
    moe_layers=int_list(None),
    interleave_moe_layer_step=size(1),
    use_qk_norm=flag(True),
    router_aux_loss_coef=nonneg(0.001),
    router_jitter_noise=nonneg(0.0),
    no_rope_layers=int_list(None),
    no_rope_layer_interval=size(4),
    attention_chunk_size=size(8192, null=None),
    layer_types=layer_list(("chunked_attention", "full_attention")),
    attn_temperature_tuning=flag(True),
    floor_scale=positive(8192),  # an int in transformers; tjx writes a float if need be
    attn_scale=positive(0.1),
    rules=(("num_experts_per_tok", "<=", "num_local_experts"),),
)
#: Llama 4's RoPE base where a config.json names none (``Llama4TextConfig.default_theta``).
LLAMA4_THETA = 500000.0


def _rope_layers(get: Mapping[str, Any], layers: int) -> list[bool]:
    """Which layers RoPE rotates, as transformers reads ``no_rope_layers`` (an empty or absent
    list: a NoPE layer every ``no_rope_layer_interval``)."""
    given = get.get("no_rope_layers")
    if not given:
        every = int(get["no_rope_layer_interval"])
        return [(i + 1) % every != 0 for i in range(layers)]
    if len(given) < layers or not set(given) <= {0, 1}:
        raise ValueError(
            f"config.json no_rope_layers must list at least {layers} of 0 (NoPE) and 1 (RoPE); "
            f"got {given!r}"
        )
    return [bool(r) for r in given[:layers]]


def _moe_placement(get: Mapping[str, Any], layers: int) -> tuple[int, int] | None:
    """(``moe.layer_step``, ``moe.first_dense``) giving ``moe_layers`` (default: every
    ``interleave_moe_layer_step``-th layer), None for none."""
    step = int(get["interleave_moe_layer_step"])
    given = get.get("moe_layers")
    if given is None:
        return (step, 0) if step <= layers else None
    if not given:
        return None
    want = sorted(int(i) for i in given)
    for s in range(1, layers + 1):
        for first in range(layers):
            if [i for i in range(layers) if i >= first and (i + 1) % s == 0] == want:
                return s, first
    raise ValueError(
        f"config.json moe_layers {list(given)} is not supported: tjx's MoE layers are every k-th "
        "from some layer on (interleave_moe_layer_step, moe_first_dense)"
    )


def llama4_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` from a llama4_text ``config.json`` dict (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown key, or a value tjx does not compute as transformers does, named.
    """
    check_known(hf, LLAMA4, BASE_KEYS | KEYS | HARMLESS, custom_code="auto_map" in hf)
    get = SPEC.read(hf)
    if get["attention_bias"]:
        raise ValueError(f"config.json attention_bias true is not supported for {LLAMA4}")
    if get["hidden_act"] != "silu":
        raise ValueError(
            f"config.json hidden_act must be 'silu' (SwiGLU); got {get['hidden_act']!r}"
        )
    layers, heads = get["num_hidden_layers"], get["num_attention_heads"]
    max_len = get["max_position_embeddings"]
    theta, scaling = rope_from_hf(_with_theta(get), max_len)
    if scaling is not None and scaling.type != "llama3":
        raise ValueError(
            f"config.json rope_scaling of type {scaling.type!r} is not supported for {LLAMA4} "
            "(its checkpoints use llama3's)"
        )
    fields: dict[str, Any] = (
        dict(
            vocab_size=get["vocab_size"],
            max_seq_len=max_len,
            d_model=get["hidden_size"],
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=get["num_key_value_heads"] or heads,
            # Left out: 128; null: hidden_size // heads (transformers' __post_init__).
            head_dim=get["head_dim"] or get["hidden_size"] // heads,
            tie_embeddings=get["tie_word_embeddings"],
            **{"attention.dropout": float(get["attention_dropout"])},
            qk_l2_norm=get["use_qk_norm"],
        )
        | {"position.rope_theta": theta, "position.rope_scaling": scaling}
        | {"norm.eps": float(get["rms_norm_eps"])}
        | {"mlp.dim": get["intermediate_size_mlp"], "init.std": float(get["initializer_range"])}
    )
    fields |= _attention_layers(get, layers)
    placement = _moe_placement(get, layers)
    if placement is not None:
        width = get["intermediate_size"]
        fields["moe"] = MoEConfig(
            num_experts=get["num_local_experts"],
            experts_per_token=get["num_experts_per_tok"],
            expert_mlp_dim=width,
            shared_expert_mlp_dim=width,
            layer_step=placement[0],
            first_dense=placement[1],
            router_aux_loss=float(get["router_aux_loss_coef"]),
            **MOE_NEEDS,  # the router, its input scaling, one ungated shared expert
        )
    return make_config(LlamaConfig, {**fields, **overrides})


def _with_theta(hf: Mapping[str, Any]) -> dict[str, Any]:
    """``hf`` with Llama 4's RoPE base (500000) where neither ``rope_theta`` nor
    ``rope_parameters`` names one (`config`'s reading defaults to 10000)."""
    out = dict(hf)
    if out.get("rope_theta") is None:
        out.pop("rope_theta", None)
        if "rope_theta" not in (out.get("rope_parameters") or {}):
            out["rope_theta"] = LLAMA4_THETA
    return out


def _attention_layers(get: Mapping[str, Any], layers: int) -> dict[str, Any]:
    """``attention_chunk``, ``window_pattern``, ``global_nope`` and the NoPE temperature of the
    RoPE/NoPE layers and chunk transformers reads."""
    rope = _rope_layers(get, layers)
    chunk = get.get("attention_chunk_size")
    want = ["chunked_attention" if r and chunk is not None else "full_attention" for r in rope]
    types = get.get("layer_types")
    if types is not None and list(types) != want:
        raise ValueError(
            f"config.json layer_types {list(types)} is not supported: tjx chunks exactly the "
            f"RoPE layers (no_rope_layers), as transformers' default {want}"
        )
    nope = not all(rope)
    if chunk is None:
        if nope:
            raise ValueError(
                "config.json attention_chunk_size null with NoPE layers (no_rope_layers) is not "
                "supported: tjx's NoPE layers are the global ones beside chunked RoPE layers"
            )
        return {"attention.chunk": None}
    out: dict[str, Any] = {"attention.chunk": int(chunk)}
    if not nope:
        return out
    kinds = ["local" if r else "global" for r in rope]
    out |= {"attention.window_pattern": shortest_pattern(kinds), "llama4.global_nope": True}
    if get["attn_temperature_tuning"]:
        out |= dict(
            **{"llama4.nope_temperature_floor": float(get["floor_scale"])},
            **{"llama4.nope_temperature_scale": float(get["attn_scale"])},
        )
    return out
