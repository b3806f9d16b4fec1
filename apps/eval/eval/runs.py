"""Reading a trainer run directory: its config, model (rebuilt from ``model.json``), the latest
checkpoint's parameters, the tokenizer and the held-out shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flax import nnx

if TYPE_CHECKING:
    from tjx.data import RunData


class RunError(ValueError):
    """A run directory that cannot be evaluated (the CLI exits with code 2)."""


@dataclass
class LoadedRun:
    """A trained model ready to evaluate."""

    run_dir: Path
    config: dict[str, Any]
    data: dict[str, Any]
    nn_config: Any
    model: Any
    step: int
    run_data: RunData  # data.json read back by tjx.data

    @property
    def tokenizer(self) -> Any:
        """The run's tokenizer; ``None`` for an image run."""
        return self.run_data.tokenizer

    @property
    def objective(self) -> Any:
        """tjx.nn's `Objective` of the run's model: what it is scored on (``scores``, every
        token or not), its name, and whether it writes text (``decodes``)."""
        from tjx import nn

        return nn.objective_of(self.nn_config)


def _read(run_dir: Path, name: str) -> Any:
    """The mapping in the run's file ``name`` (tjx.ckpt's `RunDir` reads it); `RunError` if not."""
    from tjx import ckpt

    try:
        return ckpt.RunDir(run_dir).read(name)
    except ckpt.RunFileNotFoundError:
        raise RunError(
            f"--checkpoint: {str(run_dir)!r} has no {name}; is it a trainer run dir?"
        ) from None
    except ckpt.RunFileError as err:
        raise RunError(
            f"--checkpoint: {str(err.path)!r} is unreadable ({err.reason}); the trainer writes "
            "it, so the run directory was changed by hand or damaged"
        ) from None


def check_run_dir(run_dir: Path) -> None:
    """Raise `RunError` unless ``run_dir`` holds a config, model description and a checkpoint."""
    from tjx import ckpt

    if ckpt.is_remote(run_dir):  # the bucket, the credentials: one line each (StorageError)
        ckpt.check_remote(run_dir, write=False)
    if not run_dir.is_dir():
        raise RunError(f"--checkpoint: no such run directory {str(run_dir)!r}")
    run = ckpt.RunDir(run_dir)
    for name in (run.CONFIG_FILE, run.MODEL_FILE, run.DATA_FILE):
        _read(run_dir, name)
    # Any step folder: which step reads back intact is for the restore to find (and say).
    if not run.has_checkpoints():
        raise RunError(f"--checkpoint: {str(run_dir)!r} holds no checkpoint yet")


def load_run(run_dir: Path, step: int | None = None) -> LoadedRun:
    """Config, model with the checkpoint's params (latest unless ``step``), tokenizer."""
    from tjx import ckpt, data, nn

    check_run_dir(run_dir)
    config = _read(run_dir, "config.yaml")
    info = _read(run_dir, "data.json")
    try:
        nn_config = nn.config_from_dict(_read(run_dir, "model.json"))
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        if isinstance(err, RunError):
            raise
        raise RunError(
            f"--checkpoint: {str(run_dir / 'model.json')!r} does not describe a tjx.nn model "
            f"({type(err).__name__}: {err}); the trainer writes it, so it was changed by hand"
        ) from None
    abstract = nnx.eval_shape(lambda: nn.build_model(nn_config, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)  # type: ignore[misc]
    target = nnx.to_pure_dict(params)
    # tjx.ckpt picks the step: with none given, the newest that reads back intact (a corrupt
    # newer one is skipped with one warning line naming it), as the trainer's --resume does.
    with ckpt.corrupt_fallback_lines("eval"):
        step, restored = ckpt.restore_params_and_step(
            run_dir / "checkpoints", target=target, step=step
        )
    # The RNG streams are unused in evaluation; concrete stand-ins let the model merge.
    model = nnx.merge(graphdef, restored, nn.concrete_state(rest))
    # tjx.data reads back what the trainer wrote (its RunData.describe), tokenizer included.
    try:
        run_data = data.RunData.from_description(info)
    except data.DataError as err:
        raise RunError(f"--checkpoint: {str(run_dir / 'data.json')!r}: {err}") from None
    return LoadedRun(run_dir, config, info, nn_config, model, int(step), run_data)


def heldout_dir(run: LoadedRun, source: str | None) -> tuple[Path, float | None]:
    """Validation shards and bytes/token: the run's own, or ``source`` with the run's tokenizer.

    ``source`` goes through tjx.data's shard cache exactly as the trainer's ``data.source`` does
    (same folder, same held-out split of a local file, fresh shards after a local file changes),
    in the run's cache folder.
    """
    import sys

    from tjx import data

    try:
        return run.run_data.heldout_shards(
            source, progress=sys.stderr.isatty(), names={"source": "--data"}
        )
    except data.DataError as err:
        raise RunError(str(err) if err.argument else f"--checkpoint: {err}") from None
