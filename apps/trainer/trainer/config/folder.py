"""A training run's directory: its layout, and the run's own files in it.

::

    RUN_DIR/
      config.yaml        the effective config (the first file ever written)
      model.json         what rebuilds the model (tjx.nn's description)
      data.json          what rebuilds the data (tjx.data's description)
      final.json         the last step's summary, once the run ended (`final_summary`)
      init.json          where the run started, if not from scratch (`RunDir.write_init`)
      wandb.json         the run's W&B run, logged to by every resume (`RunDir.wandb_run`)
      loss_curve.png     the loss plot
      samples/step_0000012.txt
      checkpoints/       a CheckpointManager's directory: one folder per step

`RunDir` is this layout over tjx.ckpt's `RunFolder`, the folder as storage (a local folder or a
``gs://`` / ``s3://`` URL; every file written whole or not at all; JSON standard, a NaN as
``null`` named in a ``"nonfinite"`` entry): the trainer writes these files, the evaluator and the
experiments read them (the evaluator by their names, through `RunFolder`). `RunDir.check_start`
says whether a run may start fresh or resume there before anything is written; `RunDir.lock` is
the one-writer lock a trainer holds while it runs (tjx.ckpt's `RunLock`: ``.tjx-lock`` on a disk,
``.tjx-lease/`` in object storage; readers take none).

Standard library, PyYAML and tjx.ckpt's storage only: the command line reads and checks its run
directory before it pays for jax, and after a Ctrl-C cut that import short.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

import yaml  # type: ignore[import-untyped]

from tjx.ckpt import (
    CheckpointError,
    RunFileError,
    RunFileNotFoundError,
    RunFolder,
    RunLock,
    check_can_create,
    check_unlocked,
    storage,
)
from tjx.ckpt.folder import write_if_changed
from tjx.ckpt.storage import StoragePath
from tjx.core.lazy import lazy_imports
from trainer.config.seams import ConfigData, Record

with lazy_imports(globals()):  # they load jax, which the command line must not wait for
    import chex

    from tjx.ckpt import digest

__all__ = ["RunDir", "RunStartError", "final_summary"]


class RunStartError(CheckpointError, ValueError):
    """A run directory cannot start as asked (`RunDir.check_start`).

    Attributes
    ----------
    path : Path or epath.Path
        The run directory.
    resume : bool
        What was asked: ``True``, to resume a run that holds no checkpoint; ``False``, to start
        fresh over one that does.
    """

    def __init__(self, path: Path, *, resume: bool) -> None:
        message = (
            f"no checkpoint in {str(path)!r}"
            if resume
            else f"{str(path)!r} already holds checkpoints"
        )
        super().__init__(message)
        self.path = path
        self.resume = resume


def final_summary(
    step: int,
    params: chex.ArrayTree,
    *,
    num_params: int,
    interrupted_by: str | None = None,
    validation: Mapping[str, float] | None = None,
) -> Record:
    """What ``final.json`` holds (`RunDir.write_final`): the last step, why the run stopped
    before its end, the parameters' digest and size, and the last validation metrics.

    Every process of a multi-host run must call this (in the same order): the digest of a
    parameter spread over several processes is a collective (`params_sha256`). Write the result
    on one process only.

    Parameters
    ----------
    step : int
        The last step trained.
    params : pytree
        The parameters at ``step`` (any sharding).
    num_params : int
        Their count.
    interrupted_by : str, optional
        Why the run stopped before its last step (a signal's name, a stop key); ``None``: it
        ran to the end.
    validation : mapping of str to float, optional
        The last validation metrics, written as ``val_<name>`` (one that is not finite as
        ``null``, named in the file's ``"nonfinite"`` entry: see `RunDir.write_json`).

    Returns
    -------
    dict
        ``step``, ``interrupted_by``, ``params_sha256``, ``num_params`` and ``val_*``.
    """
    return {
        "step": step,
        "interrupted_by": interrupted_by,
        "params_sha256": digest.params_sha256(params),  # loads jax: when a run finishes
        "num_params": num_params,
        **{f"val_{k}": v for k, v in (validation or {}).items()},
    }


class RunDir(RunFolder):
    """The directory of one training run (see the module docstring for its layout).

    Parameters
    ----------
    path:
        The run directory (need not exist before `create`): a local path, or a ``gs://`` /
        ``s3://`` URL (`tjx.ckpt.storage.as_path`; another scheme raises `UnsupportedURLError`).
    """

    CONFIG_FILE: ClassVar[str] = "config.yaml"
    MODEL_FILE: ClassVar[str] = "model.json"
    DATA_FILE: ClassVar[str] = "data.json"
    FINAL_FILE: ClassVar[str] = "final.json"
    INIT_FILE: ClassVar[str] = "init.json"
    WANDB_FILE: ClassVar[str] = "wandb.json"
    CURVE_FILE: ClassVar[str] = "loss_curve.png"
    SAMPLES_DIR: ClassVar[str] = "samples"

    @classmethod
    def is_run(cls, source: str | None) -> bool:
        """Whether ``source`` is a local folder holding a run (its ``model.json`` and
        ``config.yaml``), or such a folder and ``@STEP`` (`split_start`): a start from a run
        rather than from a Hugging Face checkpoint.

        >>> RunDir.is_run(None), RunDir.is_run("gpt2")
        (False, False)
        """
        if source is None:
            return False
        return cls._holds_run(Path(cls.split_start(source)[0]).expanduser())

    @classmethod
    def _holds_run(cls, path: Path) -> bool:
        return (path / cls.MODEL_FILE).is_file() and (path / cls.CONFIG_FILE).is_file()

    @classmethod
    def split_start(cls, source: str) -> tuple[str, int | None]:
        """``"runs/sft@75"`` → ``("runs/sft", 75)`` when ``runs/sft`` holds a run (a start from
        that step's checkpoint); anything else → ``(source, None)`` (the newest checkpoint).

        >>> RunDir.split_start("gpt2")
        ('gpt2', None)
        """
        path, sep, step = source.rpartition("@")
        if sep and step.isdigit() and cls._holds_run(Path(path).expanduser()):
            return path, int(step)
        return source, None

    @property
    def config_file(self) -> StoragePath:
        """``config.yaml``."""
        return self.path / self.CONFIG_FILE

    @property
    def final_file(self) -> StoragePath:
        """``final.json``."""
        return self.path / self.FINAL_FILE

    @property
    def curve_file(self) -> StoragePath:
        """``loss_curve.png``."""
        return self.path / self.CURVE_FILE

    def samples_file(self, step: int) -> StoragePath:
        """The text samples of ``step``: ``samples/step_0000012.txt``."""
        return self.path / self.SAMPLES_DIR / f"step_{step:07d}.txt"

    def create(self, config: str | Mapping[str, object]) -> bool:
        """Make the directory (and ``samples/``) and write ``config.yaml``; whether it wrote.

        ``config`` is the YAML text as its app renders it (the trainer's `Config.to_yaml`), or
        plain data, written as YAML in its own key order (``sort_keys=False``), as the user
        reads and writes config files.
        """
        if not storage.is_remote(self.path):  # a store has no folders to make
            (self.path / self.SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
        return write_if_changed(self.config_file, text)

    def write_final(self, summary: Mapping[str, object]) -> bool:
        """``final.json``: it exists whole or not at all (an app rebuilds it when missing)."""
        return self.write_json(self.FINAL_FILE, summary)

    def write_init(
        self, source: str, *, kind: str, step: int | None, model_type: str | None = None
    ) -> bool:
        """``init.json``: the run started from ``source`` (a checkpoint of an app's ``kind``, at
        ``step``; a Hugging Face folder's ``config.json`` ``model_type``, which the export
        writes back where its switches alone would not say it), unless the file exists: a
        resume keeps the first run's record. A local source is written as its absolute path (the
        run may be resumed from another folder), anything else (a hub name) as given. Returns
        whether it wrote."""
        if (self.path / self.INIT_FILE).exists():
            return False
        local = Path(source).expanduser()
        where = str(local.resolve()) if local.exists() else source
        record = {"init_from": where, "kind": kind, "step": step}
        if model_type is not None:  # absent from older runs' records: the export's default
            record["model_type"] = model_type
        return self.write_json(self.INIT_FILE, record)

    def read_init(self) -> Record | None:
        """``init.json`` (`write_init`'s record), or None without one: a run from scratch, or one
        an older app wrote. Errors as `read` for a file that cannot be read."""
        try:
            return self.read(self.INIT_FILE)
        except RunFileNotFoundError:
            return None

    def wandb_run(self) -> tuple[str, str]:
        """The run's W&B run, ``(id, name)``: ``wandb.json``'s, or a new id and the folder's name,
        written there at the first ask. Every segment of a resumed run logs to the one W&B run
        its start made (a run an older app wrote has none: its resumes log to a new one from
        here on).

        Raises
        ------
        RunFileError
            The file cannot be read, or holds no id and name as text.
        """
        try:
            record = self.read(self.WANDB_FILE)
        except RunFileNotFoundError:
            # W&B's own ids are 8 letters and digits; 12 hex digits do not meet another by chance.
            # The name: the folder's own (`--run-dir .` is the folder it names).
            local = not storage.is_remote(self.path)
            run = (
                secrets.token_hex(6),
                Path(self.path).resolve().name if local else self.path.name,
            )
            self.write_json(self.WANDB_FILE, {"id": run[0], "name": run[1]})
            return run
        run_id, name = record.get("id"), record.get("name")
        if not isinstance(run_id, str) or not run_id or not isinstance(name, str):
            raise RunFileError(self.path / self.WANDB_FILE, "no W&B run id and name as text")
        return run_id, name

    def write_samples(self, step: int, text: str) -> StoragePath:
        """Write ``text`` as the samples of ``step``; returns the file."""
        path = self.samples_file(step)
        if not storage.is_remote(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        write_if_changed(path, text)
        return path

    def read_config(self) -> ConfigData:
        """The saved ``config.yaml`` (errors as `read`)."""
        return self.read(self.CONFIG_FILE)

    def check_start(self, *, resume: bool) -> None:
        """Raise unless the run may start here: fresh (``resume=False``) or resumed.

        The directory must exist or be creatable (`check_can_create`), and no live trainer may
        hold it (`tjx.ckpt.lock.check_unlocked`: said before its checkpoints, the real reason
        a second trainer cannot start there). A fresh run needs a directory without step
        folders, committed or not (`has_checkpoints`: never train over an old run); a resumed
        one needs at least one (which step restores is the `CheckpointManager`'s to say).
        Nothing is written.

        Raises
        ------
        NotCreatableError
            The directory is a file, or cannot be made.
        RunLockedError
            Another trainer runs there (`lock` would be refused).
        RunStartError
            ``.resume`` says which: a resume without a checkpoint, or a fresh start over some.
        """
        check_can_create(self.path)
        check_unlocked(self.path)
        if resume != self.has_checkpoints():
            raise RunStartError(self.path, resume=resume)

    def lock(self, on_lost: Callable[[str], None] | None = None) -> RunLock:
        """The lock a trainer takes before it writes anything here (not taken yet: `acquire`
        it, or use it as a context manager); ``on_lost``: the line when a lease in object
        storage was taken over (`tjx.ckpt.lock.RunLock`)."""
        return RunLock(self.path, owner="trainer", on_lost=on_lost)
