"""Where an MoE block's experts run: here, or on the devices of an ``expert`` mesh axis.

tjx-nn knows logical axes, not meshes; tjx-parallel knows meshes, not models. So the experts'
placement is handed in: ``tjx.parallel.expert_parallel(mesh, rules)`` gives an object with

``run(fn, x, experts, weights, w, w_names) -> (y, dropped)``
    ``fn(x, experts, weights, w, comm) -> (y, dropped)`` is the MoE block's computation of its
    routed experts (``dispatch.dropless`` or ``capacity``); ``x`` ``[b, s, d]`` the tokens,
    ``experts``/``weights`` ``[b, s, k]`` the router's choices, ``w`` every expert's
    ``ExpertWeights`` and ``w_names`` their logical axes (``moe.WEIGHT_NAMES``). It runs ``fn``
    on each device's tokens with that device's experts under ``shard_map``, with an
    ``ExpertComm`` for the all-to-all, and returns the outputs ``[b, s, d]`` and the dropped
    count summed over the devices,

and a model call traced inside ``expert_parallel_scope(ep)`` uses it (the trainer wraps its loss
function's body). Outside a scope every expert runs where XLA puts it (one device, or whatever
the parameters' shardings give).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_CURRENT: contextvars.ContextVar[Any] = contextvars.ContextVar("tjx_expert_parallel", default=None)


@contextlib.contextmanager
def expert_parallel_scope(ep: Any) -> Iterator[None]:
    """MoE blocks traced inside run their experts through ``ep`` (None: locally).

    Parameters
    ----------
    ep : object or None
        What ``tjx.parallel.expert_parallel(mesh, rules)`` returns (see the module's docstring).
    """
    token = _CURRENT.set(ep)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_expert_parallel() -> Any:
    """The ``ep`` of the innermost `expert_parallel_scope`, or None."""
    return _CURRENT.get()
