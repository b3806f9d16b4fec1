"""Two real processes on loopback: a dead peer ends the survivor in seconds, with one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tjx_parallel_tests._peer_worker import SILENCE_S
from tjx_parallel_tests.test_multiprocess import _free_port, _worker_env

WORKER = Path(__file__).with_name("_peer_worker.py")
START_TIMEOUT_S = 60  # two interpreters import jax, join and compile one sum on 2 shared cores
DETECT_DEADLINE_S = SILENCE_S + 10


def _start(tmp_path: Path, mode: str) -> list[subprocess.Popen]:
    env = _worker_env(1)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(pid), "2", port, str(tmp_path), mode],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for pid in range(2)
    ]
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all((tmp_path / f"ready{pid}").exists() for pid in range(2)):
        for proc in procs:
            if proc.poll() is not None:
                _kill(procs)
                raise AssertionError(f"worker exited early ({proc.returncode}):\n{_err(proc)}")
        if time.monotonic() > deadline:
            _kill(procs)
            raise AssertionError("workers did not start in time")
        time.sleep(0.1)
    return procs


def _kill(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _err(proc: subprocess.Popen) -> str:
    assert proc.stderr is not None
    return proc.stderr.read().decode(errors="replace")


def _survivor(procs: list[subprocess.Popen], victim: int, sig: int) -> tuple[int, float, str]:
    """Signal ``victim``; the other's exit status, seconds until it exited, and its stderr."""
    survivor = procs[1 - victim]
    try:
        procs[victim].send_signal(sig)
        hit = time.monotonic()
        rc = survivor.wait(timeout=DETECT_DEADLINE_S + 20)
        return rc, time.monotonic() - hit, _err(survivor)
    finally:
        _kill(procs)


def _one_line(stderr: str, needle: str) -> str:
    lines = [line for line in stderr.splitlines() if needle in line]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "Check failure" not in stderr, stderr[-3000:]
    return lines[0]


def test_killed_peer_ends_the_survivor_with_one_line(tmp_path: Path) -> None:
    rc, elapsed, stderr = _survivor(_start(tmp_path, "block"), victim=1, sig=signal.SIGKILL)
    print(f"process 1 killed: process 0 exited {rc} after {elapsed:.1f} s")
    assert rc == 1, stderr[-3000:]
    assert elapsed < DETECT_DEADLINE_S, stderr[-3000:]
    line = _one_line(stderr, "process 1")
    assert line.startswith("tjx.parallel: error: process 1 of 2 stopped responding (no heartbeat")


def test_stopped_coordinator_is_reported_as_lost(tmp_path: Path) -> None:
    # SIGSTOP: process 0's host hangs or is cut off; its connections stay open, calls just hang
    rc, elapsed, stderr = _survivor(_start(tmp_path, "block"), victim=0, sig=signal.SIGSTOP)
    print(f"process 0 stopped: process 1 exited {rc} after {elapsed:.1f} s")
    assert rc == 1, stderr[-3000:]
    assert elapsed < DETECT_DEADLINE_S, stderr[-3000:]
    line = _one_line(stderr, "process 0")
    assert line.startswith("tjx.parallel: error: lost the coordinator (process 0 of 2): no answer")


def test_killed_coordinator_ends_the_survivor_with_one_line(tmp_path: Path) -> None:
    # jax 0.10 itself aborts process 1 within a second (its error polling sees the connection
    # drop): the watch's SIGABRT handler names it in one line, instead of a C++ stack dump.
    rc, elapsed, stderr = _survivor(_start(tmp_path, "block"), victim=0, sig=signal.SIGKILL)
    print(f"process 0 killed: process 1 exited {rc} after {elapsed:.1f} s")
    assert rc == 1, stderr[-3000:]
    assert elapsed < DETECT_DEADLINE_S, stderr[-3000:]
    line = _one_line(stderr, "process 0")
    assert line == (
        "tjx.parallel: error: lost the coordinator (process 0 of 2): its connection closed "
        "(killed or crashed), and jax's runtime ended this process"
    ), stderr[-3000:]
    for noise in ("Terminating process", "SIGABRT", "E1", "F1", "W1"):
        assert noise not in stderr, stderr[-3000:]


def test_a_peer_that_finished_first_is_not_reported(tmp_path: Path) -> None:
    procs = _start(tmp_path, "finish")
    try:
        rcs = [proc.wait(timeout=SILENCE_S + 40) for proc in procs]
        errs = [_err(proc) for proc in procs]
    finally:
        _kill(procs)
    assert rcs == [0, 0], errs
    assert all("tjx.parallel: error" not in err for err in errs), errs
    assert (tmp_path / "finished0").exists() and (tmp_path / "finished1").exists()
