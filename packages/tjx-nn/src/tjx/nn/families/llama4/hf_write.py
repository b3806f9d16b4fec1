"""tjx config → config.json for Llama 4 (``llama4_text``; what maps to what:
:mod:`tjx.nn.families.llama4.hf`): which configs save as Llama 4, and the dict they save as."""

from __future__ import annotations

from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.families.llama4.hf import ARCHITECTURE, LLAMA4, MOE_NEEDS, NEEDS
from tjx.nn.families.llama4.hf_read import SPEC
from tjx.nn.hf.family_base import common_to_hf, mismatches, refuse_mismatches
from tjx.nn.moe.config import expert_mlp_dim, moe_layers, shared_mlp_dim


def is_llama4(config: LlamaConfig, model_type: str | None) -> bool:
    """Whether ``config`` saves as llama4_text: asked for, or it has a switch only Llama 4
    computes (chunks, NoPE layers, the weightless q/k norm, input-scaled experts)."""
    if model_type is not None:
        return model_type == LLAMA4
    c = config
    return bool(
        c.attention.chunk or c.llama4.global_nope or c.qk_l2_norm or c.moe.router_scales_input
    )


def llama4_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as llama4_text.

    Raises
    ------
    ValueError
        ``config`` computes something Llama 4 cannot express (every such field named).
    """
    c = config
    what = f"model_type {LLAMA4!r} cannot express this model"
    refuse_mismatches(mismatches(c, NEEDS), what)
    if c.position.rope_scaling is not None and c.position.rope_scaling.type != "llama3":
        refuse_mismatches(
            {"position.rope_scaling": (c.position.rope_scaling.type, "llama3 or None")}, what
        )
    kinds = moe_layers(c)
    if c.moe.num_experts:
        refuse_mismatches(mismatches(c, MOE_NEEDS, "moe"), what)
        if shared_mlp_dim(c) != expert_mlp_dim(c):
            refuse_mismatches(
                {"moe.shared_expert_mlp_dim": (shared_mlp_dim(c), expert_mlp_dim(c))}, what
            )
    locals_ = c.layer_locals()
    rope = [on or not c.llama4.global_nope for on in locals_]
    if c.attention.chunk is not None and any(r != on for r, on in zip(rope, locals_, strict=True)):
        # transformers chunks exactly the RoPE layers: a global layer must be a NoPE one.
        refuse_mismatches({"llama4.global_nope": (c.llama4.global_nope, True)}, what)
    if c.llama4.global_nope and c.attention.chunk is None:
        # tjx reads NoPE layers only beside chunked RoPE ones: its import would refuse the file.
        refuse_mismatches({"attention.chunk": (None, "a chunk size beside NoPE layers")}, what)
    rope_params: dict[str, Any] = {"rope_type": "default", "rope_theta": c.position.rope_theta}
    if c.position.rope_scaling is not None:
        fields = c.position.rope_scaling.as_dict()
        del fields["type"]
        rope_params = {"rope_type": "llama3", "rope_theta": c.position.rope_theta, **fields}
    floor = c.llama4.nope_temperature_floor
    return {
        "architectures": [ARCHITECTURE],
        "model_type": LLAMA4,
        **common_to_hf(c, rope_theta=False),
        "intermediate_size": expert_mlp_dim(c) if c.moe.num_experts else c.mlp.dim,
        "intermediate_size_mlp": c.mlp.dim,
        "hidden_act": "silu",
        "rope_parameters": rope_params,
        "attention_bias": False,
        "num_local_experts": c.moe.num_experts or 1,
        "num_experts_per_tok": c.moe.experts_per_token if c.moe.num_experts else 1,
        "moe_layers": [i for i, m in enumerate(kinds) if m],
        "interleave_moe_layer_step": c.moe.layer_step,
        "router_aux_loss_coef": c.moe.router_aux_loss if c.moe.num_experts else 0.001,
        "router_jitter_noise": 0.0,
        "use_qk_norm": c.qk_l2_norm,
        "no_rope_layers": [int(r) for r in rope],
        "attention_chunk_size": c.attention.chunk,
        "attn_temperature_tuning": floor is not None,
        "floor_scale": _number(floor if floor is not None else SPEC.keys["floor_scale"].default),
        "attn_scale": c.llama4.nope_temperature_scale,
    }


def _number(x: float) -> int | float:
    """An integral float as an int (transformers' ``floor_scale`` is typed int)."""
    return int(x) if float(x).is_integer() else x
