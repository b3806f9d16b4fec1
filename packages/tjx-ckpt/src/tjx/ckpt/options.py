"""orbax's options for a tjx-ckpt manager, local disk or object store, and option checks."""

from __future__ import annotations

import math
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from tjx.ckpt import remote as _remote
from tjx.ckpt.durable import DurableAtomicRenameTemporaryPath
from tjx.ckpt.stepfiles import CheckedNameFormat

TRASH_DIR = "_deleted"  # old steps are renamed here (atomic), then removed with the folder


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


def orbax_options(
    *,
    remote: bool,
    read_only: bool,
    keep_last: int | None,
    keep_best: int | None,
    best_fn: Any,
    best_mode: str,
    async_save: bool,
) -> Any:
    """orbax's ``CheckpointManagerOptions``.

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
    return ocp.CheckpointManagerOptions(
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


__all__ = ["TRASH_DIR", "finite", "orbax_options", "positive_or_none"]
