"""Gemma 4 as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.families.base import Family, writes
from tjx.nn.families.gemma4.hf import GEMMA4, OWN
from tjx.nn.families.gemma4.hf_image_text import IMAGE_TEXT, gemma4_image_text_config, skip_towers
from tjx.nn.families.gemma4.hf_read import SPEC, gemma4_config_from_hf
from tjx.nn.families.gemma4.hf_tensors import gemma4_mapping
from tjx.nn.families.gemma4.hf_write import gemma4_config_to_hf, is_gemma4
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


#: Gemma 4: gemma4_text, and the image-text gemma4 read as its text model
#: (``model.language_model.*``).
FAMILY = Family(
    name="gemma4",
    model_types=(GEMMA4, IMAGE_TEXT),
    spec=SPEC,
    read=_read,
    claims=is_gemma4,
    write=writes(gemma4_config_to_hf, gemma4_mapping),
    stored_names={IMAGE_TEXT: text_name},
    fixed=OWN,
)
