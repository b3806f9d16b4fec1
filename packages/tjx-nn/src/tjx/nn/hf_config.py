"""Hugging Face ``config.json`` of the LLaMA family (llama, mistral, qwen2) ↔ ``LlamaConfig``.

Every key of a ``config.json`` is either mapped onto a ``LlamaConfig`` field, checked to have the
one value tjx computes the same way (``hidden_act: silu``, a sliding window that never slides), or
on the explicit allow-list ``HARMLESS`` (bookkeeping and generation defaults that change no
number). Anything else is refused by name, so a checkpoint never loads into a model that computes
something other than what its config says. ``auto_map`` (custom modelling code) is refused: tjx
never runs code from a checkpoint, and the weights of a custom architecture may mean something
else than ``model_type`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig

LLAMA_TYPES = ("llama", "mistral", "qwen2")
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}
#: Keys that change nothing tjx computes (bookkeeping, token ids for generation, HF switches).
HARMLESS = frozenset(
    {
        "architectures",
        "model_type",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "use_cache",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "_name_or_path",
        "pretraining_tp",  # HF splits the matmuls in pieces; the sum is the same
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "tokenizer_class",
        "max_window_layers",  # qwen2: which layers slide, when use_sliding_window is on
        "use_return_dict",
    }
)
#: Keys mapped or checked below.
HANDLED = frozenset(
    {
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_theta",
        "rope_scaling",
        "rope_parameters",
        "tie_word_embeddings",
        "hidden_act",
        "attention_bias",
        "mlp_bias",
        "sliding_window",
        "use_sliding_window",
        "layer_types",
        "attention_dropout",
        "initializer_range",
        "auto_map",
    }
)


def _rope(hf: Mapping[str, Any]) -> tuple[float, tuple[float, float, float, int] | None]:
    """(rope_theta, llama3 scaling or None) from the legacy keys or v5's ``rope_parameters``."""
    params = hf.get("rope_parameters") or {}
    theta = float(hf.get("rope_theta", params.get("rope_theta", 10000.0)))
    scaling = hf.get("rope_scaling")
    if scaling is None and params.get("rope_type", "default") != "default":
        scaling = params
    if scaling is None:
        return theta, None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise ValueError(
            f"config.json rope_scaling type {kind!r} is not supported; tjx implements 'llama3' "
            "scaling only"
        )
    try:
        factor, low, high = (
            float(scaling[k]) for k in ("factor", "low_freq_factor", "high_freq_factor")
        )
        original = int(scaling["original_max_position_embeddings"])
    except KeyError as e:
        raise ValueError(f"config.json rope_scaling of type 'llama3' lacks {e.args[0]!r}") from None
    return theta, (factor, low, high, original)


#: Model types whose ``sliding_window`` slides whenever it is set (no ``use_sliding_window``).
ALWAYS_SLIDE = ("mistral", "mixtral")


def _check_window(hf: Mapping[str, Any], model_type: str, max_len: int) -> None:
    """tjx has no sliding window: one is served only where it never slides (≥ the context)."""
    window = hf.get("sliding_window")
    on = window is not None and (model_type in ALWAYS_SLIDE or bool(hf.get("use_sliding_window")))
    layer_types = hf.get("layer_types") or []
    sliding_layers = [t for t in layer_types if t != "full_attention"]
    if sliding_layers and window is None:
        raise ValueError(f"config.json layer_types {sorted(set(sliding_layers))} are not supported")
    if (on or sliding_layers) and window is not None and int(window) < max_len:
        raise ValueError(
            f"config.json sliding_window {window} is shorter than max_position_embeddings "
            f"{max_len}; tjx has no sliding-window attention (set sliding_window to null to load "
            "it with full attention, which changes outputs beyond the window)"
        )


def llama_fields(
    hf: Mapping[str, Any], model_type: str, *, handled: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The ``LlamaConfig`` fields every LLaMA-shaped ``config.json`` carries (the MoE types' too,
    which add ``handled`` keys of their own and map them in ``hf_moe``).

    Raises
    ------
    ValueError
        An unknown or unsupported key or value, named.
    """
    if "auto_map" in hf:
        raise ValueError(
            "config.json has auto_map (custom modelling code, which tjx never runs); its "
            f"architecture may differ from model_type {model_type!r}, so it is refused"
        )
    unknown = sorted(set(hf) - HANDLED - HARMLESS - handled)
    if unknown:
        raise ValueError(
            f"config.json key(s) {', '.join(unknown)} are not understood by tjx's {model_type} "
            "import and could change the model; remove them only if they change no output"
        )
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"config.json hidden_act must be 'silu' (SwiGLU); got {act!r}")
    attn_bias, mlp_bias = bool(hf.get("attention_bias")), bool(hf.get("mlp_bias"))
    if attn_bias != mlp_bias:
        raise ValueError(
            f"config.json attention_bias {attn_bias} with mlp_bias {mlp_bias} is not supported "
            "(tjx puts biases on every projection or on none, or on q/k/v only as Qwen2)"
        )
    max_len = int(hf.get("max_position_embeddings", 2048))
    _check_window(hf, model_type, max_len)
    theta, scaling = _rope(hf)
    heads = int(hf["num_attention_heads"])
    return dict(
        vocab_size=int(hf["vocab_size"]),
        max_seq_len=max_len,
        d_model=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=hf.get("head_dim") or None,
        mlp_dim=int(hf["intermediate_size"]),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        use_bias=attn_bias,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_dropout=float(hf.get("attention_dropout", 0.0)),
        init_std=float(hf.get("initializer_range", 0.02)),
    )


def llama_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` from a llama/mistral/qwen2 ``config.json`` dict (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown or unsupported key or value, named.
    """
    model_type = hf.get("model_type")
    if model_type not in LLAMA_TYPES:
        raise ValueError(f"config.json model_type must be one of {LLAMA_TYPES}; got {model_type!r}")
    fields = llama_fields(hf, model_type)
    fields["qkv_bias"] = model_type == "qwen2"
    fields.update(overrides)
    return LlamaConfig(**fields)


def check_llama_shape(config: LlamaConfig) -> None:
    """Raise ``ValueError`` unless ``config`` is LLaMA-shaped (what every HF Llama type is)."""
    shaped = config.attention_type == "mha" and config.position == "rope"
    if not shaped or config.norm != "rmsnorm":
        raise ValueError(
            "only LLaMA-shaped configs export (attention_type 'mha', position 'rope', norm "
            f"'rmsnorm'); got {config.attention_type!r}, {config.position!r}, {config.norm!r}"
        )
    if config.mlp_activation != "swiglu" or config.norm_position != "pre":
        raise ValueError(
            "only LLaMA-shaped configs export (mlp_activation 'swiglu', norm_position 'pre'); "
            f"got {config.mlp_activation!r}, {config.norm_position!r}"
        )


def export_type(config: LlamaConfig, model_type: str | None) -> str:
    """The HF ``model_type`` to write: the one asked for, else qwen2 with q/k/v-only biases,
    else llama. Raises ``ValueError`` when ``config`` cannot be that type."""
    chosen = model_type or ("qwen2" if config.qkv_bias and not config.use_bias else "llama")
    if chosen not in LLAMA_TYPES:
        raise ValueError(f"model_type must be one of {LLAMA_TYPES} for a Llama; got {chosen!r}")
    if config.qk_norm:
        raise ValueError(
            f"model_type {chosen!r} has no q/k norms (qk_norm=True); of the HF types tjx "
            "writes only qwen3_moe has them"
        )
    check_llama_shape(config)
    qwen = chosen == "qwen2"
    if qwen != (config.qkv_bias and not config.use_bias):
        raise ValueError(
            f"model_type {chosen!r} needs qkv_bias={qwen} and use_bias=False; got qkv_bias="
            f"{config.qkv_bias}, use_bias={config.use_bias}"
        )
    if chosen == "mistral" and config.use_bias:
        raise ValueError("model_type 'mistral' has no biases; got use_bias=True")
    return chosen


def llama_config_to_hf(config: LlamaConfig, model_type: str | None = None) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as ``model_type`` (see ``export_type``)."""
    chosen = export_type(config, model_type)
    out = llama_common_to_hf(config, chosen)
    if chosen == "llama":
        out["attention_bias"] = out["mlp_bias"] = config.use_bias
    elif chosen == "mistral":
        out["sliding_window"] = None
    else:
        out["use_sliding_window"] = False
    return out


def llama_common_to_hf(config: LlamaConfig, chosen: str) -> dict[str, Any]:
    """The keys every LLaMA-shaped ``config.json`` of ``model_type`` ``chosen`` holds."""
    out: dict[str, Any] = {
        "architectures": [ARCHITECTURES[chosen]],
        "model_type": chosen,
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.mlp_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "hidden_act": "silu",
        "tie_word_embeddings": config.tie_embeddings,
        "attention_dropout": config.attention_dropout,
        "initializer_range": config.init_std,
    }
    if config.rope_scaling is not None:
        factor, low, high, original = config.rope_scaling
        out["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": original,
        }
    return out
