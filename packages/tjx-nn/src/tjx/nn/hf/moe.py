"""Hugging Face MoE checkpoints (mixtral, qwen2_moe, qwen3_moe) ↔ tjx ``Llama`` with MoE layers.

Their attention, norms and embeddings are the LLaMA family's (``config.llama_fields``,
``llama``); this module maps what they add:

============  ===============================================  =================================
model_type    config.json                                      tjx config
============  ===============================================  =================================
mixtral       ``num_local_experts``, ``num_experts_per_tok``,  every layer MoE, softmax top-k
              ``intermediate_size`` (an expert's width)        renormalised, no shared experts
qwen2_moe     ``num_experts``, ``moe_intermediate_size``,      one shared expert with a sigmoid
              ``shared_expert_intermediate_size``,             gate, q/k/v biases,
              ``norm_topk_prob``, ``decoder_sparse_step``,     ``moe.layer_step``,
              ``mlp_only_layers`` (``[0, k)`` only)            ``moe.first_dense``
qwen3_moe     as qwen2_moe without the shared expert, with     ``qk_norm``, no biases
              an RMSNorm of each q/k head
============  ===============================================  =================================

``router_aux_loss_coef`` becomes ``moe.router_aux_loss`` (a training setting: note that HF Mixtral's
loss is ``k`` times tjx's). Refused in one line: ``mlp_only_layers`` other than the first
layers, ``router_jitter_noise`` > 0, a qwen2_moe without experts or shared expert, qwen3_moe
attention biases; and on export a model HF cannot express (sigmoid router, shared experts
without a gate, MoE layers other than HF's pattern for the type, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig, make_config
from tjx.nn.hf.config import (
    LLAMA,
    QWEN_WINDOWS,
    WINDOW_KEYS,
    check_llama_shape,
    llama_common_to_hf,
    llama_fields,
    unsupported,
)
from tjx.nn.hf.family_base import LLAMA_SWITCHES, mismatches, refuse_mismatches
from tjx.nn.hf.keys import ABSENT, Spec, count, flag, int_list, nonneg, positive, size
from tjx.nn.moe.config import MoEConfig, expert_mlp_dim, shared_mlp_dim

MOE_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe")
_QWEN_KEYS = frozenset(
    {
        "num_experts",
        "num_local_experts",
        "num_experts_per_tok",
        "moe_intermediate_size",
        "norm_topk_prob",
        "decoder_sparse_step",
        "mlp_only_layers",
        "router_aux_loss_coef",
        "output_router_logits",
        "max_window_layers",
    }
)
KEYS: dict[str, frozenset[str]] = {
    "mixtral": frozenset(
        {
            "num_local_experts",
            "num_experts_per_tok",
            "router_aux_loss_coef",
            "router_jitter_noise",
            "output_router_logits",
        }
    ),
    "qwen2_moe": _QWEN_KEYS | {"shared_expert_intermediate_size", "qkv_bias"},
    "qwen3_moe": _QWEN_KEYS,
}
#: The keys each type's import reads (`keys.Spec`), with transformers 5.24's defaults (Qwen2-MoE
#: writes a window of 0 when it does not slide).
_QWEN_MOE: dict[str, Any] = dict(
    decoder_sparse_step=size(1),
    norm_topk_prob=flag(False),
    router_aux_loss_coef=nonneg(0.001),
    mlp_only_layers=int_list([], null=[]),
    num_local_experts=count(ABSENT),
)
SPECS: dict[str, Spec] = {
    "mixtral": LLAMA.but(
        "MixtralConfig",
        **WINDOW_KEYS,
        num_key_value_heads=size(8, null=None),
        max_position_embeddings=size(4096 * 32),
        rms_norm_eps=positive(1e-5),
        num_local_experts=count(8),
        num_experts_per_tok=size(2),
        router_aux_loss_coef=nonneg(0.001),
        router_jitter_noise=nonneg(0.0, null=0.0),
        rules=(("num_experts_per_tok", "<=", "num_local_experts"),),
    ),
    "qwen2_moe": LLAMA.but(
        "Qwen2MoeConfig",
        **QWEN_WINDOWS | dict(sliding_window=count(4096, null=None)),
        **_QWEN_MOE,
        num_key_value_heads=size(16, null=None),
        max_position_embeddings=size(32768),
        num_experts=count(60),
        num_experts_per_tok=size(4),
        moe_intermediate_size=size(1408),
        shared_expert_intermediate_size=count(5632),
        qkv_bias=flag(True),
        rules=(("num_experts_per_tok", "<=", "num_experts"),),
    ),
    "qwen3_moe": LLAMA.but(
        "Qwen3MoeConfig",
        **QWEN_WINDOWS,
        **_QWEN_MOE,
        num_key_value_heads=size(4, null=None),
        max_position_embeddings=size(32768),
        num_experts=count(128),
        num_experts_per_tok=size(8),
        moe_intermediate_size=size(768),
        rules=(("num_experts_per_tok", "<=", "num_experts"),),
    ),
}
#: HF names of a layer's MoE block: (block, router, expert gate/up/down, shared expert or None).
NAMES: dict[str, tuple[str, str, tuple[str, str, str], str | None]] = {
    "mixtral": ("block_sparse_moe", "gate", ("w1", "w3", "w2"), None),
    "qwen2_moe": ("mlp", "gate", ("gate_proj", "up_proj", "down_proj"), "shared_expert"),
    "qwen3_moe": ("mlp", "gate", ("gate_proj", "up_proj", "down_proj"), None),
    **{  # deepseek's types and GLM-4.5: several shared experts as one MLP, without a gate
        t: ("mlp", "gate", ("gate_proj", "up_proj", "down_proj"), "shared_experts")
        for t in ("deepseek_v2", "deepseek_v3", "glm4_moe")
    },
}


#: The Qwen types whose MoE block adds one shared expert behind a sigmoid gate.
SHARED_GATE_TYPES = ("qwen2_moe", "qwen3_next")


def moe_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` with MoE layers from a mixtral/qwen2_moe/qwen3_moe ``config.json``.

    Raises
    ------
    ValueError
        An unknown key, or an MoE option tjx does not compute the same way, named.
    """
    model_type = str(hf.get("model_type"))
    hf = SPECS[model_type].read(hf)
    fields = llama_fields(hf, model_type, handled=KEYS[model_type])
    experts = hf.get("num_local_experts") or hf.get("num_experts") or 0
    if experts < 1:
        raise unsupported("num_experts", experts, f"a {model_type} without experts (load it dense)")
    moe: dict[str, Any] = dict(
        num_experts=experts,
        experts_per_token=hf["num_experts_per_tok"],
        router_aux_loss=float(hf["router_aux_loss_coef"]),
    )
    if model_type == "mixtral":
        jitter = float(hf["router_jitter_noise"])
        if jitter:
            raise unsupported("router_jitter_noise", jitter, "tjx's router adds no noise")
        moe["expert_mlp_dim"] = None  # intermediate_size (mlp_dim) is an expert's width
    else:
        moe |= qwen_moe_fields(hf, model_type)
    if model_type == "qwen2_moe":
        fields["attention.qkv_bias"] = hf["qkv_bias"]
    if model_type == "qwen3_moe":
        if fields["use_bias"]:
            raise unsupported("attention_bias", True, "tjx's qwen3_moe import has no biases")
        fields["attention.qk_norm"] = True
    return make_config(LlamaConfig, {**fields, "moe": MoEConfig(**moe), **overrides})


def qwen_moe_fields(hf: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """The Qwen MoE types' expert placement, width and shared expert (`MoEConfig` fields of
    qwen2_moe, qwen3_moe and Qwen3-Next), from ``hf`` as the type's `keys.Spec` has read it
    (transformers' defaults filled in).

    Raises
    ------
    ValueError
        ``mlp_only_layers`` other than the first layers, or a shared expert's width below 1
        where the type has one.
    """
    dense = sorted(hf["mlp_only_layers"])
    if dense != list(range(len(dense))):
        raise unsupported(
            "mlp_only_layers", dense, "tjx keeps only the first k layers dense (0..k-1)"
        )
    fields: dict[str, Any] = dict(
        expert_mlp_dim=hf["moe_intermediate_size"],
        router_norm_topk=hf["norm_topk_prob"],
        layer_step=hf["decoder_sparse_step"],
        first_dense=len(dense),
    )
    if model_type in SHARED_GATE_TYPES:
        shared = hf["shared_expert_intermediate_size"]
        if shared < 1:
            raise unsupported("shared_expert_intermediate_size", shared, f"{model_type} has one")
        fields |= dict(num_shared_experts=1, shared_expert_mlp_dim=shared, shared_expert_gate=True)
    return fields


def moe_export_type(config: LlamaConfig, model_type: str | None) -> str:
    """The HF MoE ``model_type`` to write: the one asked for, else qwen2_moe with shared experts,
    qwen3_moe with q/k norms, mixtral otherwise. ``ValueError`` when HF cannot express it."""
    c = config
    chosen = model_type or (
        "qwen2_moe"
        if c.moe.num_shared_experts
        else "qwen3_moe" if c.attention.qk_norm else "mixtral"
    )
    if chosen not in MOE_TYPES:
        raise ValueError(f"model_type must be one of {MOE_TYPES} for an MoE model; got {chosen!r}")
    check_llama_shape(c)
    # Llama's switches (the q/k norm: qwen3_moe's, checked below) and its plain router: none of
    # these types says a scale or groups of experts.
    plain = {k: v for k, v in LLAMA_SWITCHES.items() if k != "attention.qk_norm"} | {
        "moe.router_scale": 1.0,
        "moe.router_groups": 1,
        "moe.router_topk_groups": 1,
    }
    refuse_mismatches(mismatches(c, plain), f"model_type {chosen!r} cannot express this model")

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"model_type {chosen!r} cannot express this model: it needs {what}")

    need(c.moe.router == "softmax", f"router 'softmax' (got {c.moe.router!r})")
    need(not c.use_bias, "no biases beside q/k/v (use_bias=False)")
    need(c.attention.qk_norm == (chosen == "qwen3_moe"), f"qk_norm={chosen == 'qwen3_moe'}")
    need(c.attention.qkv_bias == (chosen == "qwen2_moe"), f"qkv_bias={chosen == 'qwen2_moe'}")
    shared = chosen == "qwen2_moe"
    need(bool(c.moe.num_shared_experts) == shared, f"{'' if shared else 'no '}shared experts")
    need(c.moe.shared_expert_gate == shared, f"shared_expert_gate={shared}")
    if chosen == "mixtral":
        need(c.moe.layer_step == 1 and c.moe.first_dense == 0, "every layer MoE")
        need(c.moe.router_norm_topk, "router_norm_topk=True")
        need(
            c.attention.window_pattern is None,
            "one sliding_window for every layer (no window_pattern)",
        )
    else:
        need(
            c.attention.sliding_window is None,
            "no sliding_window (tjx writes none for the Qwen MoE types)",
        )
    return chosen


def moe_config_to_hf(config: LlamaConfig, model_type: str | None = None) -> dict[str, Any]:
    """The ``config.json`` dict of an MoE ``config`` as ``model_type`` (``moe_export_type``)."""
    c = config
    chosen = moe_export_type(c, model_type)
    out = llama_common_to_hf(c, chosen)
    moe = c.moe
    out |= dict(num_experts_per_tok=moe.experts_per_token, router_aux_loss_coef=moe.router_aux_loss)
    if chosen == "mixtral":
        out |= dict(
            num_local_experts=c.moe.num_experts,
            intermediate_size=expert_mlp_dim(c),
            sliding_window=c.attention.sliding_window,
        )
        return out
    out |= dict(
        num_experts=c.moe.num_experts,
        moe_intermediate_size=expert_mlp_dim(c),
        norm_topk_prob=c.moe.router_norm_topk,
        decoder_sparse_step=c.moe.layer_step,
        mlp_only_layers=list(range(c.moe.first_dense)),
        use_sliding_window=False,
    )
    if chosen == "qwen2_moe":
        out |= dict(shared_expert_intermediate_size=shared_mlp_dim(c), qkv_bias=True)
    else:
        out["attention_bias"] = False
    return out
