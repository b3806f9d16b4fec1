"""Gradient accumulation: k micro-batches, one ``lax.scan``, one jitted step.

The scan carries a single float32 gradient sum, so memory stays that of one micro-batch's
activations plus one gradient tree, whatever k is. (``optax.MultiSteps``, the other option,
accumulates across *calls* instead; ``build_optimizer`` wraps the chain in it when
``accumulation_mode="multi_steps"``.)

Equal weights (the default) give the big-batch gradient only when every micro-batch's loss is a
mean over the same number of terms. A token-mean LM loss over micro-batches with different
numbers of valid tokens (padding, ``ignore_index``, packed documents, ragged SFT batches) needs
weights: with ``w_i = n_i`` valid tokens,

    Σ_i n_i · ∇(sum_loss_i / n_i) / Σ_i n_i = ∇(Σ_i sum_loss_i / Σ_i n_i),

the gradient of the full batch's token-mean loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["AUX_REDUCTIONS", "accumulate_gradients"]

AUX_REDUCTIONS = ("mean", "sum", "stack")

GradFn = Callable[[Any, Any], tuple[tuple[jax.Array, Any], Any]]
Weight = str | Callable[[Any], Any] | None

_F32 = jnp.float32


def _split(batch: Any, k: int, unit: int | None) -> Any:
    """``[k, n/k, ...]`` micro-batches: contiguous blocks, or (``unit``) interleaved units."""
    step = k * (unit or 1)
    for path, x in jax.tree_util.tree_leaves_with_path(batch):
        if x.ndim == 0 or x.shape[0] % step:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} has shape {x.shape}; allowed: a leading "
                f"dimension divisible by num_micro_batches={k}"
                + (f" × interleave_rows={unit}" if unit else "")
            )
    if unit is None:
        return jax.tree.map(lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:]), batch)

    def interleaved(x: jax.Array) -> jax.Array:  # [n/(k u), k, u] -> [k, n/(k u), u] -> [k, n/k]
        units = x.reshape((x.shape[0] // step, k, unit) + x.shape[1:])
        return jnp.swapaxes(units, 0, 1).reshape((k, x.shape[0] // k) + x.shape[1:])

    return jax.tree.map(interleaved, batch)


def _weight_fn(weight: Weight) -> Callable[[Any], jax.Array] | None:
    """``aux -> float32 scalar`` for a ``weight`` argument (validated), or None (equal)."""
    if weight is None:
        return None
    get: Callable[[Any], Any]
    if isinstance(weight, str):
        name = weight

        def from_aux(aux: Any) -> Any:
            if not isinstance(aux, Mapping) or name not in aux:
                keys = sorted(aux) if isinstance(aux, Mapping) else type(aux).__name__
                raise ValueError(
                    f"weight={name!r} names no aux entry; allowed: a key of the aux mapping "
                    f"grad_fn returns ({keys}), a callable aux -> weight, or None"
                )
            return aux[name]

        get = from_aux
    elif callable(weight):
        get = weight
    else:
        raise ValueError(
            f"weight={weight!r}; allowed values: None, the name of an aux entry, or a callable"
        )

    def fn(aux: Any) -> jax.Array:
        w = jnp.asarray(get(aux))
        if w.shape != ():
            raise ValueError(f"weight={weight!r} gave shape {w.shape}; allowed: a scalar")
        # A negative weight counts as 0, in the sums and in the total alike.
        return jnp.maximum(w.astype(_F32), 0.0)

    return fn


def _masked(w: jax.Array, x: Any) -> jax.Array:
    # w·x, but exactly 0 where w == 0, even when x is NaN/inf: a micro-batch with no valid
    # tokens may have a 0/0 loss or gradient, and it must not poison the sum.
    x = jnp.asarray(x).astype(_F32)
    return jnp.where(w > 0, w * x, jnp.zeros_like(x))


def accumulate_gradients(
    grad_fn: GradFn,
    params: Any,
    batch: Any,
    *,
    num_micro_batches: int,
    aux_reduce: str = "mean",
    weight: Weight = None,
    zero_empty_grads: bool = True,
    interleave_rows: int | None = None,
) -> tuple[jax.Array, Any, Any]:
    """Mean (or weighted mean) loss and gradients over ``num_micro_batches`` slices of ``batch``.

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
        micro-batch ``i`` is rows ``[i*n/k, (i+1)*n/k)`` (see ``interleave_rows``).
    num_micro_batches
        k >= 1 (static). With k = 1, ``grad_fn`` is called once on the whole batch.
    aux_reduce
        ``"mean"`` (float32 mean over micro-batches, weighted like the loss), ``"sum"`` (plain
        sum in the aux dtype: right for counts such as ``num_tokens``), or ``"stack"`` (leading
        axis k, per micro-batch, unweighted).
    weight
        How much each micro-batch counts. ``None`` (default): equally, as before. A string: the
        name of a scalar entry of the aux mapping, e.g. ``"num_tokens"``. A callable: ``aux ->
        scalar``. Weights should be >= 0 (a negative one counts as 0); they are used in
        float32. With ``loss`` a token mean over micro-batch ``i``'s ``n_i`` valid tokens and
        ``weight`` giving ``n_i``, the result is exactly the gradient (and loss) of the whole
        batch's token-mean loss.
    zero_empty_grads
        With ``num_micro_batches=1`` and a ``weight``: set the gradients of a batch whose weight
        is 0 to zeros (a loss that divides by an unguarded count of 0 gives NaN there). That
        is one select kernel per leaf every step; a caller whose loss already gives finite
        gradients for an empty batch (tjx.nn's losses divide by ``max(count, 1)``), or that
        skips non-finite steps, may pass False. Micro-batches (k > 1) always mask.
    interleave_rows
        ``None`` (default): contiguous micro-batches. ``u``: the batch is units of ``u``
        consecutive rows (2 for preference pairs, kept together) and micro-batch ``i`` takes
        units ``i, i+k, i+2k, ...``. For a batch sharded over devices by rows (each device a
        contiguous block, as ``PartitionSpec("fsdp")`` lays it out) every device's block then
        splits evenly: each micro-batch stays on every device, nothing moves. Contiguous
        micro-batches sit on a block of the devices instead (16 rows over 8 devices, k = 2:
        micro-batch 0 on devices 0-3, a *sub-axis* of the mesh, replicated over the rest),
        which repeats each micro-step's work and hands kernels partitioned with
        ``custom_partitioning`` (cuDNN attention) a sharding jax cannot decode. Only which
        rows share a micro-batch changes: a ``weight="num_tokens"`` mean is the big-batch loss
        either way. The leading dimension must divide by ``k·u``.

    Returns
    -------
    tuple
        ``(loss, aux, grads)``. Without ``weight``: the mean of the micro-batch losses and
        gradients, ``Σ_i x_i / k``. With ``weight``: ``Σ_i w_i·x_i / Σ_i w_i`` for the loss, the
        gradients and (``aux_reduce="mean"``) every aux leaf. A micro-batch with ``w_i = 0``
        contributes exactly nothing, even if its loss or gradients are NaN/inf; if every weight
        is 0, the loss, gradients and weighted-mean aux are all zeros (no step direction; the
        optimizer still runs). Gradients are summed in float32 and returned in each
        parameter's gradient dtype, the loss in its own dtype.

    Raises
    ------
    ValueError
        ``num_micro_batches``, ``aux_reduce``, ``weight`` or ``interleave_rows`` is invalid, the
        weight is not a
        scalar, or a batch leaf does not split into k micro-batches.

    Notes
    -----
    Weights only add per-leaf multiply/selects inside the same single scan; the carry gains
    one float32 scalar (the total weight).
    """
    k = num_micro_batches
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"num_micro_batches={k!r}; allowed values: an integer >= 1")
    u = interleave_rows
    if u is not None and (isinstance(u, bool) or not isinstance(u, int) or u < 1):
        raise ValueError(f"interleave_rows={u!r}; allowed values: None or an integer >= 1")
    if aux_reduce not in AUX_REDUCTIONS:
        raise ValueError(f"aux_reduce={aux_reduce!r}; allowed values: {list(AUX_REDUCTIONS)}")
    weigh = _weight_fn(weight)
    if k == 1:
        return _single(grad_fn(params, batch), aux_reduce, weigh, zero_empty_grads)
    micro = _split(batch, k, interleave_rows)
    (loss_s, aux_s), grads_s = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro))
    if weigh is not None:
        jax.eval_shape(weigh, aux_s)  # a bad weight fails here, at trace time, with its name
    acc_dtype = (lambda s: _F32) if aux_reduce == "mean" else (lambda s: s.dtype)
    init = (
        jnp.zeros([], _F32),
        jax.tree.map(lambda s: jnp.zeros(s.shape, _F32), grads_s),
        (
            jax.tree.map(lambda s: jnp.zeros(s.shape, acc_dtype(s)), aux_s)
            if aux_reduce != "stack"
            else None
        ),
        jnp.zeros([], _F32),
    )

    def body(carry: Any, mb: Any) -> tuple[Any, Any]:
        loss_acc, grad_acc, aux_acc, w_acc = carry
        (loss, aux), grads = grad_fn(params, mb)
        if weigh is None:
            add = lambda x: jnp.asarray(x).astype(_F32)
            w = jnp.ones([], _F32)
        else:
            w = weigh(aux)
            add = lambda x: _masked(w, x)
        grad_acc = jax.tree.map(lambda a, g: a + add(g), grad_acc, grads)
        loss_acc = loss_acc + add(loss)
        if aux_reduce == "stack":
            return (loss_acc, grad_acc, None, w_acc + w), aux
        if aux_reduce == "mean":
            aux_acc = jax.tree.map(lambda a, x: a + add(x), aux_acc, aux)
        else:  # "sum": counts add up whatever the weights
            aux_acc = jax.tree.map(lambda a, x: a + jnp.asarray(x).astype(a.dtype), aux_acc, aux)
        return (loss_acc, grad_acc, aux_acc, w_acc + w), None

    (loss_sum, grad_sum, aux_sum, w_sum), stacked = jax.lax.scan(body, init, micro)
    # Equal weights: w_sum == k. All weights 0: every sum is 0 too, so dividing by 1 gives 0.
    total = jnp.where(w_sum > 0, w_sum, jnp.ones_like(w_sum))
    grads = jax.tree.map(lambda a, s: (a / total).astype(s.dtype), grad_sum, grads_s)
    loss = (loss_sum / total).astype(loss_s.dtype)
    if aux_reduce == "stack":
        aux = stacked
    elif aux_reduce == "mean":
        aux = jax.tree.map(lambda a: a / total, aux_sum)
    else:
        aux = aux_sum
    return loss, aux, grads


def _single(
    out: tuple[tuple[jax.Array, Any], Any],
    aux_reduce: str,
    weigh: Callable[[Any], jax.Array] | None,
    zero_empty_grads: bool,
) -> tuple[jax.Array, Any, Any]:
    """k = 1: no scan. A weight only matters when it is 0 (then zeros, as for k > 1)."""
    (loss, aux), grads = out
    if aux_reduce == "stack":
        aux = jax.tree.map(lambda a: jnp.asarray(a)[None], aux)
    elif aux_reduce == "mean":
        aux = jax.tree.map(lambda a: jnp.asarray(a, _F32), aux)
    if weigh is None:
        return loss, aux, grads
    keep = weigh(out[0][1]) > 0
    zero_unless = lambda x: jnp.where(keep, x, jnp.zeros_like(x))
    if aux_reduce == "mean":
        aux = jax.tree.map(zero_unless, aux)
    return zero_unless(loss), aux, (jax.tree.map(zero_unless, grads) if zero_empty_grads else grads)
