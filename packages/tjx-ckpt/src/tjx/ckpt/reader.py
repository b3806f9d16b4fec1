"""Reading one committed step back: manifest, validation against a target, arrays, fingerprints.

Nothing here writes to the checkpoint directory. Every failure to read a step that orbax lists
as committed is turned into :class:`CorruptCheckpointError` (so the manager can fall back to an
older step); a step that reads fine but does not fit the target raises
:class:`CheckpointMismatchError` (never a fallback: another model's checkpoint is an error).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from tjx.ckpt.errors import CheckpointMismatchError, CorruptCheckpointError, one_line
from tjx.ckpt.fingerprint import fingerprints
from tjx.ckpt.reasons import read_failure, specific_cause
from tjx.ckpt.stepfiles import array_store_problem, commit_problem, recorded_files_problem
from tjx.ckpt.storage import as_path
from tjx.ckpt.treepaths import SEP, flatten, nest, unflatten_like
from tjx.ckpt.validate import LeafSpec, adopt_host_kinds, check_against, target_spec

FORMAT = "tjx-ckpt"
FORMAT_VERSION = 1
STATE, DATA_STATE, CONFIG, MANIFEST = "state", "data_state", "config", "manifest"
# Steps named one by one in the "no readable checkpoint" error (the newest); each skipped step
# also had its own warning, so the rest are counted, keeping the error one short line.
_LISTED_STEPS = 3


@dataclasses.dataclass(frozen=True)
class Restored:
    """A restored step.

    Attributes
    ----------
    step:
        The step restored.
    state:
        The train state, shaped like the target (nested dicts without a target).
    data_state, config:
        The JSON items as saved (``config`` as converted by :func:`tjx.ckpt.metadata.to_json`).
    metadata:
        Run metadata recorded at save time (versions, git commit, mesh shape, time, ...).
    metrics:
        The metrics given to ``save`` (None if none).
    skipped:
        Newer steps that were skipped as corrupt, newest first.
    """

    step: int
    state: Any
    data_state: Any
    config: Any
    metadata: dict[str, Any]
    metrics: dict[str, Any] | None = None
    skipped: tuple[int, ...] = ()


def _is_target_leaf(x: Any) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct)


def corrupt(step: int, where: Any, reason: str) -> CorruptCheckpointError:
    """``step N (WHERE): REASON``, the reason cut to one short line (raise it ``from`` the cause).

    Paths inside the step are written relative to it (``state/d/...``): the step's path is said
    once, and tensorstore repeats it several times per message.
    """
    reason = reason.replace(f"{where}/", "")
    short = one_line(reason)
    return CorruptCheckpointError(f"step {step} ({where}): {short}", reason=short)


def _failed(what: str, err: BaseException) -> str:
    cause = specific_cause(err)  # not orbax's wrapper, whose message is a method's repr
    return f"{what} ({type(cause).__name__}: {one_line(str(cause), limit=10_000)})"


def no_readable_step_error(
    directory: Any, failures: list[tuple[int, CorruptCheckpointError]]
) -> CorruptCheckpointError:
    """The error when every step (newest first in ``failures``) was corrupt: one short line."""
    listed = "; ".join(
        f"step {step}: {err.reason or one_line(str(err))}" for step, err in failures[:_LISTED_STEPS]
    )
    more = len(failures) - _LISTED_STEPS
    if more > 0:
        listed += f"; {more} older step{'s' * (more > 1)} too (see the warnings)"
    return CorruptCheckpointError(f"no readable checkpoint in {directory}: {listed}")


def read_data_state(mgr: ocp.CheckpointManager, step: int) -> Any:
    """The loader state saved with ``step``, read alone (no array is opened); None if it has none.

    For a check of the data before anything costly (a compile, the arrays' read): the step is
    checked as committed first; any failure to read it is a `CorruptCheckpointError`.
    """
    where = mgr.directory / str(step)
    if (problem := commit_problem(as_path(str(where)))) is not None:
        raise corrupt(step, where, problem)
    try:
        item = mgr.restore(step, args=ocp.args.Composite(**{DATA_STATE: ocp.args.JsonRestore()}))
        return item[DATA_STATE]
    except Exception as err:  # any failure to read a committed step is corruption
        raise corrupt(step, where, _failed("its loader state cannot be read", err)) from err


def read_manifest(mgr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    """The manifest of ``step``; CorruptCheckpointError when missing or malformed."""
    where = mgr.directory / str(step)
    try:
        manifest = mgr.restore(step, args=ocp.args.Composite(**{MANIFEST: ocp.args.JsonRestore()}))[
            MANIFEST
        ]
    except Exception as err:  # any failure to read a committed step is corruption
        raise corrupt(step, where, _failed("its tjx manifest cannot be read", err)) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise corrupt(step, where, f"not a {FORMAT} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointMismatchError(
            f"step {step} ({where}) has format version {manifest['format_version']}; this "
            f"tjx-ckpt reads up to {FORMAT_VERSION}: upgrade tjx-ckpt"
        )
    leaves = manifest.get("leaves")
    if not isinstance(leaves, dict) or not leaves:
        raise corrupt(step, where, "the manifest lists no leaves")
    for path, entry in leaves.items():
        if not _valid_entry(entry):
            raise corrupt(step, where, f"bad manifest entry for {path}")
    return manifest


def _valid_entry(entry: Any) -> bool:
    # A manifest comes from disk: check its form before any of it is used.
    try:
        shape_ok = all(isinstance(d, int) and d >= 0 for d in entry["shape"])
        jnp.dtype(entry["dtype"])
        impl = entry.get("prng_impl")
        kind_ok = entry["kind"] in ("jax", "numpy", "python")
        return shape_ok and kind_ok and (impl is None or isinstance(impl, str))
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def _specs_from_manifest(leaves: Mapping[str, Any], sharding: Any) -> dict[str, LeafSpec]:
    return {
        path: LeafSpec(tuple(e["shape"]), e["dtype"], e["kind"], e.get("prng_impl"), sharding)
        for path, e in leaves.items()
    }


def _restore_args(specs: Mapping[str, LeafSpec]) -> tuple[dict[str, Any], dict[str, Any]]:
    items, args = {}, {}
    for path, spec in specs.items():
        dtype = jnp.dtype(spec.dtype)
        if spec.kind == "jax":
            items[path] = jax.ShapeDtypeStruct(spec.shape, dtype, sharding=spec.sharding)
            args[path] = ocp.ArrayRestoreArgs(
                sharding=spec.sharding, global_shape=spec.shape, dtype=dtype
            )
        else:
            items[path] = jax.ShapeDtypeStruct(spec.shape, dtype)
            args[path] = ocp.RestoreArgs(restore_type=np.ndarray)
    return nest(items), nest(args)


def _check_shardings(specs: Mapping[str, LeafSpec]) -> None:
    # A target sharding that cannot hold its array is the caller's error: report it before
    # reading, or the read would fail and the step be taken for corrupt.
    for path, spec in specs.items():
        if spec.kind == "jax" and spec.sharding is not None:
            try:
                spec.sharding.shard_shape(spec.shape)
            except Exception as err:  # jax raises several types here
                raise ValueError(
                    f"{path}: sharding {spec.sharding} does not fit shape {spec.shape}: {err}"
                ) from err


def _to_leaf(x: Any, spec: LeafSpec, saved_dtype: str) -> Any:
    if spec.prng_impl is not None:
        return jax.random.wrap_key_data(x, impl=spec.prng_impl)
    if spec.kind == "python":
        value = np.asarray(x).item()
        kind = np.dtype(spec.dtype).kind
        return bool(value) if kind == "b" else float(value) if kind == "f" else int(value)
    if spec.kind == "numpy":
        return np.asarray(x, dtype=jnp.dtype(saved_dtype))
    return x


@dataclasses.dataclass(frozen=True)
class StepContents:
    """What :func:`read_step` returns: the state tree, JSON items and the manifest."""

    state: Any
    data_state: Any
    config: Any
    manifest: dict[str, Any]


def read_step(
    mgr: ocp.CheckpointManager,
    step: int,
    *,
    target: Any = None,
    subtree: str | None = None,
    verify: bool = True,
) -> StepContents:
    """Reads, validates and returns one step.

    Parameters
    ----------
    mgr:
        The orbax manager over the run directory.
    step:
        A committed step.
    target:
        Tree of arrays / ShapeDtypeStructs (with shardings) / numpy arrays / scalars giving
        structure, shapes, dtypes and placement; None restores every leaf as saved (jax leaves
        on the first local device) into nested dicts.
    subtree:
        Restore only this top-level subtree of the state (e.g. ``"params"``); ``target`` is
        then the subtree's target. JSON items are not read.
    verify:
        Compare the restored arrays' fingerprints with the manifest.

    Raises
    ------
    CheckpointMismatchError
        If the checkpoint does not fit ``target``.
    CorruptCheckpointError
        If the step cannot be read back intact, or its files show it incomplete before anything
        is read (:mod:`tjx.ckpt.stepfiles`).
    """
    where = mgr.directory / str(step)
    step_dir = as_path(str(where))  # a local Path, or an epath.Path for gs:// and s3://
    # Checked before orbax opens anything (see tjx.ckpt.stepfiles): a folder no commit made is
    # not taken, and a step orbax would fail on is refused here, not with a traceback per leaf.
    if (problem := commit_problem(step_dir) or recorded_files_problem(step_dir)) is not None:
        raise corrupt(step, where, problem)
    manifest = read_manifest(mgr, step)
    saved = manifest["leaves"]
    prefix = f"{subtree}{SEP}" if subtree else ""
    if subtree and not any(p.startswith(prefix) for p in saved):
        raise CheckpointMismatchError(f"checkpoint {where} has no {subtree!r} subtree in its state")
    default_sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if target is None:
        specs = {
            p: s
            for p, s in _specs_from_manifest(saved, default_sharding).items()
            if p.startswith(prefix)
        }
    else:
        flat_target = flatten(target, is_leaf=_is_target_leaf)
        specs = {
            prefix + p: target_spec(p, leaf, default_sharding) for p, leaf in flat_target.items()
        }
        adopt_host_kinds(saved, specs)
        check_against(saved, specs, where=str(where), partial=bool(subtree))
    _check_shardings(specs)
    if (problem := array_store_problem(step_dir / STATE)) is not None:
        raise corrupt(step, where, problem)
    items, restore_args = _restore_args(specs)
    composite = {STATE: ocp.args.PyTreeRestore(items, restore_args, partial_restore=bool(subtree))}
    if not subtree:
        composite[DATA_STATE] = ocp.args.JsonRestore()
        composite[CONFIG] = ocp.args.JsonRestore()
    try:
        restored = mgr.restore(step, args=ocp.args.Composite(**composite))
        flat = flatten(restored[STATE])
    except Exception as err:  # tensorstore/ocdbt raise many types on bad data
        # orbax names an array by its path joined with "." (params.w0): said as ours (params/w0).
        names = {path.replace(SEP, "."): path for path in specs}
        raise corrupt(step, where, read_failure(err, names, str(where))) from err
    if set(flat) != set(specs):
        raise corrupt(step, where, "the arrays do not match its manifest")
    if verify:
        for path, fp in fingerprints(flat).items():
            expected = saved[path].get("fingerprint")
            if expected is not None and fp is not None and list(expected) != fp:
                raise corrupt(step, where, f"{path} differs from what was saved (fingerprint)")
    leaves = {p[len(prefix) :]: _to_leaf(flat[p], specs[p], saved[p]["dtype"]) for p in specs}
    state = (
        nest(leaves) if target is None else unflatten_like(target, leaves, is_leaf=_is_target_leaf)
    )
    if subtree:
        return StepContents(state, None, None, manifest)
    return StepContents(state, restored[DATA_STATE], restored[CONFIG], manifest)
