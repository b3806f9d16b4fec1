"""Gradient accumulation: k micro-batches, one ``lax.scan``, one jitted step.

The scan carries a single float32 gradient sum, so memory stays that of one micro-batch's
activations plus one gradient tree, whatever k is. (``optax.MultiSteps``, the other option,
accumulates across *calls* instead; ``build_optimizer`` wraps the chain in it when
``accumulation_mode="multi_steps"``.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["AUX_REDUCTIONS", "accumulate_gradients"]

AUX_REDUCTIONS = ("mean", "sum", "stack")

GradFn = Callable[[Any, Any], tuple[tuple[jax.Array, Any], Any]]


def _split(batch: Any, k: int) -> Any:
    for path, x in jax.tree_util.tree_leaves_with_path(batch):
        if x.ndim == 0 or x.shape[0] % k:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} has shape {x.shape}; allowed: a leading "
                f"dimension divisible by num_micro_batches={k}"
            )
    return jax.tree.map(lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:]), batch)


def accumulate_gradients(
    grad_fn: GradFn,
    params: Any,
    batch: Any,
    *,
    num_micro_batches: int,
    aux_reduce: str = "mean",
) -> tuple[jax.Array, Any, Any]:
    """Mean loss and gradients over ``num_micro_batches`` slices of ``batch``.

    Parameters
    ----------
    grad_fn
        ``grad_fn(params, micro_batch) -> ((loss, aux), grads)``, e.g.
        ``jax.value_and_grad(loss_fn, has_aux=True)``. For dropout, carry per-example keys (or a
        leading-dim array of keys) in the batch so each micro-batch gets its own.
    params
        Passed unchanged to every call.
    batch
        Pytree whose leaves all have a leading dimension divisible by ``num_micro_batches``;
        micro-batch ``i`` is rows ``[i*n/k, (i+1)*n/k)``.
    num_micro_batches
        k >= 1 (static). With k = 1, ``grad_fn`` is called once on the whole batch.
    aux_reduce
        ``"mean"`` (float32 mean over micro-batches), ``"sum"``, or ``"stack"`` (leading axis k).

    Returns
    -------
    tuple
        ``(loss, aux, grads)``: the mean of the micro-batch losses, the reduced aux, and the mean
        gradients in each parameter's gradient dtype (summed in float32).

    Notes
    -----
    Equal to one big batch when ``loss`` is a mean over equally sized micro-batches. For
    token-weighted LM losses with padding, return a sum (and the token count in ``aux``) and
    normalise afterwards.
    """
    k = num_micro_batches
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"num_micro_batches={k!r}; allowed values: an integer >= 1")
    if aux_reduce not in AUX_REDUCTIONS:
        raise ValueError(f"aux_reduce={aux_reduce!r}; allowed values: {list(AUX_REDUCTIONS)}")
    if k == 1:
        (loss, aux), grads = grad_fn(params, batch)
        if aux_reduce == "stack":
            aux = jax.tree.map(lambda a: jnp.asarray(a)[None], aux)
        elif aux_reduce == "mean":
            aux = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), aux)
        return loss, aux, grads
    micro = _split(batch, k)
    (loss_s, aux_s), grads_s = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro))
    f32 = jnp.float32
    acc_dtype = (lambda s: f32) if aux_reduce == "mean" else (lambda s: s.dtype)
    init = (
        jnp.zeros([], f32),
        jax.tree.map(lambda s: jnp.zeros(s.shape, f32), grads_s),
        (
            jax.tree.map(lambda s: jnp.zeros(s.shape, acc_dtype(s)), aux_s)
            if aux_reduce != "stack"
            else None
        ),
    )

    def body(carry: Any, mb: Any) -> tuple[Any, Any]:
        loss_acc, grad_acc, aux_acc = carry
        (loss, aux), grads = grad_fn(params, mb)
        grad_acc = jax.tree.map(lambda a, g: a + g.astype(f32), grad_acc, grads)
        loss_acc = loss_acc + loss.astype(f32)
        if aux_reduce == "stack":
            return (loss_acc, grad_acc, None), aux
        aux_acc = jax.tree.map(lambda a, x: a + jnp.asarray(x).astype(a.dtype), aux_acc, aux)
        return (loss_acc, grad_acc, aux_acc), None

    (loss_sum, grad_sum, aux_sum), stacked = jax.lax.scan(body, init, micro)
    grads = jax.tree.map(lambda a, s: (a / k).astype(s.dtype), grad_sum, grads_s)
    loss = (loss_sum / k).astype(loss_s.dtype)
    if aux_reduce == "stack":
        aux = stacked
    elif aux_reduce == "mean":
        aux = jax.tree.map(lambda a: a / k, aux_sum)
    else:
        aux = aux_sum
    return loss, aux, grads
