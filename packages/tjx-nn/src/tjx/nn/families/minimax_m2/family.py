"""MiniMax-M2 as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from tjx.nn.families.base import Family, reads, writes
from tjx.nn.families.minimax_m2.hf import MINIMAX_M2
from tjx.nn.families.minimax_m2.hf_read import SPEC, minimax_m2_config_from_hf
from tjx.nn.families.minimax_m2.hf_tensors import minimax_m2_mapping
from tjx.nn.families.minimax_m2.hf_write import is_minimax_m2, minimax_m2_config_to_hf

#: MiniMax-M2 (M2, M2.1, M2.5): its switches are other families' parts (the sigmoid router, the
#: whole-projection q/k norm, the partial RoPE), which every checkpoint of them already fixes.
FAMILY = Family(
    name="minimax_m2",
    model_types=(MINIMAX_M2,),
    spec=SPEC,
    read=reads(minimax_m2_config_from_hf, minimax_m2_mapping),
    claims=is_minimax_m2,
    write=writes(minimax_m2_config_to_hf, minimax_m2_mapping),
)
