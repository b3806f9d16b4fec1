"""Hugging Face DeepSeek-V2 (V2-Lite) and DeepSeek-V3 ``config.json`` ↔ ``LlamaConfig`` with
DeepSeek's MLA (:mod:`tjx.nn.mla`) and MoE layers.

=========================================  =================================================
config.json                                tjx config
=========================================  =================================================
``q_lora_rank`` (null: a full ``q_proj``)  ``mla.q_lora_rank``
``kv_lora_rank``                           ``mla.kv_latent_dim`` (``attention.type="mla"``)
``qk_nope_head_dim + qk_rope_head_dim``    ``head_dim``; ``mla.qk_rope_head_dim`` its rotated tail
``v_head_dim``                             ``mla.v_head_dim``
``rope_parameters`` yarn with ``mscale*``  ``position.rope_scaling`` (and ``mscale²``)
``n_routed_experts``, ``num_experts_per    ``moe.num_experts``, ``moe.experts_per_token``,
_tok``, ``moe_intermediate_size``          ``moe.expert_mlp_dim``
``n_shared_experts``                       ``moe.num_shared_experts`` (no gate)
``first_k_dense_replace``                  ``moe.first_dense`` (``intermediate_size``: their MLP)
``routed_scaling_factor``                  ``moe.router_scale``
V2: softmax, ``topk_method`` greedy or     ``moe.router="softmax"``, ``router_groups``/
``group_limited_greedy`` (``n_group``,     ``router_topk_groups``, no renormalisation (as
``topk_group``)                            transformers' V2)
V3: sigmoid + ``e_score_correction_bias``  ``moe.router="sigmoid"`` (its bias), groups,
``n_group``, ``topk_group``,               ``router_norm_topk``
``norm_topk_prob``
=========================================  =================================================

``rms_norm_eps`` is the decoder's norms' ``norm.eps``; DeepSeek's latent norms keep 1e-6 whatever
it says (``mla.latent_norm_eps`` 1e-6 when it differs: Kimi-K2.5's 1e-5).
Refused in one line naming the key: attention or MLP biases, ``num_key_value_heads`` other than
the heads, V2's ``norm_topk_prob`` true (transformers' V2 ignores it),
``moe_layer_freq`` other than 1, ``scoring_func``/``topk_method`` other than the type's, no
shared experts. V3's own release (``quantization_config`` ``fp8``: FP8 blocks with
``weight_scale_inv``) is dequantized as it loads (`tjx.nn.hf.quantized`, before this module
sees the config). V3's multi-token-prediction layers
(``num_nextn_predict_layers``) are ``mtp.depths`` (:mod:`tjx.nn.mtp`, their tensors
:mod:`tjx.nn.hf.mtp_tensors`): loaded, trained and written back; a load with ``mtp.depths=0``
skips them with one printed line.
DeepSeek's own ``auto_map`` (the hub code transformers ships upstream) is read as the model type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig, make_config, setting_value
from tjx.nn.hf.config import LLAMA, llama_common_to_hf, llama_fields, other_switches, unsupported
from tjx.nn.hf.family_base import deepseek_moe_fields, deepseek_moe_to_hf, refuse_mismatches
from tjx.nn.hf.keys import ABSENT, UNSET, Spec, count, flag, nonneg, positive, size, text
from tjx.nn.mla_config import MLAConfig
from tjx.nn.moe.config import MoEConfig

DEEPSEEK_TYPES = ("deepseek_v2", "deepseek_v3")
ARCHITECTURES = {"deepseek_v2": "DeepseekV2ForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM"}
KEYS = frozenset(
    {
        "q_lora_rank",
        "kv_lora_rank",
        "qk_nope_head_dim",
        "qk_rope_head_dim",
        "qk_head_dim",
        "v_head_dim",
        "n_routed_experts",
        "num_experts_per_tok",
        "moe_intermediate_size",
        "n_shared_experts",
        "first_k_dense_replace",
        "moe_layer_freq",
        "routed_scaling_factor",
        "topk_method",
        "n_group",
        "topk_group",
        "norm_topk_prob",
        "scoring_func",
        "aux_loss_alpha",
        "seq_aux",
        "output_router_logits",
        "ep_size",
        "num_nextn_predict_layers",
        "rope_interleave",
    }
)
#: The keys each type's import reads (`keys.Spec`), with transformers 5.24's defaults. V2's
#: ``num_experts_per_tok`` defaults to None there (`keys.UNSET`: tjx needs the number); the
#: multi-token-prediction count, which transformers 5.24 defaults to 1 (``num_mtp_layers``), is
#: 0 when left out, as the checkpoints transformers saves hold none of those layers (`_read`).
_DEEPSEEK = LLAMA.but(
    "DeepseekV2Config",
    head_dim=size(None, null=None),  # transformers sets it to qk_rope_head_dim; tjx reads the
    # MLA's own sizes (qk_nope_head_dim + qk_rope_head_dim), not hidden_size // heads
    first_k_dense_replace=count(0, null=0),
    kv_lora_rank=size(512),
    q_lora_rank=size(1536, null=None),  # null: a full q_proj
    n_group=size(None, null=None),
    n_routed_experts=size(64),
    n_shared_experts=count(2, null=0),
    qk_nope_head_dim=size(128),
    qk_rope_head_dim=size(64),
    routed_scaling_factor=positive(1.0),
    topk_group=size(None, null=None),
    topk_method=text("greedy", null=None),
    norm_topk_prob=flag(False, null=False),
    v_head_dim=size(128),
    num_experts_per_tok=size(UNSET, null=UNSET),
    moe_intermediate_size=size(1407),
    moe_layer_freq=size(ABSENT),
    scoring_func=text(ABSENT),
    aux_loss_alpha=nonneg(ABSENT, null=ABSENT),
    num_nextn_predict_layers=count(ABSENT, null=ABSENT),
    rope_interleave=flag(ABSENT, null=ABSENT),
    rules=(
        ("num_experts_per_tok", "<=", "n_routed_experts"),
        ("n_group", "divides", "n_routed_experts"),
        ("topk_group", "<=", "n_group"),
    ),
    head_dim_from_hidden=False,
)
SPECS: dict[str, Spec] = {
    "deepseek_v2": _DEEPSEEK,
    "deepseek_v3": _DEEPSEEK.but(
        "DeepseekV3Config",
        num_key_value_heads=size(128, null=None),
        n_shared_experts=size(1),
        n_routed_experts=size(256),
        routed_scaling_factor=positive(2.5),
        max_position_embeddings=size(4096),
        n_group=size(8, null=None),
        topk_group=size(4, null=None),
        num_experts_per_tok=size(8, null=UNSET),
        first_k_dense_replace=count(3, null=0),
        norm_topk_prob=flag(True, null=False),
        moe_intermediate_size=size(2048),
        topk_method=text(ABSENT, null=None),
        rope_interleave=flag(True, null=True),
    ),
}
#: The hub code each type was upstreamed from: transformers runs its own class for it, as tjx.
_UPSTREAMED = {
    t: {
        "AutoConfig": f"configuration_deepseek.Deepseek{v}Config",
        "AutoModel": f"modeling_deepseek.Deepseek{v}Model",
        "AutoModelForCausalLM": f"modeling_deepseek.Deepseek{v}ForCausalLM",
    }
    for t, v in (("deepseek_v2", "V2"), ("deepseek_v3", "V3"))
}
#: What each type's router is (scoring_func, the topk_methods transformers' class computes).
_ROUTING = {
    "deepseek_v2": ("softmax", ("greedy", "group_limited_greedy")),
    "deepseek_v3": ("sigmoid", ("noaux_tc",)),
}


#: The epsilon of transformers' DeepSeek latent norms (``q_a_layernorm``, ``kv_a_layernorm``),
#: whatever ``rms_norm_eps`` (the other norms') says.
LATENT_EPS = 1e-6


def mtp_layers(hf: Mapping[str, Any]) -> int:
    """V3's multi-token-prediction layers after the causal LM's (``mtp.depths``)."""
    return int(hf.get("num_nextn_predict_layers") or 0)


def deepseek_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` from a deepseek_v2/deepseek_v3 ``config.json`` (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown key, or an option tjx does not compute as transformers does, named.
    """
    model_type = str(hf.get("model_type"))
    auto_map = hf.get("auto_map")
    if isinstance(auto_map, Mapping) and auto_map.items() <= _UPSTREAMED[model_type].items():
        hf = {k: v for k, v in hf.items() if k != "auto_map"}
    hf = SPECS[model_type].read(hf)
    fields = llama_fields(hf, model_type, handled=KEYS)
    if fields["use_bias"]:
        raise unsupported("attention_bias", True, "tjx's DeepSeek import has no biases")
    heads, kv_heads = fields["num_heads"], fields["num_kv_heads"]
    if kv_heads != heads:
        raise unsupported(
            "num_key_value_heads", kv_heads, f"DeepSeek's MLA has one per head ({heads})"
        )
    scoring, methods = _ROUTING[model_type]
    for key, allowed in (("scoring_func", (scoring,)), ("topk_method", (*methods, None))):
        if hf.get(key, allowed[0]) not in allowed:
            raise unsupported(key, hf[key], f"transformers' {model_type} computes {allowed[0]!r}")
    if hf.get("moe_layer_freq", 1) != 1:
        raise unsupported("moe_layer_freq", hf["moe_layer_freq"], "transformers reads only 1")
    shared = hf["n_shared_experts"]
    if shared < 1:
        raise unsupported("n_shared_experts", shared, "tjx's DeepSeek import needs shared experts")
    rope, nope = hf["qk_rope_head_dim"], hf["qk_nope_head_dim"]
    grouped = model_type == "deepseek_v3" or hf.get("topk_method") == "group_limited_greedy"
    if model_type == "deepseek_v2" and hf.get("norm_topk_prob"):
        raise unsupported("norm_topk_prob", True, "transformers' deepseek_v2 never renormalises")
    norm_topk = hf["norm_topk_prob"] and model_type == "deepseek_v3"
    moe = deepseek_moe_fields(hf, router=scoring, norm_topk=norm_topk, grouped=grouped)
    if hf.get("aux_loss_alpha") is not None:  # a training setting (logits do not change)
        moe["router_aux_loss"] = float(hf["aux_loss_alpha"])
    fields |= dict(
        **{"attention.type": "mla"},
        mla=MLAConfig(
            kv_latent_dim=hf["kv_lora_rank"],
            q_lora_rank=hf["q_lora_rank"],
            qk_rope_head_dim=rope,
            v_head_dim=hf["v_head_dim"],
            # transformers' q_a/kv_a_layernorm keep 1e-6 whatever rms_norm_eps says.
            latent_norm_eps=None if fields["norm.eps"] == LATENT_EPS else LATENT_EPS,
        ),
        head_dim=nope + rope,
        moe=MoEConfig(**moe),
    ) | {"mtp.depths": mtp_layers(hf)}
    return make_config(LlamaConfig, {**fields, **overrides})


def deepseek_export_type(config: LlamaConfig, model_type: str | None) -> str:
    """deepseek_v3 for the sigmoid router, deepseek_v2 for softmax (or the one asked for, when
    it fits). ``ValueError`` naming what HF cannot express."""
    c = config
    chosen = model_type or ("deepseek_v3" if c.moe.router == "sigmoid" else "deepseek_v2")
    if chosen not in DEEPSEEK_TYPES:
        raise ValueError(
            f"a model with DeepSeek's MLA saves as one of {DEEPSEEK_TYPES}; got {chosen!r}"
        )
    latent_eps = c.norm.eps if c.mla.latent_norm_eps is None else c.mla.latent_norm_eps
    needs: dict[str, tuple[Any, Any]] = {
        "moe.router": (c.moe.router, _ROUTING[chosen][0]),
        "norm.kind": (c.norm.kind, "rmsnorm"),
        "norm.position": (c.norm.position, "pre"),
        "mlp.activation": (c.mlp.activation, "swiglu"),
        "use_bias": (c.use_bias, False),
        "attention.qkv_bias": (c.attention.qkv_bias, False),
        "moe.shared_expert_gate": (c.moe.shared_expert_gate, False),
        "moe.shared_expert_mlp_dim": (c.moe.shared_expert_mlp_dim, None),
        "moe.layer_step": (c.moe.layer_step, 1),
        "attention.sliding_window": (c.attention.sliding_window, None),
        "mla.latent_norm_eps": (latent_eps, LATENT_EPS),
        "norm.plus_one": (c.norm.plus_one, False),
        "scale_embeddings": (c.scale_embeddings, False),
        "final_logit_softcap": (c.final_logit_softcap, None),
        "attention.logit_softcap": (c.attention.logit_softcap, None),
        "attention.query_pre_attn_scalar": (c.attention.query_pre_attn_scalar, None),
    }
    needs |= {k: (setting_value(c, k), v) for k, v in other_switches(c).items()}
    if chosen == "deepseek_v2":
        needs["moe.router_norm_topk"] = (c.moe.router_norm_topk, False)
    if not c.moe.num_experts or not c.moe.num_shared_experts:
        needs["moe.num_experts, moe.num_shared_experts"] = ("0", "> 0")
    wrong = {k: v for k, v in needs.items() if v[0] != v[1]}
    refuse_mismatches(wrong, f"model_type {chosen!r} cannot express this model")
    return chosen


def deepseek_config_to_hf(config: LlamaConfig, model_type: str | None = None) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` (DeepSeek's MLA and MoE) as ``model_type``."""
    c = config
    chosen = deepseek_export_type(c, model_type)
    assert c.head_dim is not None and c.mla.qk_rope_head_dim is not None
    plain = c.replace(mla=MLAConfig(), num_kv_heads=None, **{"attention.type": "mha"})
    assert isinstance(plain, LlamaConfig)
    out = llama_common_to_hf(plain, "llama")
    rope = out.pop("rope_scaling", None)
    out.pop("rope_theta")
    out |= dict(
        architectures=[ARCHITECTURES[chosen]],
        model_type=chosen,
        head_dim=c.mla.qk_rope_head_dim,
        rope_parameters={"rope_theta": c.position.rope_theta, **(rope or {"rope_type": "default"})},
        attention_bias=False,
        q_lora_rank=c.mla.q_lora_rank,
        kv_lora_rank=c.mla.kv_latent_dim,
        qk_nope_head_dim=c.head_dim - c.mla.qk_rope_head_dim,
        qk_rope_head_dim=c.mla.qk_rope_head_dim,
        v_head_dim=c.mla.v_head_dim or c.head_dim,
        **deepseek_moe_to_hf(c),
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if chosen == "deepseek_v2":
        out["topk_method"] = "group_limited_greedy" if c.moe.router_groups > 1 else "greedy"
        out["mlp_bias"] = False
    else:
        out |= dict(rope_interleave=True, num_nextn_predict_layers=c.mtp.depths)
    return out
