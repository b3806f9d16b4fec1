"""The family folders the shared code knows (`FAMILIES`), and its look-ups in them.

Adding a family: its folder with a ``family.py`` declaring ``FAMILY`` (`tjx.nn.families.base`),
and one line here.
"""

from __future__ import annotations

from tjx.nn.families.base import Family
from tjx.nn.families.deepseek_v32.family import FAMILY as DEEPSEEK_V32
from tjx.nn.families.gemma4.family import FAMILY as GEMMA4
from tjx.nn.families.kimi_k25.family import FAMILY as KIMI_K25
from tjx.nn.families.llama4.family import FAMILY as LLAMA4
from tjx.nn.families.minimax_m2.family import FAMILY as MINIMAX_M2
from tjx.nn.families.qwen3_5_moe.family import FAMILY as QWEN3_5_MOE

#: Every family folder, in the order ``save_hf`` asks them whether they claim a config (the first
#: that does saves it).
FAMILIES: tuple[Family, ...] = (LLAMA4, GEMMA4, DEEPSEEK_V32, KIMI_K25, QWEN3_5_MOE, MINIMAX_M2)


def family_of(model_type: str | None) -> Family | None:
    """The family that reads ``config.json`` model type ``model_type``, or None."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def saved_as(read_from: str | None) -> str | None:
    """The ``model_type`` ``save_hf`` writes by default for a model read from a checkpoint of
    ``read_from``: its family's text model type where the family saves as read
    (`Family.saves_as_read`), else None (``save_hf``'s default: the config's switches say)."""
    family = family_of(read_from)
    return family.model_types[0] if family is not None and family.saves_as_read else None


def model_types() -> tuple[str, ...]:
    """Every model type the family folders read."""
    return tuple(t for f in FAMILIES for t in f.model_types)


def fixed_fields() -> tuple[str, ...]:
    """The config fields the families' switches add to what a checkpoint fixes."""
    return tuple(name for f in FAMILIES for name in f.fixed)
