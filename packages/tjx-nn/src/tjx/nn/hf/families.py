"""Hugging Face ``config.json`` of Qwen3, OLMo 2 and 3, Phi-3 and Gemma 2/3 ↔ ``LlamaConfig``.

Each family is the LLaMA decoder with a few switches (:mod:`tjx.nn.family_config`): Qwen3 adds
per-head q/k RMSNorms; OLMo 2 moves the norms onto the sublayers' outputs and normalises q and k
over the whole projection; OLMo 3 is OLMo 2 with sliding-window layers (``layer_types``; by default
three sliding layers, then a full one) and a RoPE entry per layer type; Phi-3 computes exactly what
Llama does (it fuses q/k/v and gate/up in its tensors only, :mod:`tjx.nn.hf.family_tensors`; its
LongRoPE scaling: :mod:`tjx.nn.hf.phi3`); Gemma 2 and 3 are in :mod:`tjx.nn.hf.gemma`.
As for the Llama family (``config``), every key is mapped, checked, or on the allow-list of
keys that change no number; anything else, and any value tjx cannot honour, is refused in one line
naming it (what is not honoured yet: :mod:`tjx.nn.hf.family_base`).

On export the config's switches choose the family (sandwich norms: Gemma, 3 with q/k norms; output
norms: OLMo 2, or 3 with a sliding window; q/k norms alone: Qwen3); Phi-3 is written only when
asked for by name, since a Llama computes the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig, make_config, setting_value
from tjx.nn.hf.config import QWEN_WINDOWS
from tjx.nn.hf.family_base import (
    LLAMA_SWITCHES,
    base_fields,
    check_exportable,
    check_keys,
    check_switches,
    common_to_hf,
    layer_types,
    rope_theta,
    windows,
)
from tjx.nn.hf.gemma import (
    GEMMA_SWITCHES,
    GEMMA_TYPES,
    gemma_config_to_hf,
    gemma_fields,
    gemma_type,
)
from tjx.nn.hf.keys import ATTENTION_KINDS, BASE, Spec, fraction, layer_list, positive, size, text
from tjx.nn.hf.phi3 import phi3_rope, phi3_rope_to_hf

FAMILY_TYPES = ("qwen3", "olmo2", "olmo3", "phi3", *GEMMA_TYPES)
ARCHITECTURES = {
    "qwen3": "Qwen3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "olmo3": "Olmo3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}
#: Each family's keys beyond ``family_base.BASE_KEYS``.
FAMILY_KEYS = {
    "qwen3": frozenset(
        {"hidden_act", "sliding_window", "use_sliding_window", "max_window_layers", "layer_types"}
    ),
    "olmo2": frozenset({"hidden_act"}),
    "olmo3": frozenset({"hidden_act", "sliding_window", "layer_types"}),
    # transformers' Phi-3 never reads embd_pdrop; resid_pdrop becomes tjx's dropout.
    "phi3": frozenset(
        {
            "hidden_act",
            "sliding_window",
            "resid_pdrop",
            "embd_pdrop",
            "original_max_position_embeddings",  # longrope's pretraining length (phi3)
        }
    ),
}
#: The keys each family's import reads (`keys.Spec`), with transformers 5.24's defaults.
_OLMO2 = BASE.but("Olmo2Config", hidden_act=text("silu"), rms_norm_eps=positive(1e-5))
SPECS: dict[str, Spec] = {
    "qwen3": BASE.but(
        "Qwen3Config",
        hidden_act=text("silu"),
        **QWEN_WINDOWS,
        num_key_value_heads=size(32, null=None),
        head_dim=size(128),
        max_position_embeddings=size(32768),
    ),
    "olmo2": _OLMO2,
    "olmo3": _OLMO2.but(
        "Olmo3Config",
        sliding_window=size(4096, null=None),
        layer_types=layer_list(ATTENTION_KINDS),
    ),
    "phi3": BASE.but(
        "Phi3Config",
        hidden_act=text("silu"),
        max_position_embeddings=size(4096),
        original_max_position_embeddings=size(4096),
        rms_norm_eps=positive(1e-5),
        resid_pdrop=fraction(0.0),
        embd_pdrop=fraction(0.0),
        sliding_window=size(None, null=None),
    ),
}
#: The switches each family computes with (an export checks that the config has these).
SWITCHES: dict[str, dict[str, Any]] = {
    "llama": LLAMA_SWITCHES,
    "phi3": LLAMA_SWITCHES,
    "qwen3": {**LLAMA_SWITCHES, "attention.qk_norm": True},
    "olmo2": {
        **LLAMA_SWITCHES,
        "norm.position": "output",
        "attention.qk_norm": True,
        "attention.qk_norm_scope": "projection",
    },
    **GEMMA_SWITCHES,
}
SWITCHES["olmo3"] = SWITCHES["olmo2"]
#: OLMo 3's layers when ``layer_types`` is left out (transformers' default): every fourth is full.
OLMO3_FULL_EVERY = 4
OLMO3_LAYER_TYPES = ("sliding_attention", "full_attention")


def _sliding(hf: Mapping[str, Any], model_type: str, layers: int) -> list[bool]:
    """Which layers slide, as transformers decides: an explicit ``layer_types``; else Qwen3's
    layers from ``max_window_layers`` on under ``use_sliding_window``; Phi-3's every layer."""
    types = hf.get("layer_types")  # its length and kinds: read with the spec
    if types is not None:
        return [t == "sliding_attention" for t in types]
    if model_type == "qwen3":
        if not hf["use_sliding_window"]:
            return [False] * layers
        first = hf["max_window_layers"]
        return [i >= first for i in range(layers)]
    if model_type == "olmo3":
        return [(i + 1) % OLMO3_FULL_EVERY != 0 for i in range(layers)]
    # phi3: its sliding_window holds for every layer (left out or null: none).
    return [hf.get("sliding_window") is not None] * layers


def family_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` from a ``config.json`` dict of one of ``FAMILY_TYPES`` (``overrides``
    win).

    Raises
    ------
    ValueError
        An unknown or unsupported key or value, named.
    """
    model_type = str(hf.get("model_type"))
    if model_type in GEMMA_TYPES:
        return make_config(LlamaConfig, {**gemma_fields(hf, model_type), **overrides})
    if model_type not in FAMILY_TYPES:
        raise ValueError(
            f"config.json model_type must be one of {FAMILY_TYPES}; got {model_type!r}"
        )
    hf = SPECS[model_type].read(hf)
    check_keys(hf, model_type, FAMILY_KEYS[model_type])
    act = hf["hidden_act"]
    if act != "silu":
        raise ValueError(f"config.json hidden_act must be 'silu' (SwiGLU); got {act!r}")
    fields = base_fields(hf)
    if model_type == "phi3":
        fields["position.rope_theta"], fields["position.rope_scaling"] = phi3_rope(hf)
    elif model_type == "olmo3":
        fields["position.rope_theta"] = _olmo3_theta(hf)
    else:
        fields["position.rope_theta"] = rope_theta(hf, model_type)
    if model_type in ("qwen3", "phi3", "olmo3"):
        fields |= windows(hf.get("sliding_window"), _sliding(hf, model_type, fields["num_layers"]))
    if model_type == "phi3":
        fields["dropout"] = float(hf["resid_pdrop"])
    return make_config(LlamaConfig, {**fields, **SWITCHES[model_type], **overrides})


def _olmo3_theta(hf: Mapping[str, Any]) -> float:
    """OLMo 3's RoPE base: ``rope_parameters`` holds one entry per layer type (transformers 5;
    a legacy ``rope_theta`` serves both); tjx rotates every layer at one base, so both entries
    must agree, and (as for the other families) without a scaling."""
    params = hf.get("rope_parameters") or {}
    if hf.get("rope_scaling") or not set(params) <= set(OLMO3_LAYER_TYPES):
        return rope_theta(hf, "olmo3")  # one flat entry (or a scaling: refused there)
    thetas = {t: rope_theta(hf, "olmo3", params.get(t) or {}) for t in OLMO3_LAYER_TYPES}
    legacy = hf.get("rope_theta")
    if legacy is not None:
        thetas = {t: float(legacy) for t in thetas}
    if len(set(thetas.values())) != 1:
        raise ValueError(
            "config.json rope_parameters: olmo3's sliding and full layers at different RoPE "
            f"bases ({thetas}) are not supported; tjx rotates every OLMo 3 layer at one base"
        )
    return thetas["full_attention"]


def family_of(config: LlamaConfig) -> str:
    """The HF family whose switches ``config`` has (``"llama"`` when it has none of them)."""
    if config.norm.position == "sandwich":
        return gemma_type(config)
    if config.norm.position == "output":
        return "olmo2" if config.attention.sliding_window is None else "olmo3"
    return "qwen3" if config.attention.qk_norm else "llama"


def export_family(config: LlamaConfig, model_type: str | None) -> str | None:
    """The ``model_type`` to save ``config`` as: the one asked for, else its switches' family;
    None leaves a switchless config to the Llama family's own choice (``config``). Raises
    ``ValueError`` when ``config`` has switches that type does not compute, naming them."""
    family = family_of(config)
    chosen = model_type or family
    want = SWITCHES.get(chosen, LLAMA_SWITCHES)  # llama, mistral, qwen2: no switch
    fits = all(setting_value(config, k) == v for k, v in SWITCHES[family].items())
    hint = f"save as model_type={family!r}, or change the config"
    if not fits:  # e.g. rope_local_theta without Gemma's norms: no family computes it
        hint = "no Hugging Face family tjx writes computes that; change the config"
    check_switches(config, chosen, want, hint)
    return None if model_type is None and family == "llama" else chosen


def family_config_to_hf(config: LlamaConfig, model_type: str) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as one of ``FAMILY_TYPES``.

    Raises
    ------
    ValueError
        ``config`` computes something ``model_type`` cannot express (named).
    """
    check_exportable(config, rope_types=("longrope",) if model_type == "phi3" else ())
    check_switches(config, model_type, SWITCHES[model_type], "change the config")
    if model_type in GEMMA_TYPES:
        return gemma_config_to_hf(config, model_type)
    out = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        **common_to_hf(config),
        "hidden_act": "silu",
    }
    if config.attention.sliding_window is not None and model_type == "olmo2":
        raise ValueError(
            "model_type 'olmo2' has no sliding window; got attention.sliding_window set (save it "
            "as model_type='olmo3')"
        )
    if model_type == "olmo3":
        entry = {"rope_type": "default", "rope_theta": config.position.rope_theta}
        del out["rope_theta"]
        return out | {
            "attention_bias": False,
            # No window means every layer full; transformers' Olmo3 needs a number anyway.
            "sliding_window": config.attention.sliding_window or config.max_seq_len,
            "layer_types": layer_types(config),
            "rope_parameters": {t: dict(entry) for t in OLMO3_LAYER_TYPES},
        }
    if model_type == "phi3":
        if config.attention.window_pattern is not None:
            raise ValueError(
                "model_type 'phi3' slides the window in every layer; got attention.window_pattern "
                f"{list(config.attention.window_pattern)}"
            )
        return out | {
            "resid_pdrop": config.dropout,
            "embd_pdrop": 0.0,
            "sliding_window": config.attention.sliding_window,
            **phi3_rope_to_hf(config),
        }
    out["attention_bias"] = False
    if model_type == "qwen3":
        windowed = config.attention.sliding_window is not None
        out |= {"use_sliding_window": windowed, "sliding_window": config.attention.sliding_window}
        if windowed:
            # transformers reads layer_types when given; max_window_layers says the same for
            # the older reading (the first sliding layer).
            out["layer_types"] = layer_types(config)
            out["max_window_layers"] = out["layer_types"].index("sliding_attention")
    return out
