"""Hugging Face GLM-4.5 MoE (``Glm4MoeForCausalLM``) ↔ tjx ``Llama`` with MoE layers.

GLM-4.5 is the LLaMA decoder (pre-norm RMSNorm, GQA) with DeepSeek-V3's routing on multi-head
attention:

===================================  ==========================================================
config.json                          tjx
===================================  ==========================================================
``partial_rotary_factor`` (in        ``rope_fraction``: RoPE turns each head's first
``rope_parameters`` or at the top;   ``int(head_dim · f)`` dims (rotate-half within them), the
transformers' default 0.5)           rest pass through
``use_qk_norm``                      ``qk_norm`` (one ``head_dim`` RMSNorm scale per q and k)
``attention_bias``                   ``qkv_bias`` (q/k/v only: ``o_proj`` has none)
``n_routed_experts``,                the sigmoid router (``noaux_tc``): the top-k of
``num_experts_per_tok``,             ``sigmoid(logits) + e_score_correction_bias`` within the
``n_group``, ``topk_group``,         best groups (by their two best), weighted by the sigmoid
``norm_topk_prob``,                  scores (renormalised with ``norm_topk_prob``) times
``routed_scaling_factor``            ``moe.router_scale``
``n_shared_experts``,                ``num_shared_experts`` (one MLP of ``n × moe_intermediate_
``moe_intermediate_size``            size``), ``expert_mlp_dim``
``first_k_dense_replace``            ``moe.first_dense`` (those layers' MLP: ``intermediate_
                                     size``)
``num_nextn_predict_layers``         ``mtp.depths``: the multi-token-prediction layers after the
(``num_mtp_layers``)                 last, DeepSeek-V3's layout (`tjx.nn.hf.mtp_tensors`)
===================================  ==========================================================

The tensors are DeepSeek's MoE ones on Llama's attention (``llama``: per-expert
``mlp.experts.<e>.{gate,up,down}_proj``, ``mlp.gate``, ``mlp.shared_experts``), plus the router's
``mlp.gate.e_score_correction_bias`` (tjx's sigmoid router ``bias``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from tjx.nn.configs import LlamaConfig, make_config
from tjx.nn.hf.config import (
    LLAMA,
    OTHER_MOE_OPTIONS,
    llama_common_to_hf,
    llama_fields,
    partial_rotary_factor,
    unsupported,
)
from tjx.nn.hf.family_base import (
    LLAMA_BLOCK,
    deepseek_moe_fields,
    deepseek_moe_to_hf,
    mismatches,
    refuse_mismatches,
)
from tjx.nn.hf.keys import ABSENT, Key, count, flag, positive, size
from tjx.nn.hf.llama import llama_mapping
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.mtp_tensors import mtp_mapping
from tjx.nn.hf.tables import Tables
from tjx.nn.moe.config import MoEConfig, expert_mlp_dim, moe_layers

GLM4_MOE = "glm4_moe"
ARCHITECTURE = "Glm4MoeForCausalLM"
#: GLM-4.5's keys beyond the LLaMA ones (``config.HANDLED``), each mapped or checked here.
KEYS = frozenset(
    {
        "partial_rotary_factor",
        "use_qk_norm",
        "moe_intermediate_size",
        "num_experts_per_tok",
        "n_shared_experts",
        "n_routed_experts",
        "routed_scaling_factor",
        "n_group",
        "topk_group",
        "first_k_dense_replace",
        "norm_topk_prob",
        "num_nextn_predict_layers",
        "num_mtp_layers",
        "output_router_logits",  # what a forward returns, not what it computes
    }
)
#: transformers' ``partial_rotary_factor`` when a GLM-4.5 config names none.
DEFAULT_PARTIAL = 0.5
#: The keys GLM-4.5's import reads (`keys.Spec`), with transformers 5.24's defaults (the
#: multi-token-prediction count, 1 there, is 0 when left out: `deepseek.SPECS`' note).
SPEC = LLAMA.but(
    "Glm4MoeConfig",
    num_key_value_heads=size(8, null=None),
    max_position_embeddings=size(131072),
    rms_norm_eps=positive(1e-5),
    moe_intermediate_size=size(1408),
    num_experts_per_tok=size(8),
    n_shared_experts=count(1, null=0),
    n_routed_experts=size(128),
    routed_scaling_factor=positive(1.0),
    n_group=size(1, null=1),
    topk_group=size(1, null=1),
    first_k_dense_replace=count(1, null=0),
    norm_topk_prob=flag(True),
    use_qk_norm=flag(False),
    partial_rotary_factor=Key("float", ABSENT, above=0, high=1),
    num_nextn_predict_layers=count(ABSENT, null=ABSENT),
    num_mtp_layers=count(ABSENT, null=ABSENT),
    rules=(
        ("num_experts_per_tok", "<=", "n_routed_experts"),
        ("n_group", "divides", "n_routed_experts"),
        ("topk_group", "<=", "n_group"),
    ),
)
#: What a config must have to be written as glm4_moe: field → the value GLM-4.5 computes with
#: (a plain LLaMA block, its per-head q/k norm optional: ``use_qk_norm``).
NEEDS: dict[str, Any] = {k: v for k, v in LLAMA_BLOCK.items() if k != "attention.qk_norm"} | {
    "use_bias": False,
    "attention.sliding_window": None,
    "attention.sinks": False,
}
#: What its ``moe`` section must have: `MoEConfig` field → the value GLM-4.5 computes with.
MOE_NEEDS: dict[str, Any] = OTHER_MOE_OPTIONS | dict(
    router="sigmoid",
    router_logit_bias=False,
    shared_expert_gate=False,
    layer_step=1,
)


_refuse = partial(unsupported, family="glm4_moe")


def mtp_layers(hf: Mapping[str, Any]) -> int:
    """GLM-4.5's multi-token-prediction layers after the causal LM's (``mtp.depths``)."""
    return int(hf.get("num_nextn_predict_layers", hf.get("num_mtp_layers")) or 0)


def glm4_moe_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` from a glm4_moe ``config.json`` dict (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown key, or a value tjx does not compute as transformers does, named.
    """
    hf = SPEC.read(hf)
    rest = {k: v for k, v in hf.items() if k not in ("attention_bias", "partial_rotary_factor")}
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    # transformers reads the factor from the RoPE entry first, then the top level, then 0.5.
    partial = params.pop(
        "partial_rotary_factor",
        scaling.pop("partial_rotary_factor", hf.get("partial_rotary_factor", DEFAULT_PARTIAL)),
    )
    if params:
        rest["rope_parameters"] = params
    if scaling:
        rest["rope_scaling"] = scaling
    if hf.get("scoring_func", "sigmoid") != "sigmoid":  # never in the config class: refused
        raise _refuse("scoring_func", hf["scoring_func"], "GLM-4.5 routes by sigmoid scores")
    fields = llama_fields(rest, GLM4_MOE, handled=KEYS)
    # Always grouped: GLM-4.5's Spec reads a null n_group or topk_group as 1.
    moe = deepseek_moe_fields(hf, router="sigmoid", norm_topk=hf["norm_topk_prob"])
    fields |= (
        dict(
            use_bias=False,
            **{"attention.qkv_bias": hf["attention_bias"]},
            **{"attention.qk_norm": hf["use_qk_norm"]},
            moe=MoEConfig(**moe),
        )
        | {"position.rope_fraction": partial_rotary_factor(partial)}
        | {"mtp.depths": mtp_layers(hf)}
    )
    return make_config(LlamaConfig, {**fields, **overrides})


def is_glm4_moe(config: LlamaConfig, model_type: str | None) -> bool:
    """Whether ``config`` saves as glm4_moe: asked for, or an MoE model with a partial RoPE
    (which no other family tjx writes computes; a full-RoPE one saves as glm4_moe when asked)."""
    if model_type is not None:
        return model_type == GLM4_MOE
    return bool(config.moe.num_experts) and config.position.rope_fraction < 1.0


def glm4_moe_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as glm4_moe.

    Raises
    ------
    ValueError
        ``config`` computes something GLM-4.5 cannot express (every such field named).
    """
    c = config
    wrong = mismatches(c, NEEDS) | mismatches(c, MOE_NEEDS, "moe")
    if not c.moe.num_experts:
        wrong["moe.num_experts"] = (0, "> 0")
    if not c.moe.num_shared_experts:  # transformers' GLM-4.5 always has its shared experts
        wrong["moe.num_shared_experts"] = (0, "> 0")
    shared = c.moe.num_shared_experts * expert_mlp_dim(c)
    if c.moe.shared_expert_mlp_dim not in (None, shared):
        wrong["moe.shared_expert_mlp_dim"] = (c.moe.shared_expert_mlp_dim, f"None or {shared}")
    refuse_mismatches(wrong, "model_type 'glm4_moe' cannot express this model")
    out = llama_common_to_hf(c, "llama")
    scaling = out.pop("rope_scaling", None)
    theta = out.pop("rope_theta")
    rope = {"rope_theta": theta, **(scaling or {"rope_type": "default"})}
    return out | {
        "architectures": [ARCHITECTURE],
        "model_type": GLM4_MOE,
        "rope_parameters": rope | {"partial_rotary_factor": c.position.rope_fraction},
        "attention_bias": c.attention.qkv_bias,
        "use_qk_norm": c.attention.qk_norm,
        **deepseek_moe_to_hf(c),
        "num_nextn_predict_layers": c.mtp.depths,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }


def glm4_moe_mapping(c: LlamaConfig, mtp: int | None = None) -> HFMapping:
    """The HF ↔ tjx correspondence of a GLM-4.5 ``c``: Llama's with DeepSeek's MoE tensors and
    the router's correction bias, with its ``mtp.depths`` multi-token-prediction layers in
    DeepSeek-V3's layout (`tjx.nn.hf.mtp_tensors`); ``mtp``: the checkpoint's
    ``num_nextn_predict_layers`` on load (those past ``mtp.depths`` skipped in one printed line),
    None on export."""
    return mtp_mapping(c, _glm4_moe_layers, mtp, "num_nextn_predict_layers")


def _glm4_moe_layers(c: LlamaConfig) -> HFMapping:
    """`glm4_moe_mapping` of the causal LM's ``c.num_layers`` layers."""
    base = llama_mapping(c, GLM4_MOE)
    tables = Tables.of(base)
    for i, moe in enumerate(moe_layers(c)):
        if moe:
            hf, tjx = f"model.layers.{i}.mlp.gate.e_score_correction_bias", f"stack.layers.{i}."
            tables.same(hf, tjx + "moe.router.bias", (c.moe.num_experts,))
    return tables.mapping(base.ignored)
