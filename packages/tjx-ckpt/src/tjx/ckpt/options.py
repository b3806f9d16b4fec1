"""orbax's manager under a tjx-ckpt one (options, items, state handler), and option checks."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from tjx.ckpt import remote as _remote
from tjx.ckpt.durable import DurableAtomicRenameTemporaryPath
from tjx.ckpt.orbax_internals import ArrayMetadataStore
from tjx.ckpt.reader import CONFIG, DATA_STATE, MANIFEST, STATE
from tjx.ckpt.stepfiles import CheckedNameFormat

TRASH_DIR = "_deleted"  # old steps are renamed here (atomic), then removed with the folder
#: A step's items, each a folder of the step.
ITEMS = (STATE, DATA_STATE, CONFIG, MANIFEST)


def positive_or_none(name: str, value: int | None) -> None:
    """ValueError naming ``name`` unless ``value`` is None or an int >= 1."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")


def finite(value: Any) -> float | None:
    """``float(value)`` when it is a finite number, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def orbax_manager(
    directory: Any,
    *,
    remote: bool,
    read_only: bool,
    keep_last: int | None,
    keep_best: int | None,
    best_fn: Any,
    best_mode: str,
    async_save: bool,
) -> ocp.CheckpointManager:
    """orbax's manager of ``directory``: its options, its items and the state's handler.

    On a local disk orbax's policies delete old steps (renamed into ``_deleted/`` first) and the
    commit is a durable rename (`tjx.ckpt.durable`). On an object store the commit is the marker
    (`tjx.ckpt.remote`, for steps and items alike) and orbax keeps every step: the manager
    deletes old ones itself, marker first (`tjx.ckpt.retention`).
    """
    policies: list[Any] = [ocm.LatestN(n=None if remote else keep_last)]
    if best_fn is not None and not remote:
        policies.append(
            ocm.BestN(
                get_metric_fn=best_fn,
                reverse=best_mode == "min",
                n=keep_best,
                keep_checkpoints_without_metrics=False,
            )
        )
    step_class: Any = (
        _remote.CommitMarkerTemporaryPath if remote else DurableAtomicRenameTemporaryPath
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy(policies),
        best_fn=best_fn,
        best_mode=best_mode,
        create=not read_only,
        read_only=read_only,
        cleanup_tmp_directories=not read_only and not remote,
        todelete_subdir=None if read_only or remote else TRASH_DIR,
        temporary_path_class=step_class,  # orbax's never fsyncs, nor lists its files
        # Items commit by a file on a store too (s3's default would rename, i.e. copy).
        atomicity_options=(
            ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode.COMMIT_FILE)
            if remote
            else None
        ),
        # orbax's naming, but a malformed _CHECKPOINT_METADATA no longer breaks opening.
        step_name_format=CheckedNameFormat(
            ocp.path.step.standard_name_format(temporary_path_cls=step_class)
        ),
        enable_async_checkpointing=async_save,
        save_root_metadata=False,
        # orbax warns when read_only meets the default interval of 1.
        save_interval_steps=0 if read_only else 1,
    )
    return ocp.CheckpointManager(
        directory, options=options, item_names=ITEMS, item_handlers={STATE: state_handler()}
    )


def state_handler(
    platform: str | None = None, processes: int | None = None
) -> ocp.PyTreeCheckpointHandler:
    """The train state's orbax handler: orbax's default one, with replica-parallel saving only on
    TPUs or across processes.

    The type handlers are orbax's defaults for the leaves a stored state can hold (jax and numpy
    arrays, and orbax's scalars and strings); only the jax array handler's
    ``use_replica_parallel`` differs, so the files written are the same.

    Parameters
    ----------
    platform
        The devices' platform; default jax's default backend.
    processes
        The run's process count; default ``jax.process_count()``.
    """
    shared = (platform or jax.default_backend()) == "tpu" or (processes or jax.process_count()) > 1
    scalars = ocp.type_handlers.ScalarHandler()
    arrays = ocp.type_handlers.ArrayHandler(
        use_replica_parallel=shared,
        array_metadata_store=ArrayMetadataStore(),
    )
    registry = ocp.type_handlers.create_type_handler_registry(
        (int, scalars),
        (float, scalars),
        (bytes, scalars),
        (np.number, scalars),
        (np.ndarray, ocp.type_handlers.NumpyHandler()),
        (jax.Array, arrays),
        (str, ocp.type_handlers.StringHandler()),
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


__all__ = ["ITEMS", "TRASH_DIR", "finite", "orbax_manager", "positive_or_none", "state_handler"]
