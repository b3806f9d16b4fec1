"""DeepSeek-V3.2 as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.families.base import Family
from tjx.nn.families.deepseek_v32.hf import (
    DEEPSEEK_V32,
    OWN,
    SPEC,
    deepseek_v32_config_to_hf,
    deepseek_v32_mapping,
    is_deepseek_v32,
    read,
)
from tjx.nn.hf.mapping import HFMapping


def _read(
    hf: Mapping[str, Any], model_type: str, overrides: Mapping[str, Any]
) -> tuple[LlamaConfig, HFMapping]:
    return read(hf, overrides)


def _write(config: LlamaConfig) -> tuple[dict[str, Any], HFMapping]:
    return deepseek_v32_config_to_hf(config), deepseek_v32_mapping(config)


#: DeepSeek-V3.2: deepseek_v32 (DeepSeek-V3 with DeepSeek Sparse Attention).
FAMILY = Family(
    name="deepseek_v32",
    model_types=(DEEPSEEK_V32,),
    spec=SPEC,
    read=_read,
    claims=is_deepseek_v32,
    write=_write,
    fixed=OWN,
)
