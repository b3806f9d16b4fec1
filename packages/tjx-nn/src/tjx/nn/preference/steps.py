"""Preference steps: `preference_loss` as pure functions of the parameters, for ``jax.jit``.

A trainer differentiates `preference_loss_fn` and an evaluator scores held-out pairs with
`preference_sums_fn`; both are built here from the model's ``graphdef`` and ``rest`` (as
`objective_logits_fn` is for the other objectives), so a trainer's validation and an evaluator
score a checkpoint the same way. The reference is either params of the same graph (a frozen copy
of the starting point, passed per call so a jitted step can take it as an argument) or ``None``:
the policy with its LoRA adapters off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from tjx.nn.model_state import reseed
from tjx.nn.preference.losses import PreferenceConfig, preference_loss, preference_means

__all__ = ["preference_loss_fn", "preference_step_metrics", "preference_sums_fn"]

Array = jax.Array
Batch = dict[str, Array]


def _loss(
    model: Any,
    batch: Batch,
    graphdef: Any,
    rest: Any,
    reference: Any,
    settings: PreferenceConfig,
    head: dict[str, Any],
    deterministic: bool,
) -> Any:
    """`preference_loss` of ``model`` against the ``reference`` params (merged with ``rest``),
    else the model with its adapters off."""
    ref = None if reference is None else nnx.merge(graphdef, reference, rest)
    return preference_loss(
        model,
        batch,
        beta=settings.beta,
        loss_type=settings.loss_type,
        reference=ref,
        deterministic=deterministic,
        **head,
    )


def preference_loss_fn(
    graphdef: Any,
    rest: Any,
    settings: PreferenceConfig,
    *,
    deterministic: bool = True,
    chunked: bool = True,
    chunk_size: int | None = None,
) -> Callable[..., tuple[Array, dict[str, Any]]]:
    """``loss_fn(params, batch, step, reference=None) -> (loss, aux)``: `preference_loss` of the
    policy against the reference, a pure function of the parameters.

    Parameters
    ----------
    graphdef : nnx.GraphDef
        The model's graph (``nnx.split(model, nnx.Param, ...)``'s first part).
    rest : nnx.State
        Its non-parameter state; its RNG streams are reseeded with ``step`` (`reseed`), so dropout
        draws new masks each step without saving a key.
    settings : PreferenceConfig
        β and the loss type.
    deterministic : bool
        The policy's dropout off.
    chunked, chunk_size
        As for `sequence_logprobs`.

    Returns
    -------
    Callable
        ``loss_fn``; ``aux`` holds `PreferenceOutput.sums` (``"preference"``) and the real pairs
        as ``num_tokens``: the weight that makes gradient accumulation over micro-batches the
        gradient of the whole batch's mean.
    """
    head = {"chunked": chunked, "chunk_size": chunk_size}

    def loss_fn(
        params: Any, batch: Batch, step: Array, reference: Any = None
    ) -> tuple[Array, dict[str, Any]]:
        model = nnx.merge(graphdef, params, reseed(rest, step))
        out = _loss(model, batch, graphdef, rest, reference, settings, head, deterministic)
        sums = out.sums()
        return out.loss, {"num_tokens": sums["pairs"], "preference": sums}

    return loss_fn


def preference_sums_fn(
    graphdef: Any,
    rest: Any,
    settings: PreferenceConfig,
    *,
    chunked: bool = True,
    chunk_size: int | None = None,
) -> Callable[..., dict[str, Array]]:
    """``fn(params, batch, reference=None) -> sums``: `PreferenceOutput.sums` of a held-out pair
    batch (no dropout), which `heldout_preference` adds up over batches.

    Parameters
    ----------
    graphdef, rest, settings, chunked, chunk_size
        As for `preference_loss_fn`.

    Returns
    -------
    Callable
        ``fn`` with ``params`` and ``reference`` pure parameter dicts (``reference`` None: the
        policy with its adapters off).
    """
    head = {"chunked": chunked, "chunk_size": chunk_size}

    def fn(params: Any, batch: Batch, reference: Any = None) -> dict[str, Array]:
        model = nnx.merge(graphdef, params, rest)
        out = _loss(model, batch, graphdef, rest, reference, settings, head, True)
        return out.sums()  # type: ignore[no-any-return]

    return fn


def preference_step_metrics(aux: dict[str, Any]) -> dict[str, Array]:
    """A training step's preference metrics from `preference_loss_fn`'s ``aux`` (summed over
    micro-batches): TRL's means over the batch's pairs, but the loss (a step reports its loss
    already), and ``pairs``, their count.

    Parameters
    ----------
    aux : dict
        Holds ``"preference"``: `PreferenceOutput.sums`.

    Returns
    -------
    dict[str, Array]
        ``rewards/*`` and ``logps/*`` means and ``pairs``.
    """
    means = preference_means(aux["preference"])
    del means["loss"]
    return {**means, "pairs": aux["preference"]["pairs"]}
