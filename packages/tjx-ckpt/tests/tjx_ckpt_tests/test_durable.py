"""Durable commits: what is fsynced, in which order, and what a failing fsync leaves behind.

Power loss cannot be simulated on one machine, so these tests record the ``os.fsync`` and
``os.rename`` calls of a real save (tensorstore's own fsyncs happen in C++ and are not seen) and
check the order the durability argument needs: every file orbax wrote and every directory inside
the step, then the commit marker, then the step directory, then the rename, then the parent.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from tjx.ckpt import (
    CheckpointCommitError,
    CheckpointError,
    CheckpointManager,
    CheckpointWriteError,
)
from tjx.ckpt.durable import COMMIT_MARKER, FILE_SIZES, TMP_DIR_SUFFIX, fsync_all

Event = tuple[str, str]


def _state(step: int, leaves: int = 2) -> dict:
    rng = np.random.default_rng(step)
    return {f"w{i}": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32) for i in range(leaves)}


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """Records ("fsync", path) and ("rename", "src -> dst") in the order they happen."""
    log: list[Event] = []
    lock = threading.Lock()  # the fsyncs of one commit run in a thread pool
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        real_fsync(fd)
        with lock:  # recorded when it is done: the order of completions is what counts
            log.append(("fsync", _fd_path(fd)))

    def rename(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        real_rename(src, dst)
        with lock:
            log.append(("rename", f"{src} -> {dst}"))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    return log


def _python_written(step_dir: Path) -> list[str]:
    """Files and directories of a committed step that tensorstore did not write (and sync)."""
    out = []
    for p in sorted(step_dir.rglob("*")):
        rel = p.relative_to(step_dir).parts
        if any(part == "d" or part.startswith("ocdbt.process_") for part in rel[1:]):
            continue
        if rel[1:] in (("manifest.ocdbt",), ("_sharding",)):
            continue
        out.append("/".join(rel))
    return out


@pytest.mark.parametrize("async_save", [True, False])
def test_commit_fsyncs_data_then_marker_then_rename_then_parent(
    tmp_path: Path, events: list[Event], async_save: bool
) -> None:
    with CheckpointManager(tmp_path, async_save=async_save, keep_best=1, best_metric="l") as mgr:
        mgr.save(7, state=_state(7), data_state={"pos": 3}, config={"lr": 0.1}, metrics={"l": 1})
        mgr.wait_until_finished()
        assert mgr.all_steps() == [7]
        np.testing.assert_array_equal(mgr.restore().state["w1"], _state(7)["w1"])
    tmp, final = f"{tmp_path}/7{TMP_DIR_SUFFIX}", f"{tmp_path}/7"
    synced = [p for kind, p in events if kind == "fsync"]
    index = {p: i for i, (_, p) in enumerate(events)}  # the last event for each path
    expected = [f"{tmp}/{rel}" for rel in _python_written(tmp_path / "7")]
    assert f"{tmp}/metrics/metrics" in expected and f"{tmp}/state/_METADATA" in expected
    assert f"{tmp}/{FILE_SIZES}" in expected  # the file list: synced before the marker too
    missing = sorted(set(expected) - set(synced))
    assert not missing, missing
    # Nothing tensorstore already synced (its array files) is synced again.
    assert not [p for p in synced if "/ocdbt.process_" in p or "/state/d/" in p]
    marker = index[f"{tmp}/{COMMIT_MARKER}"]
    data = [index[p] for p in expected if p != f"{tmp}/{COMMIT_MARKER}"]
    rename = events.index(("rename", f"{tmp} -> {final}"))
    # All data files and inner directories, then the marker, then the step directory's entries,
    # then the rename (the commit), then the parent directory that holds the new entry.
    assert max(data) < marker < index[tmp] < rename < index[str(tmp_path)]


def test_the_commit_time_is_recorded_and_synced_with_the_step(tmp_path: Path) -> None:
    """orbax's commit stamps ``commit_timestamp_nsecs`` into the step's metadata; the durable
    commit does it too, through the metadata store orbax hands its constructor (its public
    keyword), before the file sizes are recorded and synced."""
    import json
    import time

    import orbax.checkpoint as ocp

    from tjx.ckpt.durable import STEP_METADATA

    before = time.time_ns()
    for async_save in (True, False):
        with CheckpointManager(tmp_path / str(async_save), async_save=async_save) as mgr:
            mgr.save(3, state=_state(3), data_state={}, config={})
            mgr.wait_until_finished()
        after = time.time_ns()
        step = tmp_path / str(async_save) / "3"
        stamp = ocp.metadata.get_step_metadata(step).commit_timestamp_nsecs
        assert stamp is not None and before <= stamp <= after
        sizes = json.loads((step / FILE_SIZES).read_text())["files"]
        assert sizes[STEP_METADATA] == (step / STEP_METADATA).stat().st_size


def test_fsync_count_does_not_grow_with_leaves(tmp_path: Path, events: list[Event]) -> None:
    counts = []
    for leaves in (2, 40):
        events.clear()
        with CheckpointManager(tmp_path / str(leaves), async_save=False) as mgr:
            mgr.save(1, state=_state(1, leaves))
        counts.append(sum(kind == "fsync" for kind, _ in events))
    assert counts[0] == counts[1] > 10


def _failing_fsync(monkeypatch: pytest.MonkeyPatch, should_fail: Callable[[str], bool]) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if should_fail(_fd_path(fd)):
            raise OSError(errno.EIO, "simulated I/O error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize(
    ("what", "async_save"),
    [("data", True), ("marker", False), ("step_dir", True), ("parent", False)],
)
def test_failed_fsync_commits_nothing_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str, async_save: bool
) -> None:
    with CheckpointManager(tmp_path, async_save=async_save, keep_last=1) as mgr:
        mgr.save(1, state=_state(1))
        mgr.wait_until_finished()
        tmp = f"{tmp_path}/2{TMP_DIR_SUFFIX}"
        target = {
            "data": f"{tmp}/manifest/metadata",
            "marker": f"{tmp}/{COMMIT_MARKER}",
            "step_dir": tmp,
            "parent": str(tmp_path),
        }[what]
        _failing_fsync(monkeypatch, lambda p: p == target)
        with pytest.raises(CheckpointCommitError, match="cannot write checkpoint step 2 ") as info:
            mgr.save(2, state=_state(2))
            mgr.wait_until_finished()
        assert isinstance(info.value, CheckpointError) and isinstance(info.value, OSError)
        assert isinstance(info.value, CheckpointWriteError)  # the manager's: partial files gone
        assert (info.value.step, info.value.errno) == (2, errno.EIO)
        assert "simulated I/O error" in str(info.value)
        assert isinstance(info.value.__cause__, Exception)
        monkeypatch.undo()
        # Nothing committed, the partial save removed, and the step before it kept.
        assert mgr.all_steps() == [1]
        assert not (tmp_path / "2").exists() and not Path(tmp).exists()
        assert mgr.restore().step == 1
        # The same step saves again.
        mgr.save(2, state=_state(2))
        mgr.wait_until_finished()
        assert mgr.all_steps() == [2]
        np.testing.assert_array_equal(mgr.restore().state["w0"], _state(2)["w0"])


def test_directory_fsync_unsupported_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some filesystems cannot fsync a directory (EINVAL): saving must still work there.
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(_fd_path(fd)):
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with CheckpointManager(tmp_path, async_save=False) as mgr:
        mgr.save(3, state=_state(3))
        assert mgr.all_steps() == [3]
        # Without O_DIRECTORY (Windows) directories are not opened at all.
        monkeypatch.delattr(os, "O_DIRECTORY")
        mgr.save(4, state=_state(4))
        assert mgr.all_steps() == [3, 4]


def test_fsync_all_small_inputs(tmp_path: Path, events: list[Event]) -> None:
    f = tmp_path / "a"
    f.write_text("x")
    fsync_all([])
    assert events == []
    fsync_all([f])
    fsync_all([f, tmp_path])
    assert events[0] == ("fsync", str(f))
    assert sorted(events[1:]) == [("fsync", str(tmp_path)), ("fsync", str(f))]
