"""Sorting a compiled step's operations into matrix products and the rest."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from experiments.nanogpt.side_by_side import Shape
from tjx_tools.nanogpt.where import matmul_instructions, where_time_goes


def _hlo(fn: Any, *shapes: tuple[int, ...]) -> str:
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    return jax.jit(fn).lower(*args).compile().as_text() or ""


def test_a_product_is_found_and_elementwise_work_is_not() -> None:
    with_dot = _hlo(lambda x, w: jnp.tanh(x @ w) + 1.0, (64, 32), (32, 48))
    found = matmul_instructions(with_dot)
    assert found  # the dot, alone or fused
    assert all(f"{name} = " in with_dot for name in found)
    assert not matmul_instructions(_hlo(lambda x: jnp.tanh(x) * 2.0 + x, (64, 32)))


def test_every_product_of_a_program_is_found() -> None:
    """Three independent products of different shapes: at least three instructions hold one."""
    hlo = _hlo(
        lambda a, b, c: (a @ b, jnp.einsum("bqd,bkd->bqk", c, c), b.T @ a.T),
        (16, 8),
        (8, 24),
        (2, 12, 8),
    )
    assert len(matmul_instructions(hlo)) >= 3


def test_the_step_splits_into_matmuls_and_the_rest() -> None:
    shape = Shape("t", "tiny", (), 61, 16, 8, 32, 2, 4, 128)  # batch 8: one row per device
    out = where_time_goes(shape, steps=2)
    assert out["matmul_ms"] > 0 and out["other_ms"] > 0 and out["wall_ms"] > 0
