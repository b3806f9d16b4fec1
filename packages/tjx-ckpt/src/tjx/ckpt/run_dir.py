"""A training run's directory: its layout, and reading and writing its files.

::

    RUN_DIR/
      config.yaml        the effective config (the first file ever written)
      model.json         what rebuilds the model (an app's description)
      data.json          what rebuilds the data (an app's description)
      final.json         the last step's summary, once the run ended (`final_summary`)
      init.json          where the run started, if not from scratch (`RunDir.write_init`)
      loss_curve.png     the loss plot
      samples/step_0000012.txt
      checkpoints/       a CheckpointManager's directory: one folder per step

``RUN_DIR`` is a local folder or a ``gs://`` / ``s3://`` URL (`tjx.ckpt.storage`). Every file is
written whole or not at all. On a disk: into a temporary file next to it, fsynced, then renamed
over the old one (a kill or a power loss mid-write leaves the old file or the new one, never
half a file). On an object store: as one object with one request, which the store shows whole
or not at all (there is no rename, and no folder to make). A file that already holds exactly the
new text is not rewritten, so a resume with the same settings leaves the run's files and their
times as they were.

The JSON files are standard JSON, which jq and strict parsers read: a NaN or an infinity (the
perplexity of a loss that grew to 8,703) is written as ``null`` and named in a ``"nonfinite"``
entry beside it (:mod:`tjx.core.standard_json`), and read back as the float it was.

Standard library and PyYAML only (orbax-checkpoint requires PyYAML too): ``import tjx.ckpt``
loads this module, not orbax or jax (see the package ``__init__``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml  # type: ignore[import-untyped]

from tjx.ckpt import objects, storage
from tjx.ckpt.errors import CheckpointError, one_line
from tjx.ckpt.fsync import fsync_dir, fsync_file
from tjx.ckpt.run_checks import RunStartError, check_can_create
from tjx.ckpt.storage import StoragePath
from tjx.core.config.yaml_io import load_yaml
from tjx.core.standard_json import dumps_json, loads_json

#: The commit marker of a step (orbax's ``atomicity.COMMIT_SUCCESS_FILE``, which tjx.ckpt.durable
#: writes), spelled out: this module must load without orbax and jax, so that an app can read its
#: run directory before importing them, or after a Ctrl-C cut their import short.
COMMIT_MARKER = "commit_success.txt"


class RunFileError(CheckpointError, ValueError):
    """A file of the run directory cannot be read as what it should hold.

    Attributes
    ----------
    path:
        The file.
    reason:
        Why, in one line: the parser's first line (``while parsing a flow sequence``), ``not
        UTF-8 (...)``, or ``not a mapping: it holds a list``.
    """

    def __init__(self, path: StoragePath, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class RunFileNotFoundError(RunFileError, FileNotFoundError):
    """A file of the run directory is missing (or is not a regular file); ``.path`` names it.

    A `RunFileError` (``.reason`` is ``"missing"``), so one ``except RunFileError`` answers
    every way a run file cannot be read; catch this one first to word a missing file apart.
    """

    def __init__(self, path: StoragePath) -> None:
        super().__init__(path, "missing")

    def __str__(self) -> str:
        return f"{self.path} is missing"  # a sentence, not "PATH: missing"


def write_if_changed(path: StoragePath, text: str) -> bool:
    """Write ``text`` to ``path`` atomically unless it already holds exactly that; whether it wrote.

    On a disk the text goes to ``.NAME.tmp`` in the same folder, is fsynced, and replaces
    ``path`` with one rename (then the folder is fsynced): ``path`` is the old file or the new
    one, whole, after any crash. A ``.NAME.tmp`` left by a crash is overwritten by the next
    write. On an object store (``gs://``, ``s3://``) it is one object written with one request.
    """
    data = text.encode("utf-8")
    if storage.is_remote(path):
        try:
            if objects.read_bytes(path) == data:
                return False
        except FileNotFoundError:
            pass
        objects.write_whole(path, data)
        return True
    path = Path(path)
    try:
        if path.read_bytes() == data:
            return False
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return True


def _parse(path: StoragePath) -> Any:
    try:
        if storage.is_remote(path):
            raw = objects.read_bytes(path)
        elif not path.is_file():
            raise RunFileNotFoundError(Path(path))
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise RunFileNotFoundError(path) from None
    except OSError as err:
        raise RunFileError(path, f"cannot be read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RunFileError(path, f"not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        return load_yaml(text) if path.suffix in (".yaml", ".yml") else loads_json(text)
    except (yaml.YAMLError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise RunFileError(path, one_line(str(err)) or type(err).__name__) from None


def final_summary(
    step: int,
    params: Any,
    *,
    num_params: int,
    interrupted_by: str | None = None,
    validation: Mapping[str, float] | None = None,
) -> dict[str, Any]:
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
    from tjx.ckpt.digest import params_sha256  # jax: loaded only when a run finishes

    return {
        "step": step,
        "interrupted_by": interrupted_by,
        "params_sha256": params_sha256(params),
        "num_params": num_params,
        **{f"val_{k}": v for k, v in (validation or {}).items()},
    }


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The directory of one training run (see the module docstring for its layout).

    Parameters
    ----------
    path:
        The run directory (need not exist before `create`): a local path, or a ``gs://`` /
        ``s3://`` URL (`tjx.ckpt.storage.as_path`; another scheme raises `UnsupportedURLError`).
    """

    path: StoragePath

    CONFIG_FILE: ClassVar[str] = "config.yaml"
    MODEL_FILE: ClassVar[str] = "model.json"
    DATA_FILE: ClassVar[str] = "data.json"
    FINAL_FILE: ClassVar[str] = "final.json"
    INIT_FILE: ClassVar[str] = "init.json"
    CURVE_FILE: ClassVar[str] = "loss_curve.png"
    SAMPLES_DIR: ClassVar[str] = "samples"
    CHECKPOINTS_DIR: ClassVar[str] = "checkpoints"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", storage.as_path(self.path))  # str, PathLike or URL

    @classmethod
    def is_run(cls, source: str | None) -> bool:
        """Whether ``source`` is a local folder holding a run (its ``model.json`` and
        ``config.yaml``): a start from a run rather than from a Hugging Face checkpoint.

        >>> RunDir.is_run(None), RunDir.is_run("gpt2")
        (False, False)
        """
        if source is None:
            return False
        path = Path(source).expanduser()
        return (path / cls.MODEL_FILE).is_file() and (path / cls.CONFIG_FILE).is_file()

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

    @property
    def checkpoints(self) -> StoragePath:
        """The checkpoint directory (give it to `CheckpointManager`)."""
        return self.path / self.CHECKPOINTS_DIR

    def samples_file(self, step: int) -> StoragePath:
        """The text samples of ``step``: ``samples/step_0000012.txt``."""
        return self.path / self.SAMPLES_DIR / f"step_{step:07d}.txt"

    def create(self, config: Mapping[str, Any]) -> bool:
        """Make the directory (and ``samples/``) and write ``config.yaml``; whether it wrote.

        The config is written as YAML in its own key order (``sort_keys=False``), as the user
        reads and writes config files.
        """
        if not storage.is_remote(self.path):  # a store has no folders to make
            (self.path / self.SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        return write_if_changed(self.config_file, yaml.safe_dump(dict(config), sort_keys=False))

    def write_json(self, name: str, data: Mapping[str, Any]) -> bool:
        """``name`` (``model.json``, ``data.json``, ``final.json``) as indented, sorted JSON.

        Standard JSON: a NaN or an infinity is written as ``null`` and named in the mapping's
        ``"nonfinite"`` entry (:mod:`tjx.core.standard_json`; `read` puts it back). Values JSON
        does not know are written as their ``str`` (a dtype, a path). Returns whether it wrote
        (unchanged content is not rewritten).
        """
        text = dumps_json(dict(data), indent=2, sort_keys=True, default=str)
        return write_if_changed(self.path / name, text)

    def write_final(self, summary: Mapping[str, Any]) -> bool:
        """``final.json``: it exists whole or not at all (an app rebuilds it when missing)."""
        return self.write_json(self.FINAL_FILE, summary)

    def write_init(self, source: str, *, kind: str, step: int | None) -> bool:
        """``init.json``: the run started from ``source`` (a checkpoint of an app's ``kind``, at
        ``step``), unless the file exists: a resume keeps the first run's record. A local source
        is written as its absolute path (the run may be resumed from another folder), anything
        else (a hub name) as given. Returns whether it wrote."""
        if (self.path / self.INIT_FILE).exists():
            return False
        local = Path(source).expanduser()
        where = str(local.resolve()) if local.exists() else source
        return self.write_json(self.INIT_FILE, {"init_from": where, "kind": kind, "step": step})

    def read_init(self) -> dict[str, Any] | None:
        """``init.json`` (`write_init`'s record), or None without one: a run from scratch, or one
        an older app wrote. Errors as `read` for a file that cannot be read."""
        try:
            return self.read(self.INIT_FILE)
        except RunFileNotFoundError:
            return None

    def write_samples(self, step: int, text: str) -> StoragePath:
        """Write ``text`` as the samples of ``step``; returns the file."""
        path = self.samples_file(step)
        if not storage.is_remote(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        write_if_changed(path, text)
        return path

    def read(self, name: str) -> dict[str, Any]:
        """The mapping in file ``name``: YAML for ``.yaml``/``.yml``, else JSON (the values a
        ``"nonfinite"`` entry names are floats again; bare ``NaN`` of older files reads too).

        Raises
        ------
        RunFileNotFoundError
            The file is missing.
        RunFileError
            It cannot be read or parsed, or holds something else than a mapping.
        """
        path = self.path / name
        data = _parse(path)
        if not isinstance(data, dict):
            holds = "nothing" if data is None else f"a {type(data).__name__}"
            raise RunFileError(path, f"not a mapping: it holds {holds}")
        return data

    def read_config(self) -> dict[str, Any]:
        """The saved ``config.yaml`` (errors as `read`)."""
        return self.read(self.CONFIG_FILE)

    def step_folders(self) -> list[int]:
        """Every step folder in ``checkpoints/``, committed or not, oldest first.

        A folder named by a bare step number: what a save renames its temporary folder to
        (``12.orbax-checkpoint-tmp...`` never counts). Use it to refuse starting a new run over
        an old one; whether a step can be restored is for the `CheckpointManager` to say. On an
        object store a step is written in place, so what a crash cut short is a step without its
        commit marker there (the analogue of the temporary folder): only committed steps count.
        """
        if storage.is_remote(self.checkpoints):
            return objects.committed_steps(self.checkpoints)
        try:
            entries = list(self.checkpoints.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(int(p.name) for p in entries if p.name.isdigit() and p.is_dir())

    def has_checkpoints(self) -> bool:
        """Whether ``checkpoints/`` holds any step folder (see `step_folders`)."""
        return bool(self.step_folders())

    def check_start(self, *, resume: bool) -> None:
        """Raise unless the run may start here: fresh (``resume=False``) or resumed.

        The directory must exist or be creatable (`check_can_create`). A fresh run needs a
        directory without step folders, committed or not (`has_checkpoints`: never train over
        an old run); a resumed one needs at least one (which step restores is the
        `CheckpointManager`'s to say). Nothing is written.

        Raises
        ------
        NotCreatableError
            The directory is a file, or cannot be made.
        RunStartError
            ``.resume`` says which: a resume without a checkpoint, or a fresh start over some.
        """
        check_can_create(self.path)
        if resume != self.has_checkpoints():
            raise RunStartError(self.path, resume=resume)

    def latest_step(self) -> int | None:
        """The newest committed step, or None.

        Committed: a step folder holding the commit marker (``commit_success.txt``), which the
        commit writes last before renaming the folder into place. A folder without it (a copy
        cut short, one made by hand) is what `CheckpointManager.restore` skips as never
        committed, so it is not the step to name in "continue with --resume".
        """
        if storage.is_remote(self.checkpoints):
            committed = objects.committed_steps(self.checkpoints)
        else:
            committed = [
                s
                for s in self.step_folders()
                if (self.checkpoints / str(s) / COMMIT_MARKER).is_file()
            ]
        return committed[-1] if committed else None


__all__ = ["RunDir", "RunFileError", "RunFileNotFoundError", "final_summary", "write_if_changed"]
