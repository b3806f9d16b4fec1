"""Kimi-K2 and Kimi-K2.5's text model as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.families.base import Family, MappingOf
from tjx.nn.families.kimi_k25.hf import (
    IMAGE_TEXT,
    KIMI_K2,
    SPEC,
    TEXT,
    kimi_k2_text_config,
    kimi_k25_text_config,
    skip_vision,
    text_name,
)
from tjx.nn.hf.deepseek import deepseek_config_from_hf, mtp_layers
from tjx.nn.hf.deepseek_tensors import deepseek_mapping
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.mtp_tensors import stored_depths


def _read(
    hf: Mapping[str, Any], model_type: str, overrides: Mapping[str, Any]
) -> tuple[LlamaConfig, MappingOf]:
    """A kimi_k2 folder as DeepSeek-V3; a kimi_k25 one's text model, its vision tower skipped in
    one line and its multi-token-prediction layers too (transformers' image-text model builds
    none)."""
    kimi_k2 = model_type == KIMI_K2
    text = kimi_k2_text_config(hf) if kimi_k2 else kimi_k25_text_config(hf)
    config = deepseek_config_from_hf(
        text, **(overrides if kimi_k2 else {"mtp.depths": 0, **overrides})
    )
    interleaved = bool(text.get("rope_interleave", True))
    mtp = stored_depths(config, mtp_layers(text))

    def mapping() -> HFMapping:
        tensors = deepseek_mapping(config, TEXT, interleaved=interleaved, mtp=mtp)
        return tensors if kimi_k2 else replace(tensors, ignored=skip_vision(tensors.ignored))

    return config, mapping


def _claims(config: LlamaConfig, model_type: str | None) -> bool:
    """Never by its switches (a Kimi model is a DeepSeek-V3 one, saved as ``deepseek_v3``);
    asked for by name, refused in one line."""
    if model_type in (IMAGE_TEXT, KIMI_K2):
        raise ValueError(
            f"tjx saves Kimi-K2 and Kimi-K2.5's text model as model_type {TEXT!r} "
            f"(DeepseekV3ForCausalLM, which transformers reads); got {model_type!r}"
        )
    return False


def _write(config: LlamaConfig) -> tuple[dict[str, Any], HFMapping]:
    raise AssertionError("kimi_k25 claims no config")  # pragma: no cover


#: Kimi-K2 (kimi_k2, read as deepseek_v3) and Kimi-K2.5's image-text folders read as their text
#: model (``language_model.*``).
FAMILY = Family(
    name="kimi_k25",
    model_types=(KIMI_K2, IMAGE_TEXT),
    spec=SPEC,
    read=_read,
    claims=_claims,
    write=_write,
    stored_names={IMAGE_TEXT: text_name},
    # The latent norms' own epsilon (Kimi-K2.5's rms_norm_eps is 1e-5, transformers' latent
    # norms keep 1e-6): a checkpoint fixes it as it fixes the rest of its MLA.
    fixed=("mla.latent_norm_eps",),
    reads_mtp=True,  # DeepSeek-V3's layers (`stored_depths`)
)
