"""A save the disk refuses (#71): one `CheckpointWriteError` naming the step and the OS error,
its partial files removed, the steps committed before intact, and none of orbax's tracebacks.

A full disk fails tensorstore's array writes in orbax's background threads; a read-only or
immutable folder fails the step folder's creation. Both used to reach the caller as orbax's
own error only at the next save (after 165–800 lines of logged tracebacks), and a folder whose
creation failed kept the process alive for minutes after (orbax's other threads wait for it).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import tjx.ckpt.durable as durable
from tjx.ckpt import CheckpointCommitError, CheckpointManager, CheckpointWriteError
from tjx.ckpt.manager import PROBE_PREFIX
from tjx.ckpt.write_failure import WriteFailure, held_save_logs, write_failure

#: What tensorstore raised when a 450 kB tmpfs filled up during a save (orbax 0.12.8).
TENSORSTORE_ENOSPC = (
    'RESOURCE_EXHAUSTED: Error writing "params.stack.layers.0.attn.out.kernel/0.0.0" in OCDBT '
    'database at local file "/r/checkpoints/4.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/'
    'ocdbt.process_0/": Failed writing: "/r/checkpoints/4.orbax-checkpoint-tmp/d/486c": Failed '
    "to write 4553 bytes to file 7: No space left on device [os_error_code='28']"
)


def _state(step: int, size: int = 4) -> dict:
    rng = np.random.default_rng(step)
    return {f"w{i}": jnp.asarray(rng.normal(size=(size, 3)), jnp.float32) for i in range(2)}


def _orbax_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()[:200]
        for r in caplog.records
        if r.levelno >= logging.ERROR and "/orbax/" in r.pathname
    ]


def _same(tree: dict, want: dict) -> None:
    for name, value in want.items():
        np.testing.assert_array_equal(np.asarray(tree[name]), np.asarray(value), err_msg=name)


def test_a_full_disk_in_the_background_write_stops_at_the_next_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with CheckpointManager(tmp_path, keep_last=1, async_save=True) as mgr:
        mgr.save(1, state=_state(1))
        mgr.wait_until_finished()

        def full(step_dir: Path) -> None:  # the commit's first write: the disk is full now
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(step_dir / "x"))

        monkeypatch.setattr(durable, "record_file_sizes", full)
        assert mgr.save(2, state=_state(2))  # started: the write goes on in the background
        deadline = time.monotonic() + 120
        with pytest.raises(CheckpointWriteError) as info:
            while time.monotonic() < deadline:  # a training loop's check at each step
                mgr.check_for_errors()
                time.sleep(0.01)
        monkeypatch.undo()
        err = info.value
        assert (err.step, err.errno, err.reason) == (2, errno.ENOSPC, "No space left on device")
        assert isinstance(err, CheckpointCommitError) and isinstance(err, OSError)
        assert str(err).startswith(f"cannot write checkpoint step 2 to {tmp_path}: No space ")
        assert "\n" not in str(err)
        assert mgr.all_steps() == [1]  # the step before stays: keep_last=1 deleted nothing
        assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # no partial step 2
        _same(mgr.restore().state, _state(1))
        mgr.check_for_errors()  # said once
        mgr.save(2, state=_state(2))  # space again: the same step saves
        mgr.wait_until_finished()
        assert mgr.all_steps() == [2]
    assert _orbax_errors(caplog) == []  # orbax's logged tracebacks of it held back, dropped


def test_a_failure_that_is_no_os_error_stays_what_orbax_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)

    def bug(step_dir: Path) -> None:
        raise TypeError("a bug in the commit")

    monkeypatch.setattr(durable, "record_file_sizes", bug)
    with CheckpointManager(tmp_path) as mgr:
        mgr.save(1, state=_state(1))
        with pytest.raises(TypeError, match="a bug in the commit"):
            mgr.wait_until_finished()
        assert mgr.all_steps() == []
    assert _orbax_errors(caplog)  # orbax's own report of it, printed as before (held, released)


@pytest.fixture
def unwritable() -> Iterator[list[Path]]:
    """Folders made unwritable (root too: ``chattr +i``, as a read-only mount), undone after."""
    made: list[Path] = []
    yield made
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False, capture_output=True)
        path.chmod(0o755)


def _make_unwritable(path: Path, made: list[Path]) -> None:
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("root without chattr: a folder cannot be made unwritable")
        done = subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i failed here: {done.stderr.decode().strip()}")
    else:
        path.chmod(0o555)
    made.append(path)


def test_a_read_only_checkpoint_folder_is_one_error_at_the_save(
    tmp_path: Path, unwritable: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    folder = tmp_path / "checkpoints"
    mgr = CheckpointManager(folder, keep_last=2)
    mgr.save(1, state=_state(1))
    mgr.wait_until_finished()
    _make_unwritable(folder, unwritable)
    with pytest.raises(CheckpointWriteError, match="cannot write checkpoint step 2 ") as info:
        mgr.save(2, state=_state(2))  # at once: orbax never starts its threads
    assert info.value.errno in (errno.EPERM, errno.EACCES, errno.EROFS)
    assert info.value.step == 2
    mgr.close()  # nothing pending: closes without a word
    assert sorted(p.name for p in folder.iterdir()) == ["1"]
    assert not any(p.name.startswith(PROBE_PREFIX) for p in folder.iterdir())
    _same(CheckpointManager(folder, read_only=True).restore().state, _state(1))
    assert _orbax_errors(caplog) == []


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        check=False,
        capture_output=True,
    )
    return done.returncode == 0


def test_a_really_full_disk_is_one_error_and_frees_what_the_save_took(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """tensorstore's own ENOSPC (a ValueError naming ``os_error_code='28'``) on a tiny tmpfs."""
    caplog.set_level(logging.ERROR)
    folder = tmp_path / "small"
    if not _mount_tmpfs(folder, "400k"):
        pytest.skip("no tmpfs mount here (needs root and CAP_SYS_ADMIN)")
    try:
        with CheckpointManager(folder, keep_last=3) as mgr:
            mgr.save(1, state=_state(1))
            mgr.wait_until_finished()
            free = shutil.disk_usage(folder).free
            with pytest.raises(CheckpointWriteError) as info:
                mgr.save(2, state=_state(2, size=40_000))  # 960 kB of float32: never fits
                mgr.wait_until_finished()
            assert (info.value.step, info.value.errno) == (2, errno.ENOSPC)
            assert mgr.all_steps() == [1]
            assert sorted(p.name for p in folder.iterdir()) == ["1"]
            assert shutil.disk_usage(folder).free == free  # the partial step's bytes are back
            _same(mgr.restore().state, _state(1))
    finally:
        subprocess.run(["umount", str(folder)], check=False, capture_output=True)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Event loop is closed" not in err, err[-2000:]
    assert _orbax_errors(caplog) == []


def test_write_failure_finds_the_os_error_in_what_orbax_raised() -> None:
    found = write_failure(ValueError(TENSORSTORE_ENOSPC))
    assert found is not None and (found.errno, found.reason) == (28, "No space left on device")
    assert found.full and len(found.detail) <= 200 and "os_error_code" in found.detail
    denied = PermissionError(errno.EACCES, "Permission denied", "/ckpt/3.orbax-checkpoint-tmp")
    try:
        raise RuntimeError("commit failed") from denied
    except RuntimeError as chained:
        found = write_failure(chained)
    assert found is not None and found.errno == errno.EACCES and not found.full
    assert "/ckpt/3.orbax-checkpoint-tmp" in found.detail
    store = PermissionError("Forbidden: the bucket refuses writes")  # no errno: its words
    words = "Forbidden: the bucket refuses writes"
    assert write_failure(store) == WriteFailure(None, words, words)
    # Not storage: a lost peer (the peer watch says it), a barrier, a bug.
    lost = TimeoutError("Timed out while waiting for async_commit_complete barrier")
    assert write_failure(lost) is None
    gone = ValueError("UNAVAILABLE: the coordination service went away")
    assert write_failure(gone) is None
    assert write_failure(TypeError("unsupported operand")) is None


def test_orbax_errors_during_a_save_are_held_and_said_once() -> None:
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    absl = logging.getLogger("absl")
    handler = Collect(logging.ERROR)
    absl.addHandler(handler)
    holder = held_save_logs()

    def orbax_error(message: str) -> None:
        record = absl.makeRecord(
            "absl", logging.ERROR, "/site-packages/orbax/checkpoint/x.py", 1, message, (), None
        )
        absl.handle(record)

    try:
        orbax_error("outside a save")  # passes
        holder.start()
        orbax_error("the failed write")
        absl.error("not orbax's")  # another library's error passes
        holder.settle(said=True)  # the manager's one error says it: dropped
        holder.start()
        orbax_error("a save that failed otherwise")
        assert "a save that failed otherwise" not in seen
        holder.settle(said=False)  # printed after all
        holder.start()
        orbax_error("a save nobody waited for")
        holder.release()  # at exit
        holder.settle(said=False)
    finally:
        absl.removeHandler(handler)
    assert seen == [
        "outside a save",
        "not orbax's",
        "a save that failed otherwise",
        "a save nobody waited for",
    ]
