"""Hugging Face Qwen3.5-MoE text (``Qwen3_5MoeForCausalLM``, ``qwen3_5_moe_text``) ↔ tjx ``Llama``
with delta layers and MoE layers.

transformers 5.24 builds it from Qwen3.5's delta layers (four input projections, as
``qwen3_5_text`` stores them) and Qwen3-Next's attention, norms and sparse block:

=====================================  ========================================================
config.json / tensor                   tjx
=====================================  ========================================================
``layer_types``, ``linear_*``,         Qwen3.5's (`tjx.nn.hf.qwen3_5.hybrid_fields`)
``rope_parameters``, q/k norms, the
gated ``q_proj``, ``linear_attn.*``
``num_experts``,                       softmax top-k, always renormalised (transformers'
``num_experts_per_tok``,               ``Qwen3_5MoeTopKRouter``); ``expert_mlp_dim``; one
``moe_intermediate_size``,             shared expert of ``shared_expert_intermediate_size``
``shared_expert_intermediate_size``    behind a sigmoid gate; every layer sparse
``mlp.gate``, ``mlp.experts.<e>.*``,   Qwen2-MoE's tensors, the names transformers saves
``mlp.shared_expert(_gate)``           (`tjx.nn.hf.llama.llama_mapping`)
``mlp.experts.gate_up_proj``           the published folders' experts, fused per layer
``[E, 2f, d]``, ``down_proj``          (`fused_experts`: each expert's gate rows, then its up
``[E, d, f]``                          rows); read as they come, written one per expert
=====================================  ========================================================

transformers' config has no dense layers and no router switch: ``decoder_sparse_step``,
``mlp_only_layers`` and ``norm_topk_prob`` (Qwen3-Next's keys, which some published configs
carry) are read only at what transformers computes (1, ``[]``, true), and refused by name
otherwise (transformers would drop them and build every layer sparse, renormalised). The
published configs' ``attn_output_gate`` and ``mamba_ssm_dtype`` are read as Qwen3.5's
(`tjx.nn.hf.qwen3_5`): they change nothing transformers computes.
The multi-token-prediction module (``mtp.*``) is skipped in one line, as transformers skips it,
unless asked for (``mtp.depths=1``: Qwen3.5's, `tjx.nn.hf.mtp_tensors.qwen_mtp_mapping`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from tjx.nn.configs import LlamaConfig, make_config
from tjx.nn.hf.family_base import mismatches, refuse_mismatches
from tjx.nn.hf.keys import ABSENT, flag, nonneg, size
from tjx.nn.hf.llama import llama_mapping
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.mtp_tensors import qwen_mtp_mapping
from tjx.nn.hf.qwen3_5 import KEYS as QWEN3_5_KEYS
from tjx.nn.hf.qwen3_5 import NO_OP as QWEN3_5_NO_OP
from tjx.nn.hf.qwen3_5 import SPEC as QWEN3_5_SPEC
from tjx.nn.hf.qwen3_5 import (
    hybrid_fields,
    hybrid_mapping,
    hybrid_to_hf,
    mtp_fields,
    refuse_no_ops,
)
from tjx.nn.hf.qwen3_next import MOE_NEEDS as QWEN3_NEXT_MOE_NEEDS
from tjx.nn.hf.qwen3_next import NEEDS as QWEN3_NEXT_NEEDS
from tjx.nn.hf.qwen3_next import SPARSE_KEYS
from tjx.nn.hf.tables import Tables
from tjx.nn.moe.config import MoEConfig, expert_mlp_dim, shared_mlp_dim

QWEN3_5_MOE = "qwen3_5_moe_text"
ARCHITECTURE = "Qwen3_5MoeForCausalLM"
#: The keys read only at the value transformers computes with (it has no other): key → value.
NO_OP = QWEN3_5_NO_OP | {"decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True}
#: Qwen3.5-MoE's keys beyond ``family_base.BASE_KEYS``: Qwen3.5's and the sparse block's
#: (Qwen3-Next's).
KEYS = QWEN3_5_KEYS | set(NO_OP) | SPARSE_KEYS
#: The keys Qwen3.5-MoE's import reads (`keys.Spec`), with transformers 5.24's
#: ``Qwen3_5MoeTextConfig`` defaults (35B-A3B's).
SPEC = QWEN3_5_SPEC.but(
    "Qwen3_5MoeTextConfig",
    num_key_value_heads=size(2),
    intermediate_size=None,  # no dense MLP: transformers' config has no such attribute
    num_experts=size(256),
    num_experts_per_tok=size(8),
    moe_intermediate_size=size(512),
    shared_expert_intermediate_size=size(512),
    router_aux_loss_coef=nonneg(0.001),
    decoder_sparse_step=size(ABSENT),
    norm_topk_prob=flag(ABSENT),
    rules=(("num_experts_per_tok", "<=", "num_experts"),),
)
#: What a config must have to be written as Qwen3.5-MoE: Qwen3.5's decoder with every layer
#: sparse, Qwen2-MoE's renormalised router and gated shared expert.
NEEDS = {k: v for k, v in QWEN3_NEXT_NEEDS.items() if k != "mtp.depths"}
MOE_NEEDS: dict[str, Any] = QWEN3_NEXT_MOE_NEEDS | dict(
    router_norm_topk=True, layer_step=1, first_dense=0
)


def qwen3_5_moe_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` with delta and MoE layers from a qwen3_5_moe_text ``config.json`` dict
    (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown key, a Qwen3-Next key at a value transformers' Qwen3.5-MoE does not compute,
        or a value tjx does not compute as transformers does, named.
    """
    hf = SPEC.read(hf)
    why = "every layer is sparse, its top-k renormalised, its attention output gated"
    refuse_no_ops(hf, NO_OP, QWEN3_5_MOE, why)
    # Every layer is sparse: the dense width (``mlp.dim``, which no layer uses) is the experts'.
    # A config.json that names ``intermediate_size`` (transformers drops it) changes nothing.
    dense = {"intermediate_size": hf["moe_intermediate_size"]}
    fields = hybrid_fields({**hf, **dense}, QWEN3_5_MOE, KEYS)
    fields["moe"] = MoEConfig(
        num_experts=hf["num_experts"],
        experts_per_token=hf["num_experts_per_tok"],
        expert_mlp_dim=hf["moe_intermediate_size"],
        router_aux_loss=float(hf["router_aux_loss_coef"]),
        num_shared_experts=1,
        shared_expert_mlp_dim=hf["shared_expert_intermediate_size"],
        shared_expert_gate=True,
    )  # the rest: MoEConfig's defaults, which are MOE_NEEDS
    fields |= overrides
    return make_config(LlamaConfig, fields | mtp_fields(hf, fields))


def is_qwen3_5_moe(config: LlamaConfig, model_type: str | None) -> bool:
    """Whether ``config`` saves as qwen3_5_moe_text: only when asked. A Qwen hybrid with MoE
    layers computes the same as Qwen3-Next's, which stays the default (`tjx.nn.hf.qwen3_next`)."""
    del config
    return model_type == QWEN3_5_MOE


def qwen3_5_moe_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as qwen3_5_moe_text.

    Raises
    ------
    ValueError
        ``config`` computes something Qwen3.5-MoE cannot express (every such field named).
    """
    c = config
    what = f"model_type {QWEN3_5_MOE!r} cannot express this model"
    if not c.moe.num_experts:
        refuse_mismatches({"moe.num_experts": (0, "> 0: every layer is sparse")}, what)
    refuse_mismatches(mismatches(c, MOE_NEEDS, "moe"), what)
    out = hybrid_to_hf(c, QWEN3_5_MOE, ARCHITECTURE, NEEDS)
    del out["intermediate_size"]  # transformers' config has none (no dense layer)
    return out | {
        "num_experts": c.moe.num_experts,
        "num_experts_per_tok": c.moe.experts_per_token,
        "moe_intermediate_size": expert_mlp_dim(c),
        "shared_expert_intermediate_size": shared_mlp_dim(c),
        "router_aux_loss_coef": c.moe.router_aux_loss,
    }


def qwen3_5_moe_mapping(c: LlamaConfig) -> HFMapping:
    """The HF ↔ tjx correspondence of a Qwen3.5-MoE ``c``: Llama's with Qwen2-MoE's sparse
    blocks, the gated ``q_proj`` and Qwen3.5's delta layers (four input projections)."""
    return qwen_mtp_mapping(
        c, lambda c: hybrid_mapping(c, llama_mapping(c, "qwen2_moe"), fused=False)
    )


#: The key `folder_layout` adds to a folder's config.json dict when its experts come fused (the
#: family's `read` takes it off before the config is read).
FUSED = "tjx:fused_experts"


def folder_layout(hf: Mapping[str, Any], names: Collection[str]) -> dict[str, Any]:
    """``hf`` marked (`FUSED`) when the folder's tensor ``names`` hold the experts fused per
    layer, as the published folders do (``mlp.experts.gate_up_proj``); transformers saves them
    one per expert, which the mapping reads unmarked."""
    fused = any(n.endswith("mlp.experts.gate_up_proj") for n in names)
    return {**hf, FUSED: True} if fused else dict(hf)


def fused_experts(m: HFMapping, c: LlamaConfig) -> HFMapping:
    """``m`` (a mapping with transformers' per-expert tensors) with each sparse block's experts
    as the published folders store them: ``mlp.experts.gate_up_proj`` ``[E, 2f, d]`` (each
    expert's ``f`` gate rows, then its ``f`` up rows: transformers' ``Qwen3_5MoeExperts``
    chunks them so) and ``mlp.experts.down_proj`` ``[E, d, f]``."""
    e, f = c.moe.num_experts, expert_mlp_dim(c)
    tables = Tables.of(m)
    for first in [n for n in m.shapes if n.endswith("mlp.experts.0.gate_proj.weight")]:
        p = first.removesuffix("experts.0.gate_proj.weight")  # "<layer>.mlp."
        layer = p.removesuffix("mlp.")
        block = (
            "mtp.layers.0.block."
            if layer.startswith("mtp.")
            else layer.replace("model.", "stack.", 1)
        )
        for k in range(e):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                del tables.shapes[f"{p}experts.{k}.{proj}.weight"]
                tables.to_hf.pop(f"{p}experts.{k}.{proj}.weight", None)
        tables.fused_experts(p + "experts.", block + "moe.experts.", e, c.d_model, f)
    return replace(m, shapes=tables.shapes, to_tjx=tables.to_tjx, to_hf=tables.to_hf)
