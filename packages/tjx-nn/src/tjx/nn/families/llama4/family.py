"""Llama 4 as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.families.base import Family, writes
from tjx.nn.families.llama4.hf import LLAMA4
from tjx.nn.families.llama4.hf_image_text import (
    IMAGE_TEXT,
    llama4_text_config,
    skip_vision,
    text_name,
)
from tjx.nn.families.llama4.hf_read import SPEC, llama4_config_from_hf
from tjx.nn.families.llama4.hf_tensors import llama4_mapping
from tjx.nn.families.llama4.hf_write import is_llama4, llama4_config_to_hf
from tjx.nn.family_config import LLAMA4_SWITCHES
from tjx.nn.hf.mapping import HFMapping


def _read(
    hf: Mapping[str, Any], model_type: str, overrides: Mapping[str, Any]
) -> tuple[LlamaConfig, HFMapping]:
    """A llama4_text folder's config and mapping; an image-text one's text model, its vision
    tower skipped in one line."""
    if model_type != IMAGE_TEXT:
        config = llama4_config_from_hf(hf, **overrides)
        return config, llama4_mapping(config)
    config = llama4_config_from_hf(llama4_text_config(hf), **overrides)
    mapping = llama4_mapping(config)
    return config, replace(mapping, ignored=skip_vision(mapping.ignored))


#: Llama 4: llama4_text, and the image-text llama4 read as its text model (``language_model.*``).
FAMILY = Family(
    name="llama4",
    model_types=(LLAMA4, IMAGE_TEXT),
    spec=SPEC,
    read=_read,
    claims=is_llama4,
    write=writes(llama4_config_to_hf, llama4_mapping),
    stored_names={IMAGE_TEXT: text_name},
    # Its attention switches and the experts scaled at their input (the sigmoid_plain router is
    # the router setting's, which every MoE checkpoint fixes).
    fixed=(*LLAMA4_SWITCHES, "moe.router_scales_input"),
)
