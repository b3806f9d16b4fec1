"""Hugging Face Qwen3-Next (``Qwen3NextForCausalLM``, ``qwen3_next``) ↔ tjx ``Llama`` with delta
layers and MoE layers.

Qwen3-Next's decoder is Qwen3.5's (`qwen3_5`: Gated DeltaNet layers between gated attention ones,
zero-centred norms, partial RoPE) with Qwen2-MoE's sparse block:

=====================================  ========================================================
config.json / tensor                   tjx
=====================================  ========================================================
``linear_attn.in_proj_qkvz``,          ``delta.in_proj_qkv``, ``in_proj_z``, ``in_proj_b``,
``in_proj_ba`` (rows grouped by key    ``in_proj_a`` (`qwen3_5.fused_delta_tensors`): split on
head)                                  load, grouped again on export
``num_experts``,                       softmax top-k (renormalised with ``norm_topk_prob``);
``num_experts_per_tok``,               ``expert_mlp_dim``; one shared expert of
``moe_intermediate_size``,             ``shared_expert_intermediate_size`` behind a sigmoid
``shared_expert_intermediate_size``    gate (``shared_expert_gate``)
``decoder_sparse_step``,               ``moe.layer_step``, ``moe.first_dense`` (the first layers
``mlp_only_layers``                    only); ``num_experts`` 0: every layer dense
``mlp.experts.<e>.*``, ``mlp.gate``,   Qwen2-MoE's tensors (`llama`'s ``experts``)
``mlp.shared_expert(_gate)``
=====================================  ========================================================

Refused in one line naming the key: Qwen3.5's refusals (unknown keys, ``attention_bias`` true,
another activation, a RoPE scaling) and ``mlp_only_layers`` other than the first layers. The
multi-token-prediction module (``mtp.*``) is skipped in one line, as Qwen3.5's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig, make_config
from tjx.nn.hf.config import OTHER_MOE_OPTIONS
from tjx.nn.hf.family_base import mismatches, refuse_mismatches
from tjx.nn.hf.keys import count, flag, int_list, nonneg, size
from tjx.nn.hf.llama import llama_mapping
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.moe import qwen_moe_fields
from tjx.nn.hf.qwen3_5 import KEYS as QWEN3_5_KEYS
from tjx.nn.hf.qwen3_5 import NEEDS as QWEN3_5_NEEDS
from tjx.nn.hf.qwen3_5 import SPEC as QWEN3_5_SPEC
from tjx.nn.hf.qwen3_5 import hybrid_fields, hybrid_mapping, hybrid_to_hf, is_qwen3_5
from tjx.nn.moe.config import MoEConfig, expert_mlp_dim, shared_mlp_dim

QWEN3_NEXT = "qwen3_next"
ARCHITECTURE = "Qwen3NextForCausalLM"
#: The sparse block's keys (Qwen3-Next's and Qwen3.5-MoE's).
SPARSE_KEYS = {
    "num_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "norm_topk_prob",
    "decoder_sparse_step",
    "mlp_only_layers",
    "router_aux_loss_coef",
    "output_router_logits",  # what a forward returns, not what it computes
}
#: Qwen3-Next's keys beyond ``family_base.BASE_KEYS``: Qwen3.5's and the sparse block's.
KEYS = QWEN3_5_KEYS | SPARSE_KEYS
#: The keys Qwen3-Next's import reads (`keys.Spec`): Qwen3.5's and the sparse block's, with
#: transformers 5.24's ``Qwen3NextConfig`` defaults.
SPEC = QWEN3_5_SPEC.but(
    "Qwen3NextConfig",
    num_key_value_heads=size(2),
    num_experts=count(512),
    num_experts_per_tok=size(10),
    moe_intermediate_size=size(512),
    shared_expert_intermediate_size=count(512),
    norm_topk_prob=flag(True),
    decoder_sparse_step=size(1),
    mlp_only_layers=int_list([], null=[]),
    router_aux_loss_coef=nonneg(0.001),
    rules=(("num_experts_per_tok", "<=", "num_experts"),),
)
#: What a config must have to be written as Qwen3-Next: Qwen3.5's decoder, any MoE placement,
#: and (checked beside, when it has experts) Qwen2-MoE's router and gated shared expert.
NEEDS = {k: v for k, v in QWEN3_5_NEEDS.items() if k != "moe.num_experts"} | {"mtp.depths": 0}
MOE_NEEDS: dict[str, Any] = OTHER_MOE_OPTIONS | dict(
    router="softmax",
    router_scale=1.0,
    router_groups=1,
    router_logit_bias=False,
    num_shared_experts=1,
    shared_expert_gate=True,
    capacity_factor=None,
)


def qwen3_next_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` with delta and MoE layers from a qwen3_next ``config.json`` dict
    (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown key, or a value tjx does not compute as transformers does, named.
    """
    if overrides.get("mtp.depths"):
        raise ValueError(
            f"mtp.depths={overrides['mtp.depths']}: tjx does not read Qwen3-Next's "
            "multi-token-prediction module (Qwen3.5's it does); set mtp.depths=0"
        )
    hf = SPEC.read(hf)
    fields = hybrid_fields(hf, QWEN3_NEXT, KEYS)
    experts = hf["num_experts"]
    if experts > 0:
        fields["moe"] = MoEConfig(
            num_experts=experts,
            experts_per_token=hf["num_experts_per_tok"],
            router_aux_loss=float(hf["router_aux_loss_coef"]),
            **qwen_moe_fields(hf, QWEN3_NEXT),
        )  # none: LlamaConfig's default, every layer dense
    return make_config(LlamaConfig, {**fields, **overrides})


def is_qwen3_next(config: LlamaConfig, model_type: str | None) -> bool:
    """Whether ``config`` saves as qwen3_next: asked for, or a Qwen hybrid (delta layers or a
    gated attention output) with MoE layers, which Qwen3.5's text model does not have."""
    if model_type is not None:
        return model_type == QWEN3_NEXT
    return is_qwen3_5(config) and bool(config.moe.num_experts)


def qwen3_next_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as qwen3_next.

    Raises
    ------
    ValueError
        ``config`` computes something Qwen3-Next cannot express (every such field named).
    """
    c = config
    if c.moe.num_experts:
        wrong = mismatches(c, MOE_NEEDS, "moe")
        refuse_mismatches(wrong, f"model_type {QWEN3_NEXT!r} cannot express this model")
    out = hybrid_to_hf(c, QWEN3_NEXT, ARCHITECTURE, NEEDS)
    if not c.moe.num_experts:
        return out | {"num_experts": 0, "mlp_only_layers": []}
    return out | {
        "num_experts": c.moe.num_experts,
        "num_experts_per_tok": c.moe.experts_per_token,
        "moe_intermediate_size": expert_mlp_dim(c),
        "shared_expert_intermediate_size": shared_mlp_dim(c),
        "norm_topk_prob": c.moe.router_norm_topk,
        "decoder_sparse_step": c.moe.layer_step,
        "mlp_only_layers": list(range(c.moe.first_dense)),
        "router_aux_loss_coef": c.moe.router_aux_loss,
    }


def qwen3_next_mapping(c: LlamaConfig) -> HFMapping:
    """The HF ↔ tjx correspondence of a Qwen3-Next ``c``: Llama's with Qwen2-MoE's sparse blocks
    (their tensor names are Qwen3-Next's), the gated ``q_proj`` and the grouped delta layers."""
    base = llama_mapping(c, "qwen2_moe" if c.moe.num_experts else None)
    return hybrid_mapping(c, base, fused=True)
