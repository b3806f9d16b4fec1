"""DPO in the trainer: ``data.format: preference`` trains with tjx.nn's `preference_loss` (DPO or
IPO; ``preference:`` IS tjx.nn's `PreferenceConfig`) on tjx.data's pair batches (pair ``i``: rows
``2i`` chosen, ``2i + 1`` rejected; batch sizes count pairs), never as SFT.

The reference model: with LoRA, the same weights with the adapters off (`tjx.nn.adapters_off`);
otherwise a frozen copy of the starting params in the train state (`TrainState.reference`, sharded
like the params, never differentiated): one more copy in memory and in every checkpoint, so a
``--resume`` keeps the run's starting point bit for bit. The loss is the mean over real pairs
(TRL's): accumulation weighs each micro-batch by its pairs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import chex
import jax
import numpy as np

from tjx import nn
from tjx.data import DataConfig
from trainer.config import grpo_settings
from trainer.config.typed import StepConfig
from trainer.step.train_state import TrainState

T = TypeVar("T")


def is_dpo(data: DataConfig) -> bool:
    """Whether a run of ``data`` (the config's data section) trains on preference pairs (DPO)."""
    return bool(data.format == "preference")


def needs_frozen_reference(data: DataConfig, grpo: nn.GrpoConfig, *, use_lora: bool) -> bool:
    """Whether the train state holds a frozen copy of the starting params: DPO, and GRPO with a
    KL penalty (``grpo.beta`` > 0), without LoRA (whose reference is the adapters off)."""
    kl = grpo_settings.is_grpo(data) and grpo.beta > 0
    return (is_dpo(data) or kl) and not use_lora


def with_reference(state: TrainState, *, needed: bool, copy: bool = True) -> TrainState:
    """``state`` with a ``reference`` where ``needed`` (DPO without LoRA): a copy of its params
    (``copy`` False for abstract states: the same shapes serve)."""
    if not needed:
        return state
    params = state.params
    # A real copy: the step donates the state, and one buffer cannot be donated twice.
    reference = jax.tree.map(lambda x: x.copy(), params) if copy else params
    return dataclasses.replace(state, reference=reference)


def head_settings(cfg: StepConfig) -> dict[str, Any]:
    """The vocabulary head's settings for tjx.nn's preference steps (the config refuses z-loss)."""
    head = cfg.head_settings
    return {"chunked": head["chunked"], "chunk_size": head["chunk_size"]}


def bind_reference(loss_fn: Callable[..., T], state: TrainState) -> Callable[..., T]:
    """``loss_fn`` with the state's frozen reference params bound (as is without one)."""
    if state.reference is None:
        return loss_fn
    return functools.partial(loss_fn, reference=state.reference)


def reference_args(state: TrainState) -> tuple[chex.ArrayTree, ...]:
    """The eval step's arguments after ``(params, batch)``: the frozen reference, if any."""
    return () if state.reference is None else (state.reference,)


def heldout(
    step: Callable[..., dict[str, jax.Array]],
    params: chex.ArrayTree,
    reference: chex.ArrayTree | None,
    batches: Iterable[dict[str, np.ndarray]],
    place: Callable[[dict[str, np.ndarray]], dict[str, jax.Array]],
) -> dict[str, float]:
    """tjx.nn's `heldout_preference` of the eval ``step`` (`step.make_eval_step`) over every
    held-out pair batch: DPO's ``loss``, ``rewards/*`` and ``logps/*`` means, and ``pairs``."""
    return nn.heldout_preference(
        (step(params, place(batch), reference) for batch in batches),
        empty="validation data is empty: no preference pair of the configured size fits",
    )
