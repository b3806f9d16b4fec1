"""MLP activations with a fused backward: the forward of jax.nn, a closed-form derivative.

Autodiff of ``gelu`` (tanh form) saves ``x³``, the ``tanh`` and more per element — several
``[tokens, mlp_dim]`` arrays per layer — and its backward is a chain of elementwise kernels.
Each activation here is a ``jax.custom_vjp`` whose only residual is its input (and, gated, the
other branch), and whose backward is one elementwise expression, evaluated in float32:

* ``gelu`` (tanh form, GPT-2's "gelu_new"): ``d/dx = ½(1 + t) + ½·x·(1 − t²)·c·(1 + 3k·x²)``
  with ``t = tanh(c·(x + k·x³))``, ``c = √(2/π)``, ``k = 0.044715``;
* ``silu``: ``d/dx = s·(1 + x·(1 − s))``, ``s = sigmoid(x)``;
* gated units (``swiglu``/``geglu``): ``h = act(gate) · up``, ``dgate = dh · up · act'(gate)``,
  ``dup = dh · act(gate)``.

The forward values are jax.nn's own (bitwise the same as before); the gradients differ from
autodiff's by rounding only (float32 here, the input dtype there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

Array = jax.Array

_C = math.sqrt(2.0 / math.pi)
_K = 0.044715


def _f32(x: Array) -> Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _gelu_grad(x: Array) -> Array:
    x = _f32(x)
    t = jnp.tanh(_C * (x + _K * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _C * (1.0 + 3.0 * _K * x * x)


def _silu_grad(x: Array) -> Array:
    x = _f32(x)
    s = jax.nn.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def _gelu(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=True)


#: name -> (forward, derivative) of the activations with a fused backward.
_FUSED: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "gelu": (_gelu, _gelu_grad),
    "silu": (jax.nn.silu, _silu_grad),
}


def with_derivative(name: str) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """The activation ``name`` (``"gelu"``: tanh form, or ``"silu"``) and its derivative, the
    pair the fused backward passes evaluate (the derivative in float32)."""
    return _FUSED[name]


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def fused_activation(name: str, x: Array) -> Array:
    """``act(x)`` for ``name`` in ``("gelu", "silu")`` with a one-kernel backward."""
    return _FUSED[name][0](x)


def _act_fwd(name: str, x: Array) -> tuple[Array, Array]:
    return _FUSED[name][0](x), x


def _act_bwd(name: str, x: Array, g: Array) -> tuple[Array]:
    return ((_f32(g) * _FUSED[name][1](x)).astype(x.dtype),)


fused_activation.defvjp(_act_fwd, _act_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def gated_activation(name: str, gate: Array, up: Array) -> Array:
    """``act(gate) · up`` (SwiGLU: ``name="silu"``, GeGLU: ``"gelu"``) with a fused backward."""
    return _FUSED[name][0](gate) * up


def _gated_fwd(name: str, gate: Array, up: Array) -> tuple[Array, tuple[Array, Array]]:
    return _FUSED[name][0](gate) * up, (gate, up)


def _gated_bwd(name: str, res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    gate, up = res
    g32 = _f32(g)
    act = _f32(_FUSED[name][0](gate))
    dgate = g32 * _f32(up) * _FUSED[name][1](gate)
    return dgate.astype(gate.dtype), (g32 * act).astype(up.dtype)


gated_activation.defvjp(_gated_fwd, _gated_bwd)
