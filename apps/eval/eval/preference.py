"""A preference (DPO) run's held-out pairs, scored with DPO's metrics: the numbers of the trainer's
``val_*`` for ``data.format: preference``.

The pieces are tjx.nn's, as the trainer's validation composes them: `preference_loss` with the
run's ``preference:`` section (tjx.nn's `PreferenceConfig`: β, sigmoid or IPO) and its
vocabulary-head settings (``train.chunked_ce``, ``train.ce_chunk_size``), its
`PreferenceOutput.sums` per batch of tjx.data's held-out pairs (`ChatRunData.validation_batches`),
and `heldout_preference` to add them up and divide by the pairs. The reference model is the
trainer's:

- a LoRA run: the same weights with the adapters off (tjx.nn's default, no second copy);
- otherwise: the frozen copy of the starting parameters the trainer keeps in its state,
  restored from the same checkpoint's ``reference`` subtree (so the reference is the run's
  starting point, not a guess at it).
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from eval import attention_choice
from eval.runs import LoadedRun, RunError, section_config
from tjx import ckpt, nn

#: The subtree of the trainer's checkpointed state that holds a full fine-tune's reference.
REFERENCE = "reference"


def settings(run: LoadedRun) -> Any:
    """tjx.nn's `PreferenceConfig` of the run's ``preference:`` section (defaults if none)."""
    section = run.config.get("preference") or {}
    return section_config(run.run_dir, section, "preference", nn.PreferenceConfig)


def reference_params(run: LoadedRun) -> Any:
    """The frozen reference's params of a run without LoRA, from its checkpoint at ``run.step``
    (``None`` for a LoRA run: its reference is the base, the adapters off)."""
    if run.lora is not None:
        return None
    target = nnx.to_pure_dict(nnx.state(run.model, nnx.Param))
    try:
        _, restored = ckpt.restore_params_and_step(
            run.run_dir / "checkpoints", target=target, step=run.step, subtree=REFERENCE
        )
    except ckpt.CheckpointError as err:
        raise RunError(
            f"--checkpoint: step {run.step} of {str(run.run_dir)!r} holds no DPO reference model "
            f"({err}); a preference run without LoRA checkpoints its frozen reference, so this "
            "checkpoint was written by another trainer version or changed by hand"
        ) from None
    return restored


class BoundStep:
    """A jitted preference step with its reference params bound: ``step(params, batch)``, and
    ``lower(params, batch)`` for `attention_choice`'s compile check."""

    def __init__(self, step: Any, reference: Any) -> None:
        self.step, self.reference = step, reference

    def __call__(self, params: Any, batch: dict[str, Any]) -> dict[str, jax.Array]:
        return self.step(params, batch, self.reference)  # type: ignore[no-any-return]

    def lower(self, params: Any, batch: Any) -> Any:
        return self.step.lower(params, batch, self.reference)


def make_step(run: LoadedRun, model: Any, reference: Any) -> BoundStep:
    """``step(params, batch) -> PreferenceOutput.sums`` of ``model`` (the run's, with the
    attention kernel being tried) against ``reference`` (params of the same graph, or ``None``
    for the adapters-off base), jitted, with the run's β, loss and head settings."""
    prefs = settings(run)
    train = run.config.get("train") or {}
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]

    step = nn.preference_sums_fn(  # the trainer's validation step too
        graphdef,
        rest,
        prefs,
        chunked=bool(train.get("chunked_ce", True)),
        chunk_size=train.get("ce_chunk_size"),
    )
    return BoundStep(jax.jit(step), reference)


def evaluate(
    run: LoadedRun, *, source: str | None, batch_size: int, max_batches: int | None
) -> dict[str, float]:
    """DPO's held-out metrics of a preference run (tjx.nn's `heldout_preference`): ``loss``,
    ``rewards/chosen|rejected|margins|accuracies``, ``logps/chosen|rejected|accuracies``, means
    over the held-out pairs, and ``pairs``; ``batch_size`` counts pairs, as the trainer's
    ``eval.batch_size`` does. The attention kernel is one that compiles here, as for any run."""
    if source is not None:
        raise RunError(
            "--data: a preference run is scored on its own held-out pairs; leave --data out"
        )
    pairs: Any = run.run_data  # tjx.data's ChatRunData of kind "preference"
    reference = reference_params(run)
    first = next(iter(pairs.validation_batches(batch_size, 1)), None)
    run = attention_choice.choose_attention(
        run, first, make_step=lambda model: make_step(run, model, reference)
    )
    step = make_step(run, run.model, reference)
    params = nnx.to_pure_dict(nnx.state(run.model, nnx.Param))
    return nn.heldout_preference(  # type: ignore[no-any-return]
        (step(params, batch) for batch in pairs.validation_batches(batch_size, max_batches)),
        empty=f"{pairs.val_dir}: no held-out preference pair",
    )
