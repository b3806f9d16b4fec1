"""Hugging Face ``config.json`` of Gemma 2 and Gemma 3 (text: ``gemma3_text``) ↔ ``LlamaConfig``.

Gemma is the LLaMA decoder with sandwich norms (before and after attention and the MLP), norms
that scale by ``1 + weight``, embeddings times ``sqrt(d_model)``, GeGLU with the tanh GELU and a
query scale ``1/sqrt(query_pre_attn_scalar)``; Gemma 2 soft-caps its attention and output logits
(transformers' defaults 50 and 30 where a config leaves them out), Gemma 3 normalises q and k per
head instead. Their local/global layer pattern slides a window over the local layers
(``sliding_window`` + ``window_pattern``: Gemma 2 alternates from a local layer 0, Gemma 3 makes
every ``sliding_window_pattern``-th layer global, or ``layer_types`` says it per layer), and
Gemma 3 rotates the local layers at their own RoPE base (``rope_local_base_freq`` →
``rope_local_theta``). Gemma 3's image-text checkpoints (``model_type`` ``gemma3``) are refused:
only the text model (``Gemma3ForCausalLM``) loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.family_base import (
    base_fields,
    check_keys,
    common_to_hf,
    layer_types,
    rope_theta,
    windows,
)
from tjx.nn.hf.keys import (
    ABSENT,
    ATTENTION_KINDS,
    BASE,
    Spec,
    flag,
    layer_list,
    positive,
    size,
    text,
)

GEMMA_TYPES = ("gemma2", "gemma3_text")
ARCHITECTURES = {"gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
GEMMA_KEYS = frozenset(
    {
        "hidden_act",  # transformers' Gemma 2/3 read hidden_activation only
        "hidden_activation",
        "query_pre_attn_scalar",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "sliding_window",
        "layer_types",
        "sliding_window_pattern",
        "_sliding_window_pattern",
        "rope_local_base_freq",
        "use_bidirectional_attention",
        "cache_implementation",  # generation's cache class ("hybrid")
    }
)
#: The keys each Gemma's import reads (`keys.Spec`), with transformers 5.24's defaults (Gemma 2's
#: soft caps 50 and 30 where a config.json leaves them out; ``sliding_window_pattern`` is Gemma
#: 3's legacy way to say ``layer_types``).
_GEMMA2 = BASE.but(
    "Gemma2Config",
    hidden_act=text(ABSENT),
    hidden_activation=text("gelu_pytorch_tanh", null="gelu_pytorch_tanh"),
    num_key_value_heads=size(4),
    head_dim=size(256),
    max_position_embeddings=size(8192),
    tie_word_embeddings=flag(True),
    query_pre_attn_scalar=positive(256),  # an int in transformers; tjx writes a float if need be
    sliding_window=size(4096, null=None),
    layer_types=layer_list(ATTENTION_KINDS),
    final_logit_softcapping=positive(30.0, null=None),
    attn_logit_softcapping=positive(50.0, null=None),
    use_bidirectional_attention=flag(None, null=None),
)
SPECS: dict[str, Spec] = {
    "gemma2": _GEMMA2,
    "gemma3_text": _GEMMA2.but(
        "Gemma3TextConfig",
        max_position_embeddings=size(131_072),
        use_bidirectional_attention=flag(False, null=None),
        final_logit_softcapping=positive(None, null=None),
        attn_logit_softcapping=positive(None, null=None),
        rope_local_base_freq=positive(ABSENT),
        sliding_window_pattern=size(ABSENT),
        _sliding_window_pattern=size(ABSENT),
    ),
}
#: The tanh-approximated GELU under its transformers names.
TANH_GELU = ("gelu_pytorch_tanh", "gelu_new")
#: The switches each Gemma computes with (the soft caps and query scale are the config's).
GEMMA_SWITCHES: dict[str, dict[str, Any]] = {
    "gemma2": dict(
        scale_embeddings=True,
        **{"attention.qk_norm": False},
        **{"attention.qk_norm_scope": "head"},
    )
    | {"position.rope_local_theta": None}
    | {"norm.position": "sandwich", "norm.plus_one": True}
    | {"mlp.activation": "geglu"}
}
#: Gemma 3: q/k norms; its local RoPE base is the config's (any value).
GEMMA_SWITCHES["gemma3_text"] = {
    **{k: v for k, v in GEMMA_SWITCHES["gemma2"].items() if k != "position.rope_local_theta"},
    "attention.qk_norm": True,
}


def _sliding_layers(hf: Mapping[str, Any], model_type: str, layers: int) -> list[bool]:
    """Which layers slide, as transformers decides: ``layer_types`` if given, else Gemma 2's
    every other layer from the first, Gemma 3's all but every ``sliding_window_pattern``-th."""
    types = hf.get("layer_types")  # its length and kinds: read with the spec
    if types is not None:
        return [t == "sliding_attention" for t in types]
    if model_type == "gemma2":
        return [i % 2 == 0 for i in range(layers)]
    pattern = int(hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6)))
    return [bool((i + 1) % pattern) for i in range(layers)]


def _gemma3_thetas(hf: Mapping[str, Any]) -> tuple[float, float]:
    """Gemma 3's (global, local) RoPE bases, from the legacy keys or v5's per-layer-type
    ``rope_parameters`` (transformers' defaults 1e6 and 1e4); a scaling is refused."""
    params = hf.get("rope_parameters") or {}
    full = params.get("full_attention") or {}
    local = params.get("sliding_attention") or {}
    rope_theta(hf, "gemma3_text", full)  # refuses a scaling of either kind of layer
    rope_theta(hf, "gemma3_text", local)
    theta = float(hf.get("rope_theta", full.get("rope_theta", 1_000_000.0)))
    return theta, float(hf.get("rope_local_base_freq", local.get("rope_theta", 10_000.0)))


def check_tanh_gelu(hf: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless a Gemma ``config.json``'s ``hidden_activation`` is the tanh
    GELU (`TANH_GELU`), the GeGLU every Gemma computes with."""
    act = hf["hidden_activation"]
    if act not in TANH_GELU:
        raise ValueError(
            f"config.json hidden_activation must be one of {TANH_GELU} (GeGLU with the tanh "
            f"GELU); got {act!r}"
        )


def gemma_fields(hf: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """The ``LlamaConfig`` fields of a gemma2/gemma3_text ``config.json``."""
    hf = SPECS[model_type].read(hf)
    check_keys(hf, model_type, GEMMA_KEYS)
    check_tanh_gelu(hf)
    if hf.get("use_bidirectional_attention"):
        raise ValueError(
            "config.json use_bidirectional_attention true (an encoder) is not supported; tjx "
            f"loads {model_type} as a causal decoder"
        )
    fields = base_fields(hf)
    sliding = _sliding_layers(hf, model_type, fields["num_layers"])
    fields |= windows(hf["sliding_window"], sliding)
    if model_type == "gemma2":
        fields["position.rope_theta"] = rope_theta(hf, model_type)
    else:
        fields["position.rope_theta"], local = _gemma3_thetas(hf)
        # Only the local layers read it (none: leave it unset, as a config without a window).
        fields["position.rope_local_theta"] = local if any(sliding) else None
    return {
        **fields,
        **GEMMA_SWITCHES[model_type],
        "attention.query_pre_attn_scalar": float(hf["query_pre_attn_scalar"]),
        "attention.logit_softcap": hf["attn_logit_softcapping"],
        "final_logit_softcap": hf["final_logit_softcapping"],
    }


def gemma_type(config: LlamaConfig) -> str:
    """``gemma3_text`` for a sandwich-normed config with q/k norms, else ``gemma2``."""
    return "gemma3_text" if config.attention.qk_norm else "gemma2"


def gemma_config_to_hf(config: LlamaConfig, model_type: str) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as ``model_type`` (its switches already checked).

    ``layer_types`` says which layers slide; a config without a window writes every layer as
    ``full_attention`` (with ``sliding_window = max_seq_len``, a window that never slides).
    """
    assert config.head_dim is not None
    scalar = config.attention.query_pre_attn_scalar or float(config.head_dim)
    out: dict[str, Any] = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        **common_to_hf(config),
        "hidden_activation": "gelu_pytorch_tanh",
        # transformers types it as an int: write 256, not 256.0
        "query_pre_attn_scalar": int(scalar) if float(scalar).is_integer() else scalar,
        "attn_logit_softcapping": config.attention.logit_softcap,
        "final_logit_softcapping": config.final_logit_softcap,
        "attention_bias": False,
        "sliding_window": config.attention.sliding_window or config.max_seq_len,
        "layer_types": layer_types(config),
        "use_bidirectional_attention": False,
    }
    if model_type == "gemma3_text":
        out["rope_local_base_freq"] = config.position.rope_local_theta or config.position.rope_theta
    return out
