"""MiniMax-M2 as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.families.base import Family
from tjx.nn.families.minimax_m2.hf import MINIMAX_M2
from tjx.nn.families.minimax_m2.hf_read import SPEC, minimax_m2_config_from_hf
from tjx.nn.families.minimax_m2.hf_tensors import minimax_m2_mapping
from tjx.nn.families.minimax_m2.hf_write import is_minimax_m2, minimax_m2_config_to_hf
from tjx.nn.hf.mapping import HFMapping


def _read(
    hf: Mapping[str, Any], model_type: str, overrides: Mapping[str, Any]
) -> tuple[LlamaConfig, HFMapping]:
    config = minimax_m2_config_from_hf(hf, **overrides)
    return config, minimax_m2_mapping(config)


def _write(config: LlamaConfig) -> tuple[dict[str, Any], HFMapping]:
    return minimax_m2_config_to_hf(config), minimax_m2_mapping(config)


#: MiniMax-M2 (M2, M2.1, M2.5): its switches are other families' parts (the sigmoid router, the
#: whole-projection q/k norm, the partial RoPE), which every checkpoint of them already fixes.
FAMILY = Family(
    name="minimax_m2",
    model_types=(MINIMAX_M2,),
    spec=SPEC,
    read=_read,
    claims=is_minimax_m2,
    write=_write,
)
