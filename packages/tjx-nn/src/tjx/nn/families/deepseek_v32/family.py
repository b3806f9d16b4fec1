"""DeepSeek-V3.2 as the shared code sees it (`FAMILY`)."""

from __future__ import annotations

from tjx.nn.families.base import Family, writes
from tjx.nn.families.deepseek_v32.hf import (
    DEEPSEEK_V32,
    OWN,
    SPEC,
    deepseek_v32_config_to_hf,
    deepseek_v32_mapping,
    is_deepseek_v32,
    read,
)

#: DeepSeek-V3.2: deepseek_v32 (DeepSeek-V3 with DeepSeek Sparse Attention).
FAMILY = Family(
    name="deepseek_v32",
    model_types=(DEEPSEEK_V32,),
    spec=SPEC,
    read=read,
    claims=is_deepseek_v32,
    write=writes(deepseek_v32_config_to_hf, deepseek_v32_mapping),
    fixed=OWN,
    reads_mtp=True,  # DeepSeek-V3's layers (`stored_depths`)
)
