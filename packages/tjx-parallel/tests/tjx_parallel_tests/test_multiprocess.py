"""Two processes on loopback (jax.distributed + gloo) match one process; a killed peer ends the
other with an error instead of a hang."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from tjx_parallel_tests._mp_worker import GLOBAL_BATCH, STEPS
from tjx_parallel_tests._tiny_gpt import TX, make_batch, make_model, make_step

WORKER = Path(__file__).with_name("_mp_worker.py")
TOTAL_TIMEOUT_S = 600  # a hang guard: both start, compile and train on 2 cores CI shares
KILL_DEADLINE_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_env(devices: int) -> dict[str, str]:
    """A worker process's environment: this interpreter's path, CPU with ``devices`` devices."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONUNBUFFERED="1",
    )
    return env


def _reference():
    graphdef, params = nnx.split(jax.jit(make_model)())  # one compile, not one per init op
    opt_state = TX.init(params)
    step = jax.jit(make_step(graphdef))
    losses = []
    for i in range(STEPS):
        params, opt_state, loss = step(params, opt_state, make_batch(10 + i, GLOBAL_BATCH))
        losses.append(float(loss))
    return np.asarray(losses), [np.asarray(x) for x in jax.tree.leaves(params)]


def _wait_for(paths: list[Path], procs: list[subprocess.Popen], deadline: float) -> None:
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited early ({proc.returncode}):\n{_err(proc)}")
        assert time.time() < deadline, "workers did not finish training in time"
        time.sleep(0.2)


def _err(proc: subprocess.Popen) -> str:
    assert proc.stderr is not None
    return proc.stderr.read().decode(errors="replace")[-3000:]


def test_two_processes_match_one_and_fail_fast(tmp_path: Path) -> None:
    env = _worker_env(2)  # 2 devices each → 4 in all
    port = str(_free_port())
    start = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(pid), "2", port, str(tmp_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for pid in range(2)
    ]
    try:
        _wait_for([tmp_path / "ready0", tmp_path / "ready1"], procs, start + TOTAL_TIMEOUT_S)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.time()
        rc = procs[0].wait(timeout=KILL_DEADLINE_S)
        elapsed = time.time() - killed
        message = _err(procs[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert rc == 1, f"survivor exited with {rc}:\n{message}"
    assert elapsed < KILL_DEADLINE_S
    # gloo's collective raises in the worker (its traceback), then jax's runtime aborts the
    # process: one line instead of jax's C++ log and stack (initialize guards aborts).
    assert "tjx.parallel: error: jax's runtime aborted process 0 of 2" in message, message
    assert "Check failure" not in message and "Terminating process" not in message, message

    result = np.load(tmp_path / "result.npz")
    ref_losses, ref_params = _reference()
    np.testing.assert_allclose(result["losses"], ref_losses, rtol=1e-5)
    assert ref_losses[-1] < ref_losses[0]  # it trained
    got = [result[f"arr_{i}"] for i in range(len(ref_params))]
    for a, b in zip(got, ref_params, strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)
