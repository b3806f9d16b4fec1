"""Logit soft-capping (Gemma 2): ``cap · tanh(x / cap)`` bounds logits to ``(-cap, cap)``.

Near zero the cap changes nothing (``tanh(u) ≈ u``); large logits saturate smoothly, which keeps a
softmax from collapsing onto one entry. Its derivative is ``1 - tanh(x / cap)²``, so a backward
pass that recomputes the capped logit from ``t = tanh(x / cap)`` needs no more than ``t``.
Attention applies it to the scaled ``q·kᵀ`` logits, before any additive bias and mask (as
transformers' Gemma 2); the LM head to the output logits.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def check_softcap(softcap: float | None, name: str = "softcap") -> None:
    """Validate a cap: None (no cap) or a positive finite Python float."""
    if softcap is None:
        return
    ok = isinstance(softcap, int | float) and not isinstance(softcap, bool)
    if not ok or not (0.0 < float(softcap) < math.inf):
        raise ValueError(f"`{name}` must be a positive finite float or None; got {softcap!r}")


def soft_cap(x: Array, softcap: float | None) -> Array:
    """``softcap · tanh(x / softcap)`` in ``x``'s dtype; ``x`` itself when ``softcap`` is None."""
    if softcap is None:
        return x
    cap = jnp.asarray(softcap, x.dtype)
    return cap * jnp.tanh(x / cap)


def cap_derivative(tanh_value: Array | None) -> Array | None:
    """The cap's derivative ``1 - t²`` from ``t = tanh(x / cap)`` (None: no cap)."""
    return None if tanh_value is None else 1.0 - tanh_value * tanh_value


def uncap_grad(d_capped: Array, derivative: Array | None) -> Array:
    """The gradient w.r.t. the uncapped logits from the one w.r.t. the capped ones and the cap's
    ``derivative`` (None: no cap, ``d_capped`` unchanged)."""
    if derivative is None:
        return d_capped
    return d_capped * derivative
