"""tjx config → config.json for MiniMax-M2 (``minimax_m2``; what maps to what:
:mod:`tjx.nn.families.minimax_m2.hf`): which configs save as MiniMax-M2, and the dict they save
as."""

from __future__ import annotations

from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.families.minimax_m2.hf import ARCHITECTURE, MINIMAX_M2, MOE_NEEDS, NEEDS
from tjx.nn.hf.config import rope_scaling_to_hf
from tjx.nn.hf.family_base import common_to_hf, mismatches, refuse_mismatches
from tjx.nn.moe.config import expert_mlp_dim


def is_minimax_m2(config: LlamaConfig, model_type: str | None) -> bool:
    """Whether ``config`` saves as minimax_m2: asked for, or MoE layers with q/k norms over the
    whole projection (which no other family tjx writes computes).

    Parameters
    ----------
    config : LlamaConfig
        The model's config.
    model_type : str or None
        The type ``save_hf`` was asked for; None: the config's switches choose.

    Returns
    -------
    bool
    """
    if model_type is not None:
        return model_type == MINIMAX_M2
    c = config
    return (
        bool(c.moe.num_experts)
        and c.attention.qk_norm
        and c.attention.qk_norm_scope == "projection"
    )


def minimax_m2_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as minimax_m2.

    Parameters
    ----------
    config : LlamaConfig
        A config `is_minimax_m2` claims.

    Returns
    -------
    dict
        What transformers' ``MiniMaxM2Config`` reads (with the released folders' ``rotary_dim``,
        which other readers of these folders take the rotated width from).

    Raises
    ------
    ValueError
        ``config`` computes something MiniMax-M2 cannot express (every such field named).
    """
    c = config
    wrong = mismatches(c, NEEDS) | mismatches(c, MOE_NEEDS, "moe")
    if not c.moe.num_experts:
        wrong["moe.num_experts"] = (0, "> 0")
    if c.mtp.depths:
        wrong["mtp.depths"] = (c.mtp.depths, 0)
    refuse_mismatches(wrong, f"model_type {MINIMAX_M2!r} cannot express this model")
    assert c.head_dim is not None
    # Dynamic NTK's original length is max_position_embeddings (common_to_hf writes it so).
    rope: dict[str, Any] = rope_scaling_to_hf(c) or {"rope_type": "default"}
    fraction = c.position.rope_fraction
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MINIMAX_M2,
        **common_to_hf(c, rope_theta=False),
        "intermediate_size": expert_mlp_dim(c),  # the experts' (no dense MLP)
        "hidden_act": "silu",
        "rope_parameters": rope
        | {"rope_theta": c.position.rope_theta, "partial_rotary_factor": fraction},
        "rotary_dim": int(c.head_dim * fraction),
        "num_local_experts": c.moe.num_experts,
        "num_experts_per_tok": c.moe.experts_per_token,
        "router_aux_loss_coef": c.moe.router_aux_loss,
        "router_jitter_noise": 0.0,
    }
