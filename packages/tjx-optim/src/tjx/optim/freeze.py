"""Training some parameters and freezing the rest: the adapter mask and ``only_trainable``.

``only_trainable(tx, mask)`` applies ``tx`` to the leaves the mask marks and gives the others a
zero update. It is ``optax.multi_transform`` over the labels ``"train"`` / ``"frozen"``, so ``tx``
(its moments, its clipping norm, its loss-scale checks, its schedule) sees only the trainable
leaves: a frozen weight holds no optimizer state at all, which for LoRA is most of the memory
AdamW would spend (two float32 moments per weight). Put it outermost, around the whole chain
(``only_trainable(build_optimizer(config), mask)``), so clipping measures the trainable
gradients only.

A trainer that differentiates only the adapters (``nnx.split(model, nnx.LoRAParam, ...)``) needs
no mask; the mask is for a trainer that keeps one parameter tree, and as the rule that says what
an adapter is by name: a path component ``lora`` (``.../query/lora/lora_a``, tjx-nn's naming).
Such a trainer differentiates the trainable leaves only with `trainable_gradients`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from tjx.optim.accumulate import Weight, accumulate_gradients
from tjx.optim.paths import any_component, path_to_str

__all__ = [
    "ADAPTER_NAMES",
    "adapter_mask",
    "join_trainable",
    "only_trainable",
    "path_mask",
    "split_trainable",
    "trainable_gradients",
]

#: A path component (whole, case-insensitive) that marks a parameter as an adapter.
ADAPTER_NAMES = r"lora|lora_a|lora_b"


def path_mask(params: Any, pattern: str) -> Any:
    """A bool pytree like ``params``: True where ``re.search(pattern, path)`` matches the leaf's
    ``/``-joined path (``"stack/layers/attn/query/kernel"``).

    Parameters
    ----------
    params
        Any pytree of arrays (or ``ShapeDtypeStruct``s: only paths are read).
    pattern
        A regular expression.
    """
    rx = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: rx.search(path_to_str(path)) is not None, params
    )


def adapter_mask(params: Any) -> Any:
    """True at LoRA adapter leaves (a path component ``lora``, ``lora_A`` or ``lora_B``).

    Raises
    ------
    ValueError
        No leaf is an adapter (training nothing is a mistake, not a configuration).
    """
    mask = jax.tree_util.tree_map_with_path(
        lambda path, _: any_component(ADAPTER_NAMES, path_to_str(path)), params
    )
    if not any(jax.tree.leaves(mask)):
        raise ValueError("no parameter is a LoRA adapter (no path component 'lora'); add adapters")
    return mask


def only_trainable(
    tx: optax.GradientTransformation, trainable: Any | Callable[[Any], Any]
) -> optax.GradientTransformation:
    """``tx`` on the trainable leaves, a zero update (and no state) for the rest.

    Parameters
    ----------
    tx
        The optimizer chain for the trainable leaves (e.g. ``build_optimizer(config)``).
    trainable
        A bool pytree like the params (e.g. ``adapter_mask(params)``), or a function of the
        params that returns one.

    Returns
    -------
    optax.GradientTransformation
        Its state is ``optax.MultiTransformState``; ``tx``'s own state (for ``step_report``) is
        ``state.inner_states["train"].inner_state``.
    """

    def labels(params: Any) -> Any:
        mask = trainable(params) if callable(trainable) else trainable
        return jax.tree.map(lambda m: "train" if m else "frozen", mask)

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def _none(x: Any) -> bool:
    return x is None


def split_trainable(params: Any, trainable: Any) -> tuple[Any, Any]:
    """``params`` as two trees of its structure: the trainable leaves (``None`` elsewhere) and
    the frozen ones (``None`` elsewhere).

    Differentiating a loss of ``join_trainable(t, frozen)`` with respect to ``t`` computes no
    gradient of a frozen weight at all (``None`` is an empty subtree to ``jax.grad``), which
    is what a LoRA step wants: the base's weight gradients are neither computed nor kept.
    """
    kept = jax.tree.map(lambda p, m: p if m else None, params, trainable)
    rest = jax.tree.map(lambda p, m: None if m else p, params, trainable)
    return kept, rest


def join_trainable(kept: Any, rest: Any) -> Any:
    """The tree `split_trainable` split: each leaf from whichever side holds it (``rest`` may be
    any tree of that structure, e.g. zeros for the frozen leaves' updates)."""
    return jax.tree.map(lambda k, r: r if k is None else k, kept, rest, is_leaf=_none)


def trainable_gradients(
    loss_fn: Callable[[Any, Any], tuple[jax.Array, Any]],
    params: Any,
    batch: Any,
    *,
    trainable: Any = None,
    num_micro_batches: int,
    aux_reduce: str = "mean",
    weight: Weight = None,
    zero_empty_grads: bool = True,
    interleave_rows: int | None = None,
) -> tuple[jax.Array, Any, Any]:
    """`accumulate_gradients` of ``loss_fn`` with respect to the ``trainable`` leaves only.

    The frozen leaves are constants of the loss (`split_trainable`): their weight gradients are
    never computed, which for LoRA is nearly all of the backward pass's weight gradients. They
    get zero gradients in the result, which ``only_trainable``'s frozen branch drops.

    Parameters
    ----------
    loss_fn
        ``loss_fn(params, micro_batch) -> (loss, aux)``.
    params
        The whole parameter tree.
    batch
        As for `accumulate_gradients`.
    trainable
        A bool pytree like ``params`` (e.g. ``adapter_mask(params)``); ``None``: every leaf.
    num_micro_batches, aux_reduce, weight, zero_empty_grads, interleave_rows
        As for `accumulate_gradients`.

    Returns
    -------
    tuple
        ``(loss, aux, grads)`` as `accumulate_gradients`, ``grads`` shaped like ``params``.
    """
    kept, frozen = split_trainable(params, trainable) if trainable is not None else (params, None)

    def grad_fn(p: Any, b: Any) -> Any:
        def whole(q: Any) -> tuple[jax.Array, Any]:
            return loss_fn(q if frozen is None else join_trainable(q, frozen), b)

        return jax.value_and_grad(whole, has_aux=True)(p)

    loss, aux, grads = accumulate_gradients(
        grad_fn,
        kept,
        batch,
        num_micro_batches=num_micro_batches,
        aux_reduce=aux_reduce,
        weight=weight,
        zero_empty_grads=zero_empty_grads,
        interleave_rows=interleave_rows,
    )
    if frozen is not None:
        grads = join_trainable(grads, jax.tree.map(jnp.zeros_like, frozen))
    return loss, aux, grads
