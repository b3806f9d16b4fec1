"""Mixture-of-experts layers: the block, its settings, its computation, where its experts run.

Modules: ``layer`` (`MoE`: router, routed and shared experts, `MoEStats`, `router_penalty`),
``config`` (the MoE settings' checks, `moe_layers`, expert widths and capacity), ``dispatch``
(tokens to their experts and back as grouped matmuls: dropless or capacity) and ``parallel``
(`expert_parallel_scope`, the hook tjx-parallel's expert parallelism sets). The router
functions are ``tjx.nn.routers``. Before tjx-nn 0.20 these were ``tjx.nn.moe`` (now ``layer``)
and ``tjx.nn.moe_<name>``.
"""

from __future__ import annotations

from typing import Any

from tjx.nn.moe import layer
from tjx.nn.moe.config import moe_layers
from tjx.nn.moe.layer import (
    WEIGHT_NAMES,
    ExpertDense,
    Experts,
    MoE,
    MoEStats,
    Router,
    router_penalty,
)
from tjx.nn.moe.parallel import current_expert_parallel, expert_parallel_scope
from tjx.nn.moved import former_name

__all__ = [
    "WEIGHT_NAMES",
    "ExpertDense",
    "Experts",
    "MoE",
    "MoEStats",
    "Router",
    "current_expert_parallel",
    "expert_parallel_scope",
    "moe_layers",
    "router_penalty",
]


def __getattr__(name: str) -> Any:
    # The names the single module tjx.nn.moe held before 0.20 besides these (for one release).
    return former_name(__name__, layer, name)
