"""Llama 4 as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from tjx.nn.families.base import Family, reads_text_model, writes
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

#: Llama 4: llama4_text, and the image-text llama4 read as its text model (``language_model.*``),
#: its vision tower skipped in one line.
FAMILY = Family(
    name="llama4",
    model_types=(LLAMA4, IMAGE_TEXT),
    spec=SPEC,
    read=reads_text_model(
        llama4_config_from_hf,
        llama4_mapping,
        image_text=IMAGE_TEXT,
        text_config=llama4_text_config,
        skip=skip_vision,
    ),
    claims=is_llama4,
    write=writes(llama4_config_to_hf, llama4_mapping),
    stored_names={IMAGE_TEXT: text_name},
    # Its attention switches and the experts scaled at their input (the sigmoid_plain router is
    # the router setting's, which every MoE checkpoint fixes).
    fixed=(*LLAMA4_SWITCHES, "moe.router_scales_input"),
)
