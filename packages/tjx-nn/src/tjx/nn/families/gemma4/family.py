"""Gemma 4 as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from tjx.nn.families.base import Family, reads_text_model, writes
from tjx.nn.families.gemma4.hf import GEMMA4, OWN
from tjx.nn.families.gemma4.hf_image_text import IMAGE_TEXT, gemma4_image_text_config, skip_towers
from tjx.nn.families.gemma4.hf_read import SPEC, gemma4_config_from_hf
from tjx.nn.families.gemma4.hf_tensors import gemma4_mapping
from tjx.nn.families.gemma4.hf_write import gemma4_config_to_hf, is_gemma4
from tjx.nn.hf.qwen3_5 import text_name

#: Gemma 4: gemma4_text, and the image-text gemma4 read as its text model
#: (``model.language_model.*``), its vision and audio towers skipped in one line.
FAMILY = Family(
    name="gemma4",
    model_types=(GEMMA4, IMAGE_TEXT),
    spec=SPEC,
    read=reads_text_model(
        gemma4_config_from_hf,
        gemma4_mapping,
        image_text=IMAGE_TEXT,
        text_config=gemma4_image_text_config,
        skip=skip_towers,
    ),
    claims=is_gemma4,
    write=writes(gemma4_config_to_hf, gemma4_mapping),
    stored_names={IMAGE_TEXT: text_name},
    fixed=OWN,
)
