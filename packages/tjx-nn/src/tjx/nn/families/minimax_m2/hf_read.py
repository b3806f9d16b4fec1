"""config.json → tjx config for MiniMax-M2 (``minimax_m2``; what maps to what:
:mod:`tjx.nn.families.minimax_m2.hf`).

Refused in one line naming the key: unknown keys, an ``auto_map`` other than the upstreamed
MiniMax-M2 code, ``attention_bias`` true, an activation other than silu, a ``rotary_dim`` that
disagrees with the ``partial_rotary_factor`` transformers reads, ``router_jitter_noise`` > 0, and
the variants transformers' ``minimax_m2`` does not compute (``attn_type_list`` with MiniMax-01's
lightning-attention layers, ``qk_norm_type`` other than ``per_layer``, ``use_qk_norm`` or
``use_routing_bias`` false, ``scoring_func`` other than sigmoid, a shared expert).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from tjx.nn.configs import LlamaConfig, make_config
from tjx.nn.families.minimax_m2.hf import DEFAULT_THETA, MINIMAX_M2, MOE_NEEDS, UPSTREAMED
from tjx.nn.hf.config import (
    BASE_KEYS,
    HARMLESS,
    check_known,
    longest_sequence,
    partial_rotary_factor,
    rope_from_hf,
    unsupported,
)
from tjx.nn.hf.keys import ABSENT, BASE, Key, count, flag, int_list, nonneg, positive, size, text
from tjx.nn.moe.config import MoEConfig

#: MiniMax-M2's keys beyond ``config.BASE_KEYS``.
KEYS = frozenset(
    {
        "hidden_act",
        "num_local_experts",
        "num_experts_per_tok",
        "router_aux_loss_coef",
        "router_jitter_noise",
        "rotary_dim",
        "partial_rotary_factor",
        "output_router_logits",  # what a forward returns, not what it computes
        # The released folders' legacy keys (checked below) and their multi-token-prediction
        # modules, which neither transformers' model nor tjx's holds.
        "use_qk_norm",
        "qk_norm_type",
        "scoring_func",
        "use_routing_bias",
        "shared_intermediate_size",
        "attn_type_list",
        "use_mtp",
        "num_mtp_modules",
        "mtp_transformer_layers",
    }
)
#: The keys MiniMax-M2's import reads (`keys.Spec`), with transformers 5.24's ``MiniMaxM2Config``
#: defaults (MiniMax-M2's sizes); the legacy keys with the one value transformers computes.
SPEC = BASE.but(
    "MiniMaxM2Config",
    hidden_act=text("silu"),
    num_key_value_heads=size(8),
    head_dim=size(128),
    max_position_embeddings=size(196608),
    rms_norm_eps=positive(1e-6),
    num_experts_per_tok=size(8),
    num_local_experts=size(256),
    router_aux_loss_coef=nonneg(0.001),
    router_jitter_noise=nonneg(0.0),
    rotary_dim=size(ABSENT, null=ABSENT),
    partial_rotary_factor=Key("float", ABSENT, above=0, high=1),
    use_qk_norm=flag(True),
    qk_norm_type=text("per_layer"),
    scoring_func=text("sigmoid"),
    use_routing_bias=flag(True),
    shared_intermediate_size=count(0, null=0),
    attn_type_list=int_list(None),
    use_mtp=flag(False),
    num_mtp_modules=count(0, null=0),
    mtp_transformer_layers=count(0, null=0),
    rules=(("num_experts_per_tok", "<=", "num_local_experts"),),
)
#: The legacy keys' values transformers' minimax_m2 computes, and what another value would ask.
_ONLY = {
    "use_qk_norm": (True, "transformers' minimax_m2 always norms q and k"),
    "qk_norm_type": ("per_layer", "its q/k norms span the whole projection (per_layer)"),
    "scoring_func": ("sigmoid", "its router scores experts by sigmoid"),
    "use_routing_bias": (True, "its router always adds e_score_correction_bias"),
    "shared_intermediate_size": (0, "it has no shared expert"),
}


_refuse = partial(unsupported, family=MINIMAX_M2)


def minimax_m2_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` from a minimax_m2 ``config.json`` dict (``overrides`` win).

    Parameters
    ----------
    hf : Mapping
        The ``config.json`` dict.
    **overrides
        Config fields (dotted for a section's) laid over what the checkpoint describes.

    Returns
    -------
    LlamaConfig

    Raises
    ------
    ValueError
        An unknown key, or a value tjx does not compute as transformers does, named.
    """
    if hf.get("auto_map") == UPSTREAMED:
        hf = {k: v for k, v in hf.items() if k != "auto_map"}
    check_known(hf, MINIMAX_M2, BASE_KEYS | KEYS | HARMLESS, custom_code="auto_map" in hf)
    get = SPEC.read(hf)
    for key, (want, why) in _ONLY.items():
        if get[key] != want:
            raise _refuse(key, get[key], why)
    kinds = get.get("attn_type_list")
    if kinds is not None and any(k != 1 for k in kinds):
        raise _refuse(
            "attn_type_list",
            kinds,
            "0 marks a lightning-attention layer (MiniMax-01, model_type 'minimax'); "
            "transformers' minimax_m2 and tjx compute full attention (1) in every layer",
        )
    if get["attention_bias"]:
        raise _refuse("attention_bias", True, "transformers' minimax_m2 has no biases")
    if get["hidden_act"] != "silu":
        raise _refuse("hidden_act", get["hidden_act"], "its experts are SwiGLU (silu)")
    jitter = float(get["router_jitter_noise"])
    if jitter:
        raise _refuse("router_jitter_noise", jitter, "tjx's router adds no noise")
    heads, hd = get["num_attention_heads"], get["head_dim"]
    rope, fraction = _rope(get, hd)
    max_len = get["max_position_embeddings"]
    theta, scaling = rope_from_hf(rope, max_len)
    fields: dict[str, Any] = (
        dict(
            vocab_size=get["vocab_size"],
            max_seq_len=longest_sequence(scaling, max_len),  # dynamic NTK scales past it
            d_model=get["hidden_size"],
            num_layers=get["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=get["num_key_value_heads"],
            head_dim=hd,
            use_bias=False,
            tie_embeddings=get["tie_word_embeddings"],
        )
        | {
            "attention.dropout": float(get["attention_dropout"]),
            "attention.qk_norm": True,
            "attention.qk_norm_scope": "projection",
        }
        | {
            "position.rope_theta": theta,
            "position.rope_scaling": scaling,
            "position.rope_fraction": fraction,
        }
        | {"norm.eps": float(get["rms_norm_eps"])}
        | {"mlp.dim": get["intermediate_size"], "init.std": float(get["initializer_range"])}
    )
    fields["moe"] = MoEConfig(
        num_experts=get["num_local_experts"],
        experts_per_token=get["num_experts_per_tok"],
        expert_mlp_dim=get["intermediate_size"],
        router_aux_loss=float(get["router_aux_loss_coef"]),
        **MOE_NEEDS,  # the sigmoid router renormalised, one group, no shared expert
    )
    return make_config(LlamaConfig, {**fields, **overrides})


def _rope(get: Mapping[str, Any], head_dim: int) -> tuple[dict[str, Any], float]:
    """(the RoPE keys for `rope_from_hf`, the share of each head RoPE turns) as transformers
    reads them: ``rope_parameters``' factor, else the top-level one, else ``rotary_dim /
    head_dim``, else 1; the base 5,000,000 where none is named."""
    params = dict(get.get("rope_parameters") or {})
    scaling = dict(get.get("rope_scaling") or {})
    entry = params if params else scaling
    given = entry.pop("partial_rotary_factor", get.get("partial_rotary_factor", ABSENT))
    rotary_dim = get.get("rotary_dim")
    if given is ABSENT:
        given = rotary_dim / head_dim if rotary_dim is not None else 1.0
    fraction = partial_rotary_factor(given)
    if rotary_dim is not None and int(head_dim * fraction) != rotary_dim:
        raise _refuse(
            "rotary_dim",
            rotary_dim,
            f"transformers rotates int(head_dim {head_dim} x partial_rotary_factor {given}) = "
            f"{int(head_dim * fraction)} dims of each head; make the two agree",
        )
    out: dict[str, Any] = {"rope_parameters": params, "rope_scaling": scaling or None}
    if get.get("rope_theta") is not None:
        out["rope_theta"] = get["rope_theta"]
    elif "rope_theta" not in params:
        out["rope_theta"] = DEFAULT_THETA
    return out, fraction
