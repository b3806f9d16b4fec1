"""Gemma 4 as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.families.base import Family
from tjx.nn.families.gemma4.hf import (
    GEMMA4,
    IMAGE_TEXT,
    SPEC,
    gemma4_config_from_hf,
    gemma4_config_to_hf,
    gemma4_image_text_config,
    gemma4_mapping,
    is_gemma4,
    skip_towers,
)
from tjx.nn.families.gemma4.options import FLAT_GEMMA4_KEYS
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.qwen3_5 import text_name


def _read(
    hf: Mapping[str, Any], model_type: str, overrides: Mapping[str, Any]
) -> tuple[LlamaConfig, HFMapping]:
    """A gemma4_text folder's config and mapping; an image-text one's text model, its vision and
    audio towers skipped in one line."""
    image_text = model_type == IMAGE_TEXT
    config = gemma4_config_from_hf(gemma4_image_text_config(hf) if image_text else hf, **overrides)
    mapping = gemma4_mapping(config)
    if image_text:
        mapping = replace(mapping, ignored=skip_towers(mapping.ignored))
    return config, mapping


def _write(config: LlamaConfig) -> tuple[dict[str, Any], HFMapping]:
    return gemma4_config_to_hf(config), gemma4_mapping(config)


#: Gemma 4: gemma4_text, and the image-text gemma4 read as its text model
#: (``model.language_model.*``).
FAMILY = Family(
    name="gemma4",
    model_types=(GEMMA4, IMAGE_TEXT),
    spec=SPEC,
    read=_read,
    claims=is_gemma4,
    write=_write,
    stored_names={IMAGE_TEXT: text_name},
    fixed=(
        *(f"gemma4.{name}" for name in FLAT_GEMMA4_KEYS),
        "moe.beside_mlp",
        "moe.router_input_norm",
        "moe.router_expert_scale",
    ),
)
