"""Hugging Face gpt-oss (``GptOssForCausalLM``) ↔ tjx ``Llama`` with sinks and biased MoE layers.

gpt-oss is the LLaMA decoder (pre-norm RMSNorm, GQA, rotate-half RoPE) with:

================================  =============================================================
config.json / tensor              tjx
================================  =============================================================
``self_attn.sinks`` ``[h]``       ``attention_sinks``: ``attn.sinks``, a learned logit per head
                                  in each softmax row's denominator
``attention_bias`` (true)         ``use_bias``: q/k/v/o biases, and the experts' (RMSNorm has
                                  none, the head none)
``layer_types``, ``sliding_       ``sliding_window`` + ``window_pattern`` (default: even layers
window``                          slide, odd ones are full)
``rope_parameters`` (yarn)        ``rope_scaling`` (transformers' default when absent: yarn,
                                  factor 32 over 4,096 positions, ``truncate`` false, base
                                  150,000)
``mlp.router`` (bias)             softmax top-k of ``num_local_experts`` (the softmax of the
                                  chosen logits, which is the renormalised full softmax),
                                  ``router_logit_bias``: ``moe.router.logit_bias``
``mlp.experts.gate_up_proj``      ``[E, d, 2f]``, gate and up *interleaved* in its columns
``[E, d, 2f]`` (+ ``_bias``)      (gate ``0::2``, up ``1::2``) ↔ ``fc_gate``/``fc_in``
                                  ``[E, d, f]`` (already ``[in, out]``: no transpose)
``mlp.experts.down_proj``         ``fc_out`` ``[E, f, d]`` (+ bias)
``[E, f, d]`` (+ ``_bias``)
``swiglu_alpha`` / ``_limit``     ``mlp.activation="swiglu_clamped"`` (1.702 and 7.0 only:
                                  `tjx.nn.mlp.clamped_swiglu`)
================================  =============================================================

The released folders' MXFP4 experts (``quantization_config`` ``mxfp4``: ``gate_up_proj_blocks``
and ``_scales`` ...) are dequantized as they load (`tjx.nn.hf.quantized`, before this module sees
the config). Refused in one line naming the key: other ``swiglu_alpha``/``swiglu_limit`` values,
``attention_bias`` false (the experts keep their biases: tjx biases all or none), unknown keys.
``hidden_act`` is not read by transformers' gpt-oss (its experts' activation is fixed), nor are
the released config's ``experts_per_token`` and ``initial_context_length``: those change no
number.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from tjx.nn.configs import LlamaConfig, make_config
from tjx.nn.hf.config import (
    LLAMA,
    OTHER_MOE_OPTIONS,
    llama_common_to_hf,
    llama_fields,
    unsupported,
)
from tjx.nn.hf.family_base import LLAMA_BLOCK, layer_types, mismatches
from tjx.nn.hf.keys import ATTENTION_KINDS, flag, layer_list, nonneg, positive, size
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.tables import Tables, llama_sizes, transposed
from tjx.nn.mlp import CLAMPED_SWIGLU_ALPHA, CLAMPED_SWIGLU_LIMIT
from tjx.nn.moe.config import MoEConfig

GPT_OSS = "gpt_oss"
ARCHITECTURE = "GptOssForCausalLM"
#: gpt-oss's keys beyond the LLaMA ones (``config.HANDLED``), each mapped or checked here.
KEYS = frozenset(
    {
        "num_local_experts",
        "num_experts_per_tok",
        "swiglu_alpha",
        "swiglu_limit",
        "router_aux_loss_coef",
        "output_router_logits",  # what a forward returns, not what it computes
        "experts_per_token",  # the released config's; transformers reads num_experts_per_tok
        "initial_context_length",  # the released config's; transformers never reads it
    }
)
#: transformers' RoPE when a gpt-oss config names none (``GptOssConfig.__post_init__``).
DEFAULT_ROPE = {
    "rope_type": "yarn",
    "factor": 32.0,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
    "original_max_position_embeddings": 4096,
}
DEFAULT_THETA = 150000.0
#: The keys gpt-oss's import reads (`keys.Spec`), with transformers 5.24's defaults (``head_dim``
#: null: hidden_size // num_attention_heads, as its ``__post_init__``).
SPEC = LLAMA.but(
    "GptOssConfig",
    num_local_experts=size(128),
    head_dim=size(64, null=None),
    num_key_value_heads=size(8, null=None),
    sliding_window=size(128, null=None),
    max_position_embeddings=size(131072),
    rms_norm_eps=positive(1e-5),
    num_experts_per_tok=size(4),
    swiglu_alpha=positive(CLAMPED_SWIGLU_ALPHA),
    swiglu_limit=positive(CLAMPED_SWIGLU_LIMIT),
    router_aux_loss_coef=nonneg(0.001),
    layer_types=layer_list(ATTENTION_KINDS),
    attention_bias=flag(True),
    rules=(("num_experts_per_tok", "<=", "num_local_experts"),),
)
#: What a config must have to be written as gpt-oss: field → (the value gpt-oss computes with):
#: a plain LLaMA block but its biases, sinks, whole-head RoPE and clamped SwiGLU.
NEEDS: dict[str, Any] = LLAMA_BLOCK | {
    "use_bias": True,
    "attention.sinks": True,
    "position.rope_fraction": 1.0,
    "mlp.activation": "swiglu_clamped",
}
#: What its ``moe`` section must have: `MoEConfig` field → the value gpt-oss computes with.
MOE_NEEDS: dict[str, Any] = OTHER_MOE_OPTIONS | dict(
    router="softmax",
    router_norm_topk=True,
    router_logit_bias=True,
    router_scale=1.0,
    router_groups=1,
    num_shared_experts=0,
    first_dense=0,
    layer_step=1,
)


_refuse = partial(unsupported, family="gpt_oss")


def gpt_oss_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` from a gpt_oss ``config.json`` dict (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown key, or a value tjx does not compute as transformers does, named.
    """
    hf = SPEC.read(hf)
    for key, want in (
        ("swiglu_alpha", CLAMPED_SWIGLU_ALPHA),
        ("swiglu_limit", CLAMPED_SWIGLU_LIMIT),
    ):
        if float(hf[key]) != want:
            raise _refuse(key, hf[key], f"tjx's clamped SwiGLU computes {want} only")
    if not hf["attention_bias"]:
        raise _refuse(
            "attention_bias", False, "its experts keep their biases, and tjx biases every "
            "projection or none"
        )  # fmt: skip
    layers = hf["num_hidden_layers"]
    rest = {k: v for k, v in hf.items() if k not in ("attention_bias", "hidden_act")}
    if not rest.get("rope_parameters") and not rest.get("rope_scaling"):
        rest["rope_parameters"] = dict(DEFAULT_ROPE)
    params = rest.get("rope_parameters")
    if rest.get("rope_theta") is None and (not params or params.get("rope_theta") is None):
        rest["rope_theta"] = DEFAULT_THETA
    if rest.get("layer_types") is None:
        rest["layer_types"] = [
            "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)
        ]
    fields = llama_fields(rest, GPT_OSS, handled=KEYS)
    fields |= dict(
        use_bias=True,
        **{"attention.sinks": True},
        moe=MoEConfig(
            num_experts=hf["num_local_experts"],
            experts_per_token=hf["num_experts_per_tok"],
            router="softmax",
            router_norm_topk=True,
            router_logit_bias=True,
            router_aux_loss=float(hf["router_aux_loss_coef"]),
        ),
    ) | {"mlp.activation": "swiglu_clamped"}
    return make_config(LlamaConfig, {**fields, **overrides})


def is_gpt_oss(config: LlamaConfig) -> bool:
    """Whether ``config`` has gpt-oss's own switch (attention sinks): it exports as gpt_oss."""
    return config.attention.sinks


def gpt_oss_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as gpt_oss.

    Raises
    ------
    ValueError
        ``config`` computes something gpt-oss cannot express (every such field named).
    """
    c = config
    want = NEEDS | {f"moe.{k}": v for k, v in MOE_NEEDS.items()}
    wrong = {k: got for k, (got, _) in mismatches(c, want).items()}
    if not c.moe.num_experts:
        wrong["moe.num_experts"] = 0
    if c.moe.expert_mlp_dim not in (None, c.mlp.dim):
        wrong["moe.expert_mlp_dim"] = c.moe.expert_mlp_dim
    if wrong:
        got = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        needs = ", ".join(
            f"{k}={want.get(k, '> 0' if k == 'moe.num_experts' else 'mlp.dim')!r}" for k in wrong
        )
        raise ValueError(f"model_type 'gpt_oss' cannot express {got} (it computes {needs})")
    out = llama_common_to_hf(c, "llama")
    scaling = out.pop("rope_scaling", None)
    theta = out.pop("rope_theta")
    del out["hidden_act"]  # gpt-oss's experts fix their activation
    return out | {
        "architectures": [ARCHITECTURE],
        "model_type": GPT_OSS,
        "rope_parameters": {"rope_theta": theta, **(scaling or {"rope_type": "default"})},
        "attention_bias": True,
        # No window means every layer full; transformers' gpt-oss needs a number anyway.
        "sliding_window": c.attention.sliding_window or c.max_seq_len,
        "layer_types": layer_types(c),
        "num_local_experts": c.moe.num_experts,
        "num_experts_per_tok": c.moe.experts_per_token,
        "swiglu_alpha": CLAMPED_SWIGLU_ALPHA,
        "swiglu_limit": CLAMPED_SWIGLU_LIMIT,
        "router_aux_loss_coef": c.moe.router_aux_loss,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }


def gpt_oss_mapping(c: LlamaConfig) -> HFMapping:
    """The HF ↔ tjx correspondence of a gpt-oss ``c`` (see ``HFMapping`` and the module doc)."""
    d, h, hk, hd, f, v = llama_sizes(c)
    e = c.moe.num_experts
    tables = Tables()
    shapes, to_tjx, to_hf, same = tables.shapes, tables.to_tjx, tables.to_hf, tables.same

    def linear(hf: str, tjx: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        """An ``nn.Linear`` (``[out, in]`` weight and ``[out]`` bias) ↔ a tjx ``Dense``."""
        tables.linear(hf, tjx, in_shape, out_shape, bias=True)

    def interleaved(hf: str, gate: str, up: str, shape: tuple[int, ...]) -> None:
        """``hf`` ``[..., 2f]`` holds ``gate``'s and ``up``'s columns in turn (gate first)."""
        shapes[hf] = (*shape[:-1], 2 * shape[-1])
        to_tjx[gate] = lambda read: read(hf)[..., 0::2]
        to_tjx[up] = lambda read: read(hf)[..., 1::2]
        to_hf[hf] = lambda read: np.stack([read(gate), read(up)], axis=-1).reshape(shapes[hf])

    same("model.embed_tokens.weight", "embed.embedding", (v, d))
    for i in range(c.num_layers):
        p, t = f"model.layers.{i}.", f"stack.layers.{i}."
        linear(p + "self_attn.q_proj", t + "attn.query", (d,), (h, hd))
        linear(p + "self_attn.k_proj", t + "attn.key", (d,), (hk, hd))
        linear(p + "self_attn.v_proj", t + "attn.value", (d,), (hk, hd))
        linear(p + "self_attn.o_proj", t + "attn.out", (h, hd), (d,))
        same(p + "self_attn.sinks", t + "attn.sinks", (h,))
        router, experts = p + "mlp.router.", t + "moe.experts."
        shapes[router + "weight"] = (e, d)
        to_tjx[t + "moe.router.kernel"] = transposed(router + "weight")
        to_hf[router + "weight"] = transposed(t + "moe.router.kernel")
        same(router + "bias", t + "moe.router.logit_bias", (e,))
        gate_up = p + "mlp.experts.gate_up_proj"
        interleaved(gate_up, experts + "fc_gate.kernel", experts + "fc_in.kernel", (e, d, f))
        interleaved(gate_up + "_bias", experts + "fc_gate.bias", experts + "fc_in.bias", (e, f))
        same(p + "mlp.experts.down_proj", experts + "fc_out.kernel", (e, f, d))
        same(p + "mlp.experts.down_proj_bias", experts + "fc_out.bias", (e, d))
        same(p + "input_layernorm.weight", t + "attn_norm.scale", (d,))
        same(p + "post_attention_layernorm.weight", t + "mlp_norm.scale", (d,))
    same("model.norm.weight", "final_norm.scale", (d,))
    if not c.tie_embeddings:
        shapes["lm_head.weight"] = (v, d)
        to_tjx["head.kernel"] = transposed("lm_head.weight")
        to_hf["lm_head.weight"] = transposed("head.kernel")

    def ignored(name: str) -> bool:
        # A tied head may be stored as a copy.
        return c.tie_embeddings and name == "lm_head.weight"

    return tables.mapping(ignored)
