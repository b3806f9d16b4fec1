"""Hugging Face ``config.json`` of the LLaMA family (llama, mistral, qwen2) ↔ ``LlamaConfig``
(``llama_fields``/``llama_common_to_hf`` are shared with the MoE types of ``moe``).

Every key of a ``config.json`` is either mapped onto a ``LlamaConfig`` field (sliding windows and
the per-layer ``layer_types``, every RoPE scaling of :mod:`tjx.nn.rope_scaling`), checked to have
the one value tjx computes the same way (``hidden_act: silu``), or on the explicit allow-list
``HARMLESS`` (bookkeeping and generation defaults that change no
number). Anything else is refused by name, so a checkpoint never loads into a model that computes
something other than what its config says. ``auto_map`` (custom modelling code) is refused: tjx
never runs code from a checkpoint, and the weights of a custom architecture may mean something
else than ``model_type`` says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig, make_config, setting_value
from tjx.nn.family_config import OTHER_MOE_OPTIONS, OTHER_SWITCHES
from tjx.nn.hf.keys import ABSENT, ATTENTION_KINDS, LLAMA, Spec, count, flag, layer_list, size
from tjx.nn.rope_scaling import ROPE_SCALINGS, RopeScaling

LLAMA_TYPES = ("llama", "mistral", "qwen2")


def other_switches(config: LlamaConfig, own: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The switches a LLaMA block lacks at their off value (`family_config.OTHER_SWITCHES`, and
    its `OTHER_MOE_OPTIONS` when ``config`` has experts) but ``own``: what a family's export
    needs off, so that none is dropped without a word (the family writes those ``own`` names).

    Parameters
    ----------
    config : LlamaConfig
        The config being exported.
    own : frozenset of str
        The switches (dotted keys) the family's ``config.json`` says.

    Returns
    -------
    dict
        Dotted key → the value the export needs.
    """
    moe = {f"moe.{k}": v for k, v in OTHER_MOE_OPTIONS.items()} if config.moe.num_experts else {}
    needs = OTHER_SWITCHES | moe
    return {k: v for k, v in needs.items() if k not in own}


#: The keys each type's import reads (`keys.Spec`), with transformers 5.24's defaults: Llama's
#: (``keys.LLAMA``), and the windows tjx reads for every LLaMA type (transformers' Llama has none
#: but reads a ``layer_types``), Mistral's and Qwen2's where they differ.
WINDOW_KEYS: dict[str, Any] = dict(
    sliding_window=size(ABSENT, null=None),
    use_sliding_window=flag(ABSENT),
    max_window_layers=count(ABSENT),
    layer_types=layer_list(ATTENTION_KINDS),
)
#: Qwen2's (and its MoE types'): a window of 4096 from layer 28 on, once use_sliding_window.
QWEN_WINDOWS: dict[str, Any] = dict(
    sliding_window=size(4096, null=None),
    use_sliding_window=flag(False),
    max_window_layers=count(28),
    layer_types=layer_list(ATTENTION_KINDS),
)
SPECS: dict[str, Spec] = {
    "llama": LLAMA.but("LlamaConfig", **WINDOW_KEYS),
    "mistral": LLAMA.but(
        "MistralConfig",
        **WINDOW_KEYS | dict(sliding_window=size(4096, null=None)),
        num_key_value_heads=size(8, null=None),
        max_position_embeddings=size(4096 * 32),
    ),
    "qwen2": LLAMA.but(
        "Qwen2Config",
        **QWEN_WINDOWS,
        num_key_value_heads=size(32, null=None),
        max_position_embeddings=size(32768),
    ),
}
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
        "use_return_dict",
    }
)
#: Keys every family's import maps or checks.
BASE_KEYS = frozenset(
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
        "attention_bias",
        "attention_dropout",
        "initializer_range",
        "auto_map",
    }
)
#: Keys the LLaMA-shaped import below maps or checks: the common ones, its activation and windows.
HANDLED = BASE_KEYS | {
    "hidden_act",
    "mlp_bias",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
}


#: config.json's RoPE keys that are not `RopeScaling` fields (read elsewhere or named here).
_ROPE_OTHER = frozenset({"type", "rope_type", "rope_theta", "partial_rotary_factor"})
#: The layer kinds of a ``layer_types`` list, as tjx's ``window_pattern`` entries.
_LAYER_KINDS = {"sliding_attention": "local", "full_attention": "global"}


def check_known(
    hf: Mapping[str, Any], model_type: str, known: frozenset[str], *, custom_code: bool
) -> None:
    """Refuse a config.json that asks for custom modelling code (``custom_code``: its
    ``auto_map``, which tjx never runs) or has a key outside ``known``, naming the keys.

    Raises
    ------
    ValueError
        One line naming what is refused and why.
    """
    if custom_code:
        raise ValueError(
            "config.json has auto_map (custom modelling code, which tjx never runs); its "
            f"architecture may differ from model_type {model_type!r}, so it is refused"
        )
    unknown = sorted(set(hf) - known)
    if unknown:
        raise ValueError(
            f"config.json key(s) {', '.join(unknown)} are not understood by tjx's {model_type} "
            "import and could change the model; remove them only if they change no output"
        )


def unsupported(key: str, value: Any, why: str, family: str | None = None) -> ValueError:
    """The one-line error of a config.json ``key`` whose ``value`` tjx does not compute as
    transformers does (``family``: the model type named in it, where the message needs it)."""
    where = f" for {family}" if family else ""
    return ValueError(f"config.json {key} {value!r} is not supported{where}: {why}")


def rope_from_hf(hf: Mapping[str, Any], max_len: int) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling or None) from the legacy keys or v5's ``rope_parameters``.

    transformers' defaults are filled in where a config leaves them out: the pretraining length
    (``original_max_position_embeddings``) is ``max_position_embeddings`` (for dynamic NTK that
    is the length its formula scales from), and a longrope or yarn ``factor`` is their ratio.
    """
    params = hf.get("rope_parameters") or {}
    theta = float(hf.get("rope_theta", params.get("rope_theta", 10000.0)))
    scaling = hf.get("rope_scaling")
    if scaling is None and params.get("rope_type", params.get("type", "default")) != "default":
        scaling = params
    # Read with plain RoPE too: transformers' default RoPE rotates only that share of each head.
    entry = params if scaling is None else scaling
    partial = entry.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise ValueError(f"config.json partial_rotary_factor {partial} is not supported (only 1)")
    if scaling is None:
        return theta, None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind not in ROPE_SCALINGS:
        raise ValueError(
            f"config.json rope_scaling type {kind!r} is not supported; tjx computes "
            f"{', '.join(ROPE_SCALINGS)}"
        )
    fields = {k: v for k, v in scaling.items() if k not in _ROPE_OTHER}
    if kind == "dynamic":
        fields["original_max_position_embeddings"] = max_len
    elif kind != "linear":
        fields.setdefault("original_max_position_embeddings", max_len)
    if kind in ("yarn", "longrope") and fields.get("factor") is None:
        fields["factor"] = max_len / fields["original_max_position_embeddings"]
    return theta, RopeScaling.parse({"type": kind, **fields}, "config.json rope_scaling")


def partial_rotary_factor(value: Any) -> float:
    """config.json's ``partial_rotary_factor`` (the share of each query/key head RoPE rotates,
    tjx's ``position.rope_fraction``) where a family reads it: a number in ``(0, 1]``.

    Raises
    ------
    ValueError
        Another value (0 would rotate nothing: no position at all), naming the key.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(
            "config.json partial_rotary_factor must be a number in (0, 1] (the share of each "
            f"head RoPE rotates); got {value!r}"
        )
    return float(value)


def longest_sequence(scaling: RopeScaling | None, max_len: int) -> int:
    """tjx's ``max_seq_len`` (the longest sequence it accepts) for a checkpoint whose config says
    ``max_position_embeddings = max_len``: yarn's extended context ``factor × original`` when
    longer, dynamic NTK's ``factor × max_len`` (it scales past ``max_len``), else ``max_len``."""
    if scaling is None or scaling.factor is None:
        return max_len
    if scaling.type == "yarn":
        assert scaling.original_max_position_embeddings is not None
        return max(max_len, math.ceil(scaling.factor * scaling.original_max_position_embeddings))
    if scaling.type == "dynamic":
        return math.ceil(max_len * scaling.factor)
    return max_len


def _window(
    hf: Mapping[str, Any], model_type: str, layers: int
) -> tuple[int | None, list[str] | None]:
    """(sliding_window, window_pattern) as transformers decides which layers slide: every layer
    of a mistral (or mixtral) with a window; qwen2 only with ``use_sliding_window``, layers from
    ``max_window_layers`` on; an explicit ``layer_types`` list says it per layer. The Qwen MoE
    types' windows are refused (tjx has not checked which of their layers slide)."""
    window = hf.get("sliding_window")
    if model_type in ("qwen2_moe", "qwen3_moe"):
        sliding = [t for t in hf.get("layer_types") or [] if t != "full_attention"]
        if hf.get("use_sliding_window") or sliding:
            raise ValueError(
                f"config.json use_sliding_window/layer_types: tjx's {model_type} import takes no "
                "sliding window (set use_sliding_window to false to load it with full attention)"
            )
        return None, None
    if model_type == "qwen2" and not hf.get("use_sliding_window"):
        window = None
    layer_types = hf.get("layer_types")  # its length and kinds: read with the spec
    if layer_types is not None:
        pattern = [_LAYER_KINDS[t] for t in layer_types]
    elif model_type == "qwen2":
        first = hf["max_window_layers"]
        pattern = ["global" if i < first else "local" for i in range(layers)]
    else:
        pattern = ["local"] * layers
    if "local" not in pattern or window is None:
        if "local" in pattern and layer_types is not None:
            raise ValueError("config.json layer_types has sliding layers but no sliding_window")
        return None, None
    window = int(window)
    return window, None if "global" not in pattern else pattern


def llama_fields(
    hf: Mapping[str, Any], model_type: str, *, handled: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The ``LlamaConfig`` fields every LLaMA-shaped ``config.json`` carries (the MoE types' too,
    which add ``handled`` keys of their own and map them in ``moe``), from ``hf`` as its type's
    `keys.Spec` has read it (each key checked, transformers' defaults filled in).

    Raises
    ------
    ValueError
        An unknown or unsupported key or value, named.
    """
    check_known(hf, model_type, HANDLED | HARMLESS | handled, custom_code="auto_map" in hf)
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"config.json hidden_act must be 'silu' (SwiGLU); got {act!r}")
    attn_bias, mlp_bias = bool(hf.get("attention_bias")), bool(hf.get("mlp_bias"))
    if attn_bias != mlp_bias:
        raise ValueError(
            f"config.json attention_bias {attn_bias} with mlp_bias {mlp_bias} is not supported "
            "(tjx puts biases on every projection or on none, or on q/k/v only as Qwen2)"
        )
    max_len = hf["max_position_embeddings"]
    theta, scaling = rope_from_hf(hf, max_len)
    layers = hf["num_hidden_layers"]
    window, pattern = _window(hf, model_type, layers)
    heads = hf["num_attention_heads"]
    return (
        dict(
            vocab_size=hf["vocab_size"],
            max_seq_len=longest_sequence(scaling, max_len),
            d_model=hf["hidden_size"],
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=hf["num_key_value_heads"] or heads,
            head_dim=hf["head_dim"],
            **{"attention.sliding_window": window},
            **{"attention.window_pattern": pattern},
            use_bias=attn_bias,
            tie_embeddings=hf["tie_word_embeddings"],
            **{"attention.dropout": float(hf["attention_dropout"])},
        )
        | {"position.rope_theta": theta, "position.rope_scaling": scaling}
        | {"norm.eps": float(hf["rms_norm_eps"])}
        | {"mlp.dim": hf["intermediate_size"], "init.std": float(hf["initializer_range"])}
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
    fields = llama_fields(SPECS[model_type].read(hf), model_type)
    fields["attention.qkv_bias"] = model_type == "qwen2"
    fields.update(overrides)
    return make_config(LlamaConfig, fields)


def check_llama_shape(config: LlamaConfig) -> None:
    """Raise ``ValueError`` unless ``config`` is LLaMA-shaped (what every HF Llama type is)."""
    shaped = config.attention.type == "mha" and config.position.kind == "rope"
    if not shaped or config.norm.kind != "rmsnorm":
        raise ValueError(
            "only LLaMA-shaped configs export (attention.type 'mha', position.kind 'rope', "
            f"norm.kind 'rmsnorm'); got {config.attention.type!r}, {config.position.kind!r}, "
            f"{config.norm.kind!r}"
        )
    # Other families' switches (GLM-4.5's partial RoPE too): their own model types write them.
    needs = other_switches(config) | {"position.rope_fraction": 1.0}
    wrong = {k: (setting_value(config, k), v) for k, v in needs.items()}
    wrong = {k: pair for k, pair in wrong.items() if pair[0] != pair[1]}
    if wrong:
        got = ", ".join(f"{k}={v[0]!r} (needs {v[1]!r})" for k, v in wrong.items())
        raise ValueError(
            f"this config cannot be saved as a LLaMA-family checkpoint: {got}; none of its keys "
            "says that (other model types write some of these: save_hf's model_type)"
        )
    if config.mlp.activation != "swiglu" or config.norm.position != "pre":
        raise ValueError(
            "only LLaMA-shaped configs export (mlp.activation 'swiglu', norm.position 'pre'); "
            f"got {config.mlp.activation!r}, {config.norm.position!r}"
        )


def export_type(config: LlamaConfig, model_type: str | None) -> str:
    """The HF ``model_type`` to write: the one asked for, else qwen2 with q/k/v-only biases,
    else llama. Raises ``ValueError`` when ``config`` cannot be that type."""
    qwen = config.attention.qkv_bias and not config.use_bias
    windowed = config.attention.sliding_window is not None
    chosen = model_type or ("qwen2" if qwen else "mistral" if windowed else "llama")
    if chosen not in LLAMA_TYPES:
        raise ValueError(f"model_type must be one of {LLAMA_TYPES} for a Llama; got {chosen!r}")
    if config.attention.qk_norm:
        raise ValueError(
            f"model_type {chosen!r} has no q/k norms (attention.qk_norm=True); of the HF types tjx "
            "writes only qwen3_moe has them"
        )
    check_llama_shape(config)
    qwen = chosen == "qwen2"
    if qwen != (config.attention.qkv_bias and not config.use_bias):
        raise ValueError(
            f"model_type {chosen!r} needs attention.qkv_bias={qwen} and use_bias=False; got "
            "attention.qkv_bias="
            f"{config.attention.qkv_bias}, use_bias={config.use_bias}"
        )
    if chosen == "mistral" and config.use_bias:
        raise ValueError("model_type 'mistral' has no biases; got use_bias=True")
    if windowed and chosen == "llama":
        raise ValueError(
            "model_type 'llama' has no sliding window; export a model with "
            "attention.sliding_window as 'mistral' or 'qwen2'"
        )
    if chosen == "mistral" and config.attention.window_pattern is not None:
        raise ValueError(
            "model_type 'mistral' slides the window in every layer; an attention.window_pattern "
            "exports as 'qwen2' (its layer_types)"
        )
    return chosen


def llama_config_to_hf(config: LlamaConfig, model_type: str | None = None) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as ``model_type`` (see ``export_type``)."""
    chosen = export_type(config, model_type)
    out = llama_common_to_hf(config, chosen)
    if chosen == "llama":
        out["attention_bias"] = out["mlp_bias"] = config.use_bias
    elif chosen == "mistral":
        out["sliding_window"] = config.attention.sliding_window
    else:
        out["use_sliding_window"] = config.attention.sliding_window is not None
        out["sliding_window"] = config.attention.sliding_window
        if config.attention.sliding_window is not None:
            kinds = {None: "full_attention", config.attention.sliding_window: "sliding_attention"}
            out["layer_types"] = [kinds[w] for w in config.layer_windows()]
            local = [i for i, w in enumerate(config.layer_windows()) if w is not None]
            out["max_window_layers"] = local[0]
    return out


def llama_sizes_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The sizes of a LLaMA-shaped ``config.json``: its vocabulary, widths, depth and heads."""
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.mlp.dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
    }


def llama_common_to_hf(config: LlamaConfig, chosen: str) -> dict[str, Any]:
    """The keys every LLaMA-shaped ``config.json`` of ``model_type`` ``chosen`` holds."""
    out: dict[str, Any] = {
        "architectures": [ARCHITECTURES[chosen]],
        "model_type": chosen,
        **llama_sizes_to_hf(config),
        "max_position_embeddings": max_position_to_hf(config),
        "rms_norm_eps": config.norm.eps,
        "rope_theta": config.position.rope_theta,
        "hidden_act": "silu",
        "tie_word_embeddings": config.tie_embeddings,
        "attention_dropout": config.attention.dropout,
        "initializer_range": config.init.std,
    }
    scaling = rope_scaling_to_hf(config)
    if scaling is not None:
        out["rope_scaling"] = scaling
    return out


def rope_scaling_to_hf(config: Any) -> dict[str, Any] | None:
    """The ``rope_scaling`` (or ``rope_parameters``) entry of ``config``'s RoPE scaling as
    `rope_from_hf` reads it back, None without one: ``rope_type`` and the scaling's fields, but
    dynamic NTK's original length, which transformers takes from ``max_position_embeddings``
    (written as `max_position_to_hf` says: a second one would be ignored, not read)."""
    if config.position.rope_scaling is None:
        return None
    fields = config.position.rope_scaling.as_dict()
    kind = fields.pop("type")
    if kind == "dynamic":
        fields.pop("original_max_position_embeddings")
    return {"rope_type": kind, **fields}


def max_position_to_hf(config: Any) -> int:
    """``max_position_embeddings`` to write: tjx's ``max_seq_len``, except for dynamic NTK,
    whose formula scales from it (tjx keeps that length in the scaling's original)."""
    scaling = config.position.rope_scaling
    if scaling is not None and scaling.type == "dynamic":
        assert scaling.original_max_position_embeddings is not None
        return scaling.original_max_position_embeddings
    return config.max_seq_len
