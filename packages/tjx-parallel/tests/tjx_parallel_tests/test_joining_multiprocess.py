"""Real processes on loopback: two join through ``join`` and then disagree (both raise the same
one-line error, naming the count and the config each was told); one that nobody joins ends at
jax's deadline with the not-joined line and status 1 (jax aborts; the guard speaks)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tjx_parallel_tests.test_multiprocess import _free_port, _worker_env

WORKER = Path(__file__).with_name("_join_worker.py")
TIMEOUT_S = 120  # two interpreters import jax and join, on 2 shared cores


def _run(told: list[int], configs: list[str]) -> list[tuple[int, str, str]]:
    env = _worker_env(1)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(pid), port, str(told[pid]), configs[pid]],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    try:
        return [(p.wait(timeout=TIMEOUT_S), *p.communicate()) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_two_processes_join_then_refuse_together():
    # Process 1 was told 3 processes and another config; both join (the same "values" for the
    # join itself), then both refuse with the same line.
    results = _run([2, 3], ["lr: 0.1", "lr: 0.2"])
    lines = set()
    for pid, (rc, out, err) in enumerate(results):
        assert rc == 2, f"process {pid}: {rc}\n{out}\n{err[-3000:]}"
        # gloo prints its own "[Gloo] Rank 0 is connected ..." to stdout first.
        joined, line = out.strip().splitlines()[-2:]
        assert joined == f"joined: process {pid} of 2"
        lines.add(line)
    assert lines == {
        "multi-host processes disagree: --num-processes: the run has 2 but they were told "
        "process 0: 2, process 1: 3; config: process(es) [1] differ from process 0"
    }


_ALONE = textwrap.dedent("""
    import sys
    from tjx.parallel import join
    join(f"127.0.0.1:{sys.argv[1]}", 2, 1, timeout_s=1)
    print("joined")
    """)


def test_a_process_nobody_joins_ends_with_one_line_and_status_1() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _ALONE, str(_free_port())],
        env=_worker_env(1),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stdout == ""
    assert done.stderr.startswith(
        "tjx.parallel: error: not all 2 processes joined the run at coordinator 127.0.0.1:"
    ), done.stderr[-3000:]
    assert done.stderr.count("\n") == 1 and "within 1 s (this is process 1)" in done.stderr
    print(f"gave up after {time.monotonic() - started:.1f} s")  # jax's deadline: ~5 s late
