"""Kernels that fail on purpose, for testing the fallback of whoever compiles a step.

:func:`failing_attention` returns an attention function with ``flash_attention``'s signature whose
forward and backward fail at ``"lower"`` (a primitive with no lowering rule: ``NotImplementedError``
while lowering, as an unsupported Triton construct does) or at ``"compile"`` (a custom call no
backend registers: ``JaxRuntimeError`` when XLA compiles, as a Triton compile error does). Swap
it in for the Pallas kernel with
``monkeypatch.setattr(tjx.kernels.flash, "flash_attention", failing_attention(stage))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.extend.core import Primitive

_UNLOWERABLE = Primitive("tjx_test_unlowerable_kernel")
_UNLOWERABLE.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))


def _fail(x: jax.Array, stage: str) -> jax.Array:
    if stage == "lower":
        return _UNLOWERABLE.bind(x)
    return jax.ffi.ffi_call("tjx_test_unregistered_kernel", jax.ShapeDtypeStruct(x.shape, x.dtype))(
        x
    )


def failing_attention(stage: str) -> Callable[..., jax.Array]:
    """An attention function (``q, k, v, mask=None, **kwargs``) that fails at ``stage``
    ("lower"/"compile")."""
    if stage not in ("lower", "compile"):
        raise ValueError(f"`stage` must be 'lower' or 'compile'; got {stage!r}")

    @jax.custom_vjp
    def kernel(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        return _fail(q, stage)

    def fwd(q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        return _fail(q, stage), (k, v)

    def bwd(res: tuple[jax.Array, ...], g: jax.Array) -> tuple[jax.Array, ...]:
        k, v = res
        return _fail(g, stage), jax.numpy.zeros_like(k), jax.numpy.zeros_like(v)

    kernel.defvjp(fwd, bwd)

    def attention(
        q: jax.Array, k: jax.Array, v: jax.Array, mask: Any = None, **kwargs: Any
    ) -> jax.Array:
        return kernel(q, k, v)

    return attention
