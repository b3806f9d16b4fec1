"""A jit wrapper for train steps: explicit in/out shardings and buffer donation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

__all__ = ["jit_train_step"]


def jit_train_step(
    fn: Callable[..., Any],
    in_shardings: Any,
    out_shardings: Any,
    donate_argnums: int | Sequence[int] = (),
    *,
    static_argnums: int | Sequence[int] = (),
) -> Any:
    """``jax.jit`` a train step with fixed shardings.

    Parameters
    ----------
    fn : callable
        ``step(state, batch, ...) -> (state, metrics)``; pure.
    in_shardings, out_shardings : pytree of Sharding (or prefixes, or ``None`` = let XLA choose)
        Usually ``(state_shardings(...), batch_sharding(mesh))`` in and ``(state_shardings(...),
        None)`` out: the state keeps its layout step after step, so nothing is resharded.
    donate_argnums : int or sequence of int
        Arguments whose buffers XLA may reuse for outputs — pass the state (``0``) so the old
        params and optimizer state are not kept alive beside the new ones (halves peak memory).
        The donated arrays are invalid after the call.
    static_argnums : int or sequence of int
        Passed to ``jax.jit``.

    Returns
    -------
    The jitted function (``.lower(...).compile()`` works on it, e.g. for ``memory_analysis()``).
    """
    donate = (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums)
    static = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    for name, nums in (("donate_argnums", donate), ("static_argnums", static)):
        if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in nums):
            raise ValueError(f"{name} must be non-negative ints, got {nums}")
    if set(donate) & set(static):
        raise ValueError(
            f"an argument cannot be both donated and static: {set(donate) & set(static)}"
        )
    return jax.jit(
        fn,
        in_shardings=in_shardings,
        out_shardings=out_shardings,
        donate_argnums=donate,
        static_argnums=static,
    )
