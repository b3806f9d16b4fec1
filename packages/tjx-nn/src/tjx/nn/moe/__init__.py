"""Mixture-of-experts layers: the block, its settings, its computation, where its experts run.

Modules: ``layer`` (`MoE`: router, routed and shared experts, `MoEStats`, `router_penalty`),
``config`` (the MoE settings' checks, `moe_layers`, expert widths and capacity), ``dispatch``
(tokens to their experts and back as grouped matmuls: dropless or capacity) and ``parallel``
(`expert_parallel_scope`, the hook tjx-parallel's expert parallelism sets). The router
functions are ``tjx.nn.routers``. The package serves the names below; any other name of its
modules is imported from the module (``layer``'s from ``tjx.nn.moe.layer``).
"""

from __future__ import annotations

from tjx.core.lazy import lazy_api
from tjx.nn.moe.config import moe_layers
from tjx.nn.moe.parallel import current_expert_parallel, expert_parallel_scope

# The layer is built from the model config, whose ``moe`` section is this package's ``config``:
# loading the layer with the package would make reading the section (configs does) need the
# config it is part of. Its names load on first access instead.
with lazy_api(globals()):
    from tjx.nn.moe.layer import (
        WEIGHT_NAMES,
        ExpertDense,
        Experts,
        MoE,
        MoEStats,
        Router,
        router_penalty,
    )

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
