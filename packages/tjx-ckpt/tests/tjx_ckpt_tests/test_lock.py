"""One writer per run directory (`tjx.ckpt.lock`): a second process is refused in one line naming
the holder and changes nothing; a holder that dies (``kill -9``) or whose lease goes stale strands
nothing; a lock is gone once released. Local folders (flock) and real gs:// / s3:// servers on
127.0.0.1 (lease objects created only if absent)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tjx.ckpt import lock as run_lock
from tjx.ckpt import objects, storage
from tjx.ckpt.lock import (
    LEASE_DIR,
    LOCK_FILE,
    LockHolder,
    RunLock,
    RunLockedError,
    check_unlocked,
    release_held_locks,
)

HOST = socket.gethostname()


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: relative path → (sha256, modification time in ns)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _holder_words(pid: int, owner: str = "trainer") -> str:
    return f"is in use by another {owner} (pid {pid} on host {HOST} since "


# A local folder: flock(2).


def test_a_second_lock_is_refused_in_one_line_and_changes_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = RunLock(run, owner="trainer").acquire()
    (run / "config.yaml").write_text("model: {}\n")
    before = _snapshot(tmp_path)
    with pytest.raises(RunLockedError) as err:
        RunLock(run, owner="trainer").acquire()  # flock: another open file, even in one process
    message = str(err.value)
    assert message.startswith(f"{str(run)!r} " + _holder_words(os.getpid())), message
    assert message.endswith(" UTC)") and "\n" not in message
    holder = err.value.holder
    assert holder is not None and (holder.owner, holder.host, holder.pid) == (
        "trainer",
        HOST,
        os.getpid(),
    )
    assert err.value.age_s is None and err.value.path == run
    with pytest.raises(RunLockedError):
        check_unlocked(run)
    assert _snapshot(tmp_path) == before  # the refused ones wrote nothing
    first.release()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # no lock file left
    check_unlocked(run)
    with RunLock(run) as again:
        assert again.held
    assert not again.held and not (run / LOCK_FILE).exists()


def test_a_refused_or_finished_start_leaves_no_folder_it_made(tmp_path: Path) -> None:
    run = tmp_path / "a" / "b" / "run"
    check_unlocked(run)  # asks only: makes nothing
    assert not (tmp_path / "a").exists()
    with RunLock(run):
        assert (run / LOCK_FILE).is_file()
    assert not (tmp_path / "a").exists()  # nothing written there: the folders it made are gone
    with RunLock(run):
        (run / "config.yaml").write_text("x")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # a written folder stays


_CHILD = """
import sys, time
from tjx.ckpt.lock import RunLock
RunLock(sys.argv[1], owner="trainer").acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_strands_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(os.path.abspath(p or ".") for p in sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(run)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        with pytest.raises(RunLockedError, match=re.escape(_holder_words(child.pid))):
            RunLock(run).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert LockHolder.from_record((run / LOCK_FILE).read_bytes()).pid == child.pid  # type: ignore[union-attr]
    check_unlocked(run)  # the kernel released it with the process
    with RunLock(run, owner="trainer") as lock:  # taken over: the record is the new holder's
        record = LockHolder.from_record((run / LOCK_FILE).read_bytes())
        assert record is not None and record.pid == os.getpid() and lock.held


def test_a_lock_file_removed_between_open_and_flock_is_opened_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last holder removes its file as it releases: a process that opened the old file just
    # before would lock a file nobody else finds. It must open the new one instead.
    run = tmp_path / "run"
    run.mkdir()
    real = fcntl.flock
    calls = []

    def flock_after_a_release(fd: int, op: int) -> None:
        real(fd, op)
        if not calls:
            (run / LOCK_FILE).unlink()  # as a releasing holder does, just before our flock
        calls.append(op)

    monkeypatch.setattr(run_lock.fcntl, "flock", flock_after_a_release)
    lock = RunLock(run).acquire()
    monkeypatch.setattr(run_lock.fcntl, "flock", real)
    assert len(calls) == 2  # the first file was given up
    with pytest.raises(RunLockedError):
        check_unlocked(run)  # the file at the path is the locked one
    lock.release()


def test_a_file_system_without_locks_runs_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    lock = RunLock(tmp_path / "run").acquire()
    assert lock.held and lock.note is not None
    assert "cannot lock files (No locks available)" in lock.note
    check_unlocked(tmp_path / "run")  # cannot tell: the acquire's note says it
    lock.release()
    assert not (tmp_path / "run").exists()


def test_a_run_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(run_lock.NotCreatableError, match="cannot write into"):
        RunLock(tmp_path / "file").acquire()
    with pytest.raises(run_lock.NotCreatableError, match="cannot create"):
        RunLock(tmp_path / "file" / "run").acquire()


def test_release_held_locks_releases_every_lock_before_os_exit(tmp_path: Path) -> None:
    locks = [RunLock(tmp_path / name).acquire() for name in ("a", "b")]
    release_held_locks()
    assert not any(lock.held for lock in locks)
    for name in ("a", "b"):
        check_unlocked(tmp_path / name)
    locks[0].release()  # a second release does nothing


def test_a_record_that_names_nobody_is_said_so() -> None:
    assert LockHolder.from_record(b"") is None and LockHolder.from_record(b"[1]") is None
    err = RunLockedError(Path("r"), None)
    assert str(err) == "'r' is in use by another process (its lock names no holder)"


# Object storage: leases.


def _leases(url: str) -> list[str]:
    try:
        return sorted(objects.file_sizes(f"{url}/{LEASE_DIR}"))
    except FileNotFoundError:
        return []


def test_a_lease_refuses_a_second_holder_and_is_deleted_when_released(store_url: str) -> None:
    first = RunLock(store_url, owner="trainer").acquire()
    assert _leases(store_url) == ["0000000001.json"]
    objects.write_whole(f"{store_url}/config.yaml", b"model: {}\n")
    before = objects.file_sizes(store_url), objects.read_bytes(f"{store_url}/config.yaml")
    with pytest.raises(RunLockedError) as err:
        RunLock(store_url, owner="trainer").acquire()
    message = str(err.value)
    assert message.startswith(f"{store_url!r} " + _holder_words(os.getpid())), message
    assert "its lease is taken over once its heartbeat is 60 s old (the last was" in message
    assert err.value.age_s is not None and 0 <= err.value.age_s < 30
    with pytest.raises(RunLockedError):
        check_unlocked(store_url)
    assert (objects.file_sizes(store_url), objects.read_bytes(f"{store_url}/config.yaml")) == before
    first.release()
    assert _leases(store_url) == []
    check_unlocked(store_url)
    with RunLock(store_url):  # numbers start again: "create only if absent" still decides
        assert _leases(store_url) == ["0000000001.json"]
    assert sorted(objects.file_sizes(store_url)) == ["config.yaml"]


def test_heartbeats_keep_a_lease_and_a_stale_one_is_taken_over(store_url: str) -> None:
    live = RunLock(store_url, heartbeat_s=0.2).acquire()
    lease = f"{store_url}/{LEASE_DIR}/0000000001.json"
    seen: set[str] = set()  # the heartbeat times (whole seconds) the lease held
    deadline = time.monotonic() + 30
    while len(seen - {""}) < 2 and time.monotonic() < deadline:
        seen.add(json.loads(objects.read_bytes(lease)).get("heartbeat", ""))
        time.sleep(0.1)
    assert len(seen - {""}) >= 2, seen  # rewritten, again and again, by the holder's thread
    live.release()
    # A holder that stopped (killed, or stalled: no heartbeat) is taken over after the timeout.
    lost: list[str] = []
    stalled = RunLock(store_url, owner="trainer", heartbeat_s=3600, on_lost=lost.append)
    stalled.acquire()
    with pytest.raises(RunLockedError):
        check_unlocked(store_url)  # 60 s by default: not stale yet
    check_unlocked(store_url, timeout_s=0)  # a timeout of 0: stale at once
    taker = RunLock(store_url, owner="trainer", timeout_s=0).acquire()
    assert _leases(store_url) == ["0000000002.json"]  # the stale lease is gone
    # The stalled holder, waking, finds its lease taken over (its heartbeat thread says so).
    said = stalled._lost()
    assert said is not None and "was taken over by trainer pid" in said
    stalled.release()  # never deletes the new holder's lease
    assert _leases(store_url) == ["0000000002.json"]
    taker.release()
    assert _leases(store_url) == []


def test_a_lease_whose_holder_died_on_this_machine_is_taken_over_at_once(store_url: str) -> None:
    # kill -9 on this machine: its pid is gone here, so its lease need not wait for the timeout.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(os.path.abspath(p or ".") for p in sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, store_url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        with pytest.raises(RunLockedError, match=re.escape(_holder_words(child.pid))):
            check_unlocked(store_url)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()  # reaped: no process has its pid now
    check_unlocked(store_url)
    with RunLock(store_url):
        assert _leases(store_url) == ["0000000002.json"]


def test_only_a_holder_on_this_machine_and_pid_namespace_is_known_dead() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = {"host": HOST, "pid": gone.pid, **run_lock._machine()}
    assert run_lock._dead(here)
    assert not run_lock._dead({**here, "pid": os.getpid()})  # this process: alive
    assert not run_lock._dead({**here, "pid": 1})  # init: alive
    assert not run_lock._dead({**here, "boot_id": "another-boot"})  # another machine
    assert not run_lock._dead({**here, "pid_ns": "1"})  # another container
    assert not run_lock._dead({**here, "host": "elsewhere"})
    assert not run_lock._dead({"host": HOST, "pid": gone.pid})  # written where it cannot tell


def test_a_holder_whose_lease_vanished_says_so_once_and_gives_it_up(store_url: str) -> None:
    lost: list[str] = []
    lock = RunLock(store_url, heartbeat_s=0.2, on_lost=lost.append).acquire()
    storage.filesystem(store_url).rm_file(f"{store_url}/{LEASE_DIR}/0000000001.json")
    deadline = time.monotonic() + 20
    while not lost and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(lost) == 1 and "was taken over (this process's heartbeat was" in lost[0]
    assert not lock.held
    lock.release()  # nothing to do


def test_two_takers_of_a_stale_lease_one_wins(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stalled = RunLock(store_url, heartbeat_s=3600).acquire()
    # Lease 1 an hour old, any newer one fresh: the store's clock is not what is tested here.
    real_age = objects.age_s
    monkeypatch.setattr(
        run_lock.objects, "age_s", lambda path: 3600.0 if "/0000000001." in path else 0.0
    )
    real = objects.create_whole
    # The other taker's "create only if absent" lands first, between our look and our create.
    raced: list[str] = []

    def create_after_another(path: str, data: bytes) -> None:
        if not raced:
            raced.append(path)
            real(path, RunLock(store_url, owner="rival")._record())
        real(path, data)

    monkeypatch.setattr(run_lock.objects, "create_whole", create_after_another)
    with pytest.raises(RunLockedError, match="in use by another rival"):
        RunLock(store_url).acquire()
    assert raced == [f"{store_url}/{LEASE_DIR}/0000000002.json"]
    monkeypatch.setattr(run_lock.objects, "create_whole", real)
    monkeypatch.setattr(run_lock.objects, "age_s", real_age)
    stalled.release()
    storage.filesystem(store_url).rm(f"{store_url}/{LEASE_DIR}", recursive=True)
