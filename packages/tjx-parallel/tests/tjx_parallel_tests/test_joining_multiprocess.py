"""Two real processes on loopback join through ``join`` and then disagree: both raise the same
one-line error, naming the count and the config each was told."""

from __future__ import annotations

import subprocess
import sys
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
