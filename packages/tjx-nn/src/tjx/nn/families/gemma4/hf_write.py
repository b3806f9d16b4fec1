"""tjx config → config.json for Gemma 4 (``gemma4_text``; what maps to what:
:mod:`tjx.nn.families.gemma4.hf`): which configs save as Gemma 4, and the dict they save as."""

from __future__ import annotations

from typing import Any

from tjx.nn.configs import LlamaConfig, setting_value
from tjx.nn.families.gemma4.hf import ARCHITECTURE, GEMMA4, MOE_NEEDS, NEEDS, OWN
from tjx.nn.hf.family_base import (
    check_exportable,
    common_to_hf,
    layer_types,
    mismatches,
    refuse_mismatches,
)
from tjx.nn.moe.config import expert_mlp_dim


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
    check_exportable(c, own=frozenset(OWN))  # the other families' switches off but Gemma 4's
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
        **common_to_hf(c, rope_theta=False),
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
    if g.global_values_from_keys:
        out["num_global_key_value_heads"] = g.global_kv_heads or c.num_kv_heads
    return out
