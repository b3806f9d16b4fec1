"""DPO in the trainer: ``data.format: preference`` trains with tjx.nn's `preference_loss` (DPO's
sigmoid loss or IPO, built into `trainer.step`'s steps by tjx.nn's `preference_loss_fn` and
`preference_sums_fn`; the ``preference:`` section IS tjx.nn's `PreferenceConfig`) on tjx.data's
pair batches (pair ``i`` in rows ``2i`` chosen and ``2i + 1`` rejected; ``data.batch_size`` and
``eval.batch_size`` count pairs). Pairs never train as SFT: the step has no other loss.

The reference model's log-probabilities come from

- with LoRA (``lora.enabled``): the same weights with the adapters off (`tjx.nn.adapters_off`):
  no second copy;
- otherwise: a frozen copy of the starting parameters held in the train state
  (``state["reference"]``, sharded like the params): not in the optimizer, never differentiated.
  It costs one more copy of the parameters (``param_dtype`` bytes each) in device memory and in
  every checkpoint; a ``--resume`` restores it from the checkpoint, so the reference stays the
  run's starting point bit for bit without ``--init-from`` again.

The loss is the mean over the batch's real pairs (TRL's average): accumulation weighs each
micro-batch by its pairs, so the step is the gradient of the whole batch's mean.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax

from tjx import nn
from trainer.schema import ConfigError


def is_dpo(cfg: Any) -> bool:
    """Whether the run trains on preference pairs (with DPO)."""
    return bool(cfg.data.format == "preference")


def batch_rows(cfg: Any, size: int) -> int:
    """The rows of a batch of ``size`` (a preference batch holds two rows per pair)."""
    return 2 * size if is_dpo(cfg) else size


def with_reference(cfg: Any, state: dict[str, Any], *, copy: bool = True) -> dict[str, Any]:
    """``state`` with ``"reference"``: a copy of its params for DPO without LoRA (``copy`` False
    for abstract states: the same shapes serve)."""
    if not is_dpo(cfg) or cfg.use_lora:
        return state
    params = state["params"]
    # A real copy: the step donates the state, and one buffer cannot be donated twice.
    reference = jax.tree.map(lambda x: x.copy(), params) if copy else params
    return {**state, "reference": reference}


def check_config(cfg: Any, given: set[str]) -> None:
    """DPO's rules: a ``preference`` setting (``given``, off its default) needs preference data;
    preference data refuses what its loss cannot apply. Each a one-line `ConfigError`."""
    if not is_dpo(cfg):
        default = type(cfg.preference)()  # a saved config lists every key at its default
        changed = sorted(k for k in given if getattr(cfg.preference, k) != getattr(default, k))
        if changed:
            key = changed[0]
            raise ConfigError(
                f"preference.{key}: applies to preference pairs only; set data.format=preference "
                "or drop the preference settings"
            )
        return
    m, mesh, where = cfg.model, cfg.mesh, "with data.format=preference (DPO)"
    refused = [
        ("mesh.pipeline", mesh.pipeline > 1, "the pipeline runs the SFT loss only; set it to 1"),
        ("mesh.context", mesh.context > 1, "a pair's rows are scored whole; set it to 1"),
        (
            "model.num_experts",
            m.num_experts > 0,
            "the router's balancing losses are not part of the DPO loss; train a dense model",
        ),
        ("train.z_loss", cfg.train.z_loss != 0, "the DPO loss has no z-loss term; set it to 0"),
    ]
    for key, bad, why in refused:
        if bad:
            raise ConfigError(f"{key}: cannot apply {where}: {why}")


def head_settings(cfg: Any) -> dict[str, Any]:
    """The vocabulary head's settings as tjx.nn's preference steps take them (no z-loss:
    `check_config` refuses one)."""
    return {k: cfg.train.head_settings[k] for k in ("chunked", "chunk_size")}


def bind_reference(loss_fn: Callable[..., Any], state: dict[str, Any]) -> Callable[..., Any]:
    """``loss_fn`` with the state's frozen reference params bound (as is without one)."""
    if "reference" not in state:
        return loss_fn
    return functools.partial(loss_fn, reference=state["reference"])


def reference_args(state: dict[str, Any]) -> tuple[Any, ...]:
    """The eval step's arguments after ``(params, batch)``: the frozen reference, if any."""
    return (state["reference"],) if "reference" in state else ()


def heldout(
    step: Any, params: Any, reference: Any, batches: Iterable[Any], place: Callable[[Any], Any]
) -> dict[str, float]:
    """tjx.nn's `heldout_preference` of the eval ``step`` (`step.make_eval_step`) over every
    held-out pair batch: DPO's ``loss``, ``rewards/*`` and ``logps/*`` means, and ``pairs``."""
    return nn.heldout_preference(
        (step(params, place(batch), reference) for batch in batches),
        empty="validation data is empty: no preference pair of the configured size fits",
    )
