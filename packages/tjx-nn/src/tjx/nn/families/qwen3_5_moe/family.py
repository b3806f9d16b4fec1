"""Qwen3.5-MoE as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.families.base import Family, MappingOf, writes
from tjx.nn.families.qwen3_5_moe.hf import (
    FUSED,
    QWEN3_5_MOE,
    SPEC,
    folder_layout,
    fused_experts,
    is_qwen3_5_moe,
    qwen3_5_moe_config_from_hf,
    qwen3_5_moe_config_to_hf,
    qwen3_5_moe_mapping,
)
from tjx.nn.hf.image_text import text_config
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.qwen3_5 import IMAGE_TEXT_KEYS, skip_modules, text_name

#: The image-text model's ``model_type`` (``Qwen3_5MoeForConditionalGeneration``, the published
#: folders): Qwen3.5's layout (``text_config``, ``model.language_model.*``, ``model.visual.*``).
IMAGE_TEXT = "qwen3_5_moe"


def _read(
    hf: Mapping[str, Any], model_type: str, overrides: Mapping[str, Any]
) -> tuple[LlamaConfig, MappingOf]:
    """A qwen3_5_moe_text folder's config and mapping, or an image-text one's text model; the
    multi-token-prediction module and the vision tower skipped in one line each."""
    image_text = model_type == IMAGE_TEXT
    fused = bool(hf.get(FUSED))
    hf = {k: v for k, v in hf.items() if k != FUSED}
    if image_text:
        hf = text_config(
            hf, image_text=IMAGE_TEXT, text=QWEN3_5_MOE, keys=IMAGE_TEXT_KEYS, tied=False, spec=SPEC
        )
    config = qwen3_5_moe_config_from_hf(hf, **overrides)

    def mapping() -> HFMapping:
        tensors = qwen3_5_moe_mapping(config)
        if fused:  # the published layout (`fused_experts`)
            tensors = fused_experts(tensors, config)
        return replace(tensors, ignored=skip_modules(tensors.ignored, image_text))

    return config, mapping


#: Qwen3.5-MoE: qwen3_5_moe_text, and the image-text qwen3_5_moe read as its text model.
FAMILY = Family(
    name="qwen3_5_moe",
    model_types=(QWEN3_5_MOE, IMAGE_TEXT),
    spec=SPEC,
    read=_read,
    claims=is_qwen3_5_moe,
    write=writes(qwen3_5_moe_config_to_hf, qwen3_5_moe_mapping),
    stored_names={IMAGE_TEXT: text_name},
    layout=folder_layout,
    saves_as_read=True,  # its switches are Qwen3-Next's, which save_hf writes unless asked
    reads_mtp=True,  # Qwen3.5's module (`tjx.nn.hf.qwen3_5.mtp_fields`)
)
