"""The GPT-2 family's published sizes, as `GPT2Config` presets."""

from __future__ import annotations

from typing import Any

from tjx.nn.configs import GPT2Config

_GPT2_PRESETS = {
    "small": {"d_model": 768, "num_layers": 12, "num_heads": 12},
    "medium": {"d_model": 1024, "num_layers": 24, "num_heads": 16},
    "large": {"d_model": 1280, "num_layers": 36, "num_heads": 20},
    "xl": {"d_model": 1600, "num_layers": 48, "num_heads": 25},
}


def gpt2_config(name: str = "small", **overrides: Any) -> GPT2Config:
    """The GPT-2 preset ``name`` (``small``/``medium``/``large``/``xl``) with ``overrides``.

    Parameter counts equal Hugging Face's: 124,439,808 / 354,823,168 / 774,030,080 /
    1,557,611,200 (tied embeddings, vocab 50257, 1024 positions).

    Parameters
    ----------
    name : {"small", "medium", "large", "xl"}
        The preset.
    **overrides
        Any ``GPT2Config`` field (``max_seq_len``, ``scan_layers``, ``precision`` …).

    Returns
    -------
    GPT2Config
    """
    if name not in _GPT2_PRESETS:
        raise ValueError(f"gpt2_config name must be one of {tuple(_GPT2_PRESETS)}; got {name!r}")
    fields: dict[str, Any] = dict(vocab_size=50257, max_seq_len=1024, **_GPT2_PRESETS[name])
    fields.update(overrides)
    return GPT2Config(**fields)
