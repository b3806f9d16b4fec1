"""CheckpointManager: a whole train state per step, atomic, validated, on orbax.

See the package README for the on-disk layout and the atomicity argument.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import jax
import orbax.checkpoint as ocp

from tjx.ckpt import objects, orbax_internals, storage
from tjx.ckpt.durable import TMP_DIR_SUFFIX
from tjx.ckpt.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    StepExistsError,
)
from tjx.ckpt.fallback import collect_failed_read, silence_failed_reads, warn_skipped
from tjx.ckpt.fingerprint import fingerprints
from tjx.ckpt.metadata import collect_metadata, to_json
from tjx.ckpt.options import TRASH_DIR, finite, orbax_manager, positive_or_none
from tjx.ckpt.reader import (
    CONFIG,
    DATA_STATE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    STATE,
    Restored,
    StepContents,
    no_readable_step_error,
    read_data_state,
    read_step,
)
from tjx.ckpt.retention import prune
from tjx.ckpt.treepaths import flatten, nest
from tjx.ckpt.validate import storable
from tjx.ckpt.write_failure import held_save_logs, write_failure

CORRUPT_DIR = "_corrupt"  # a corrupt step is moved here when its step number is saved again
#: The prefix of the folder each save makes and removes first, to learn that it can write.
PROBE_PREFIX = ".tjx-write-probe-"


class _ReadOnlyLine(logging.Filter):
    """Drops orbax's ``Given directory is read only=...`` warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


@contextlib.contextmanager
def _quiet_read_only() -> Iterator[None]:
    logger, quiet = logging.getLogger("absl"), _ReadOnlyLine()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class CheckpointManager:
    """Saves and restores whole train states under ``directory``, one sub-directory per step.

    Parameters
    ----------
    directory:
        The run's checkpoint directory (created unless ``read_only``).
    keep_last:
        Keep the newest ``keep_last`` steps (None keeps all).
    keep_best:
        Also keep the ``keep_best`` best steps by ``metrics[best_metric]`` (None: off).
    best_metric:
        The metric name ranked by ``keep_best`` (required with it).
    best_mode:
        ``"min"`` or ``"max"``: which end of ``best_metric`` is best.
    save_every:
        ``save(step)`` writes only when ``step % save_every == 0`` (or ``force``); None: always.
    async_save:
        Write in a background thread; ``save`` returns once device arrays are copied to host.
    mesh:
        The training mesh, recorded in the metadata.
    metadata:
        Extra JSON-able run metadata stored with every step.
    read_only:
        Open an existing directory for restoring only: nothing is created, cleaned or deleted.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep_last: int | None = 3,
        keep_best: int | None = None,
        best_metric: str | None = None,
        best_mode: str = "min",
        save_every: int | None = None,
        async_save: bool = True,
        mesh: Any = None,
        metadata: Mapping[str, Any] | None = None,
        read_only: bool = False,
    ) -> None:
        positive_or_none("keep_last", keep_last)
        positive_or_none("keep_best", keep_best)
        positive_or_none("save_every", save_every)
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        if keep_best is not None and not best_metric:
            raise ValueError("best_metric must name a metric when keep_best is set")
        self.directory: Any = storage.as_path(directory)
        self.remote = storage.is_remote(self.directory)
        if self.remote:
            storage.check_remote(self.directory, write=not read_only)
            if storage.scheme_of(self.directory) == "s3":
                orbax_internals.install()
        else:
            self.directory = Path(self.directory).absolute()
            if self.directory.exists() and not self.directory.is_dir():
                raise CheckpointError(f"{self.directory} exists and is not a directory")
        if read_only and not self._exists():
            raise CheckpointNotFoundError(f"checkpoint directory {self.directory} does not exist")
        self.keep_last, self.keep_best = keep_last, keep_best
        self.best_metric, self.best_mode = best_metric, best_mode
        self.save_every, self.read_only = save_every, read_only
        self._corrupt: set[int] = set()
        self._metrics: dict[int, float | None] = {}  # best_metric per step (object stores)
        self._pending: int | None = None  # the step of an asynchronous save not waited for
        self._run_metadata = collect_metadata(mesh=mesh, extra=metadata)
        best_fn = None
        if keep_best is not None:
            metric = str(best_metric)
            best_fn = lambda m: float(m[metric])
        self._name_format = ocp.path.step.standard_name_format()
        self._purge_trash()
        if self.remote and not read_only and jax.process_index() == 0:
            objects.remove_uncommitted(self.directory)  # what a crash left (never listed)
        with _quiet_read_only():  # asked for: orbax's own line about it says nothing new
            self._mgr = orbax_manager(
                self.directory,
                remote=self.remote,
                read_only=read_only,
                keep_last=keep_last,
                keep_best=keep_best,
                best_fn=best_fn,
                best_mode=best_mode,
                async_save=async_save,
            )

    def _exists(self) -> bool:
        if self.remote:  # no directories on a store: a checkpoint directory is its objects
            return bool(objects.step_prefixes(self.directory))
        return bool(self.directory.is_dir())

    # ------------------------------------------------------------------ queries

    def all_steps(self) -> list[int]:
        """Committed steps on disk now, ascending (orbax's finalization check; no tmp dirs)."""
        if self.remote:
            return objects.committed_steps(self.directory)
        if not self.directory.is_dir():
            return []
        return sorted(m.step for m in self._name_format.find_all(self.directory))

    def latest_step(self) -> int | None:
        """The newest committed step, or None (not checked for corruption: see ``restore``)."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def should_save(self, step: int) -> bool:
        """Whether ``save(step)`` would write without ``force``."""
        return self.save_every is None or step % self.save_every == 0

    # ------------------------------------------------------------------ save

    def save(
        self,
        step: int,
        *,
        state: Any,
        data_state: Any = None,
        config: Any = None,
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Saves one step: state arrays, data-iterator state, config, metadata, metrics.

        Parameters
        ----------
        step:
            The training step (the step directory's name).
        state:
            A pytree of jax/numpy arrays and int/float/bool scalars (params, optimizer state,
            step, PRNG key ...). Typed PRNG keys are stored as raw ``uint32`` key data plus
            their impl name. Must not be modified in place before the save finishes
            (jax arrays are immutable; numpy leaves are copied).
        data_state:
            The data iterator's ``state_dict()`` (JSON-able).
        config:
            The run config: a dataclass or mapping, converted to JSON.
        metrics:
            Scalars recorded with the step; ``metrics[best_metric]`` ranks ``keep_best``.
        force:
            Save even when ``save_every`` says no.

        Returns
        -------
        bool
            True if a save was started.

        Raises
        ------
        StepExistsError
            If ``step`` is already committed (and was not found corrupt by ``restore``).
        CheckpointWriteError
            The directory cannot be written (read-only, full ...: found by a probe folder, at
            once), or the save before this one failed in the background; an async save's own
            failure comes from `wait_until_finished`, `check_for_errors` or the next ``save``.
        """
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read_only")
        step = int(step)  # a jax/numpy scalar step is fine
        if not force and not self.should_save(step):
            return False
        stored, specs = {}, {}
        for path, leaf in flatten(state).items():
            stored[path], specs[path] = storable(path, leaf)
        if not stored:
            raise ValueError("state has no array leaves to save")
        prints = fingerprints(stored)
        metadata = dict(self._run_metadata)
        metadata["time"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        metrics_json = to_json(dict(metrics), "metrics") if metrics is not None else None
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "leaves": {p: specs[p].to_json(prints[p]) for p in stored},
            "metadata": metadata,
            "metrics": metrics_json,
        }
        args = ocp.args.Composite(
            **{
                STATE: ocp.args.PyTreeSave(nest(stored)),
                DATA_STATE: ocp.args.JsonSave(to_json(data_state, "data_state")),
                CONFIG: ocp.args.JsonSave(to_json(config, "config")),
                MANIFEST: ocp.args.JsonSave(manifest),
            }
        )
        self.wait_until_finished()  # a failure of the save before: its CheckpointWriteError
        if step in self.all_steps():
            if step not in self._corrupt:
                raise StepExistsError(f"step {step} already has a checkpoint in {self.directory}")
            self._quarantine(step)
        ranked = metrics_json if self.best_metric in (metrics_json or {}) else None  # keys: str
        if self.best_metric is not None:
            self._metrics[step] = finite((metrics_json or {}).get(self.best_metric))
        self._check_writable(step)
        # The debris a failed write leaves (callbacks into orbax's closed loop, its abandoned
        # coroutines) arrives from tensorstore's threads before the failure reaches us.
        silence_failed_reads()
        held_save_logs().start()
        try:
            started = bool(self._mgr.save(step, args=args, metrics=ranked, force=True))
        except Exception as err:
            self._write_failed(step, err)
        if started:
            self._pending = step  # (finished in the background): `wait_until_finished` says how
        else:
            held_save_logs().settle(said=False)
        return started

    def _check_writable(self, step: int) -> None:
        """A folder made and removed in the checkpoint directory, so that a read-only or full
        disk is one `CheckpointWriteError` here: orbax makes the step's folder in a background
        thread, and when that fails its other threads wait for it for minutes (the coordination
        timeout) before the process can end. Local disks only (an object store has no
        folders)."""
        if self.remote:
            return
        try:
            os.rmdir(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=self.directory))
        except OSError as err:
            self._write_failed(step, err, started=False)

    def _write_failed(self, step: int, err: Exception, *, started: bool = True) -> NoReturn:
        """Raise the `CheckpointWriteError` of a save that failed on an OS error, after removing
        what it wrote (else ``err`` itself, as orbax raised it)."""
        found = write_failure(err)
        if started:
            held_save_logs().settle(said=found is not None)
        if found is None:
            raise err
        if started:
            self._remove_partial(step)
            # orbax's list of steps lost the committed ones with the failed step: read it again,
            # or keep-N would never delete them.
            with contextlib.suppress(Exception):
                self._mgr.reload()
        gc.collect()  # orbax's abandoned write coroutines close now, silenced, not at exit
        raise CheckpointWriteError(
            f"cannot write checkpoint step {step} to {self.directory}: {found.reason}; nothing "
            "of it was committed (its partial files are removed) and the steps committed before "
            f"are intact ({found.detail})",
            step=step,
            directory=str(self.directory),
            reason=found.reason,
            errno=found.errno,
        ) from err

    def _remove_partial(self, step: int) -> None:
        """Remove what a failed save of ``step`` wrote, never a committed step (process 0)."""
        if jax.process_index() != 0 or step in self.all_steps():
            return
        with contextlib.suppress(Exception):  # best effort: a read-only disk keeps its debris
            if self.remote:
                objects.remove_uncommitted(self.directory)
            else:
                for partial in self.directory.glob(f"{step}{TMP_DIR_SUFFIX}*"):
                    shutil.rmtree(partial, ignore_errors=True)

    def _quarantine(self, step: int) -> None:
        if self.remote:  # no rename: uncommitted (marker first), the new save replaces it
            objects.remove_step(self.directory / str(step))
            self._corrupt.discard(step)
            self._mgr.reload()
            return
        # Keep the corrupt step for inspection instead of deleting it; a rename is atomic.
        dest = self.directory / CORRUPT_DIR / f"{step}-{time.time_ns()}"
        dest.parent.mkdir(exist_ok=True)
        os.rename(self.directory / str(step), dest)
        self._corrupt.discard(step)
        self._mgr.reload()

    def _purge_trash(self) -> None:
        """Empty ``_deleted/`` and remove it: orbax makes it again for its next removal.

        Runs when no removal is under way (on opening, and after orbax's save-and-remove work
        has finished), so nothing is renamed into the folder while it goes.
        """
        if self.read_only or jax.process_index() != 0:
            return
        if self.remote:
            self._prune()
            return
        trash = self.directory / TRASH_DIR
        if trash.is_dir():
            for entry in trash.iterdir():
                shutil.rmtree(entry, ignore_errors=True)
            with contextlib.suppress(OSError):  # not empty: an entry rmtree could not remove
                trash.rmdir()

    def _prune(self) -> None:
        """Object stores: delete the steps keep-N / best-K let go (`tjx.ckpt.retention`)."""
        if hasattr(self, "_mgr"):
            gone = prune(
                self.directory,
                self.all_steps(),
                keep_last=self.keep_last,
                keep_best=self.keep_best,
                best_metric=self.best_metric,
                best_mode=self.best_mode,
                known=self._metrics,
            )
            if gone:
                self._mgr.reload()

    def wait_until_finished(self) -> None:
        """Blocks until the pending async save (and old-step removal) has finished.

        Raises
        ------
        CheckpointWriteError
            The save could not be written (a full disk, a read-only folder ...): its partial
            files are removed, the steps committed before stay.
        """
        if not hasattr(self, "_mgr"):
            return
        self._finish_pending()
        self._purge_trash()

    def _finish_pending(self) -> None:
        """orbax's wait, and what it says of the pending save (`wait_until_finished`)."""
        step, self._pending = self._pending, None
        try:
            self._mgr.wait_until_finished()
        except Exception as err:
            if step is None:
                raise
            self._write_failed(step, err)
        if step is not None:
            held_save_logs().settle(said=False)

    def check_for_errors(self) -> None:
        """Raises the `CheckpointWriteError` of an asynchronous save that has failed; returns at
        once while one is still being written (no wait): a training loop calls it at each step,
        so that a full disk stops the run at the next step, not at the next save."""
        if self._pending is not None and not self._mgr.is_saving_in_progress():
            self.wait_until_finished()

    def close(self) -> None:
        """Waits for pending work and releases orbax resources."""
        self.wait_until_finished()
        self._mgr.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ restore

    def _read(
        self, step: int | None, target: Any, subtree: str | None
    ) -> tuple[int, StepContents, tuple[int, ...]]:
        self._finish_pending()  # a pending save first (its failure: CheckpointWriteError)
        steps = self.all_steps()
        if not steps:
            raise CheckpointNotFoundError(f"no complete checkpoint in {self.directory}")
        if step is not None:
            if step not in steps:
                raise CheckpointNotFoundError(
                    f"step {step} has no complete checkpoint in {self.directory} "
                    f"(complete steps: {steps})"
                )
            try:
                return step, read_step(self._mgr, step, target=target, subtree=subtree), ()
            except CorruptCheckpointError:
                self._corrupt.add(step)  # so that saving this step again may replace it
                collect_failed_read()
                raise
        failures: list[tuple[int, CorruptCheckpointError]] = []
        # Installed before the first read, not after a failure: the in-flight reads of a failed
        # step call back into orbax's closed loop from tensorstore's threads at once, often
        # before the failure has even reached this frame (a race CI lost once).
        silence_failed_reads()
        for candidate in reversed(steps):
            try:
                contents = read_step(self._mgr, candidate, target=target, subtree=subtree)
            except CorruptCheckpointError as err:
                self._corrupt.add(candidate)
                failures.append((candidate, err))
                collect_failed_read()
                continue
            warn_skipped(failures, f"; using step {candidate}")
            return candidate, contents, tuple(step for step, _ in failures)
        warn_skipped(failures, "")
        raise no_readable_step_error(self.directory, failures) from failures[0][1]

    def restore(self, step: int | None = None, *, target: Any = None) -> Restored:
        """Restores a step (default: the newest one that reads back intact).

        Parameters
        ----------
        step:
            The step to restore; None takes the latest complete step, skipping (with a
            :class:`CorruptCheckpointWarning` naming it) any that cannot be read back intact.
        target:
            A tree like the saved state whose leaves are jax arrays or
            ``jax.ShapeDtypeStruct`` with shardings (restored onto those shardings, whatever
            the mesh at save time), numpy arrays or Python scalars. Structure, shapes, dtypes
            (and PRNG impls) are checked first. None restores nested dicts as saved, jax
            leaves on the first local device.

        Returns
        -------
        Restored

        Raises
        ------
        CheckpointNotFoundError
            No complete checkpoint (or not ``step``).
        CheckpointMismatchError
            The checkpoint does not fit ``target``; the message names the first path.
        CorruptCheckpointError
            ``step`` was given and is corrupt, or every step is.
        """
        found, contents, skipped = self._read(step, target, None)
        manifest = contents.manifest
        return Restored(
            step=found,
            state=contents.state,
            data_state=contents.data_state,
            config=contents.config,
            metadata=dict(manifest.get("metadata") or {}),
            metrics=manifest.get("metrics"),
            skipped=skipped,
        )

    def data_state(self, step: int | None = None) -> Any:
        """The loader state saved with ``step`` (default: the newest committed step), read alone.

        Only that JSON item is read, no array: a resume checks its data against it before the
        compile and the restore (minutes on a large model). The newest step is not checked for
        corruption beyond its commit (`restore` may still skip it and read an older one).

        Returns
        -------
        The state as saved (a mapping), or None when the step saved none.

        Raises
        ------
        CheckpointNotFoundError
            No complete checkpoint (or not ``step``).
        CorruptCheckpointError
            The step's loader state cannot be read.
        """
        self._finish_pending()  # a pending save first, as `restore`
        steps = self.all_steps()
        if not steps or (step is not None and step not in steps):
            which = "complete checkpoint" if step is None else f"complete step {step}"
            raise CheckpointNotFoundError(f"no {which} in {self.directory}")
        return read_data_state(self._mgr, steps[-1] if step is None else step)

    def restore_params(
        self, *, target: Any, step: int | None = None, subtree: str = "params"
    ) -> Any:
        """Restores only the ``subtree`` part of the state (default ``params``) onto ``target``.

        Same step choice, validation and resharding as :meth:`restore`; nothing else is read.
        """
        return self._read(step, target, subtree)[1].state

    def restore_params_and_step(
        self, *, target: Any, step: int | None = None, subtree: str = "params"
    ) -> tuple[int, Any]:
        """Like :meth:`restore_params`, plus the step read (the newest intact one by default)."""
        found, contents, _ = self._read(step, target, subtree)
        return found, contents.state
