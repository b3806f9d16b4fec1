"""Helpers of the multi-process trainer tests: start several trainer processes on loopback
(jax.distributed + gloo, simulated CPU devices) under an audit hook, with one deadline for all,
and kill whatever is left.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests_integration._helpers_apps import app_env, call_train, check_ok, train, train_losses
from tjx import ckpt
from tjx.parallel.arguments import VARIABLES

REL = 1e-5  # losses of 2 processes vs 1 (see test_train_multiprocess.py for why)
LAUNCH_TIMEOUT_S = 300  # two processes: start, compile, 3 steps, 2 evaluations, a checkpoint
JOIN_TIMEOUT_S = 120  # --init-timeout of the good runs (a loaded machine starts slowly)

# Runs `python -m trainer ARGS` under an audit hook that records what it writes in $AUDIT_ROOT
# (relative paths) into $AUDIT_LOG at exit.
AUDIT = r"""
import atexit, json, os, runpy, sys
root = os.path.realpath(os.environ["AUDIT_ROOT"])
writes = set()
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree",
          "os.truncate", "tempfile.mkstemp", "tempfile.mkdtemp"}
def note(path):
    if isinstance(path, (str, bytes, os.PathLike)):
        full = os.path.realpath(os.path.abspath(os.fsdecode(path)))
        if full == root or full.startswith(root + os.sep):
            writes.add(os.path.relpath(full, root))
def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if (mode and any(c in mode for c in "wax+")) or (not mode and flags & WRITE_FLAGS):
            note(path)
    elif event in EVENTS:
        note(args[0])
        if event in ("os.rename", "os.replace"):
            note(args[1])
def dump():
    with open(os.environ["AUDIT_LOG"], "w") as f:
        json.dump(sorted(writes), f)
atexit.register(dump)
sys.addaudithook(hook)
sys.argv = ["trainer", *sys.argv[1:]]
runpy.run_module("trainer", run_name="__main__", alter_sys=True)
"""


#: The 1-process references trained in this test process: settings → (run folder, its process).
_ONE_PROCESS: dict[tuple[str, ...], tuple[Path, subprocess.CompletedProcess[str]]] = {}


def one_process_run(cwd: Path, sets: list[str]) -> subprocess.CompletedProcess[str]:
    """``cwd/"one"``: the uninterrupted 1-process, 8-device run of ``sets`` that multi-process
    runs are compared with (it exited 0), and its process. Trained once per test process and
    copied for each test that asks for the same ``sets``: test_train_multiprocess.py and
    test_train_multiprocess_object_store.py compare with the same run, and Pants runs their
    batch in one process (a trainer process saved)."""
    key = tuple(sets)
    if key not in _ONE_PROCESS or not (_ONE_PROCESS[key][0] / "final.json").exists():
        proc = train(cwd, "one", [*sets, "mesh.data=-1"], devices=8, env=mp_env(8))
        check_ok(proc)
        _ONE_PROCESS[key] = (cwd / "one", proc)
        return proc
    folder, proc = _ONE_PROCESS[key]
    if folder != cwd / "one":
        shutil.copytree(folder, cwd / "one")
    return proc


def one_process_here(
    cwd: Path, run_dir: str, sets: list[str], *extra: str
) -> subprocess.CompletedProcess[str]:
    """A 1-process run on this process's 8 simulated devices (it exited 0): the trainer's
    ``main`` called here (`call_train`), as hermetic as `mp_env`'s processes (no scheduler's
    variables): a reference the multi-process runs are compared with needs no interpreter of its
    own. A 4-step small run measured 14.0 CPU seconds as a process, 4.8 as a call here once this
    process had imported the trainer (2026-11-29, the 2-core machine)."""
    proc = call_train(cwd, run_dir, sets, *extra, env=dict.fromkeys(VARIABLES))
    check_ok(proc)
    assert "devices: 8 ×" in proc.stdout, proc.stdout[-2000:]  # the 8-device mesh it stands for
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mp_env(devices: int, **extra: str) -> dict[str, str]:
    env = app_env(devices, **extra)
    for key in VARIABLES:  # hermetic: only the flags say how the processes meet
        env.pop(key, None)
    return env


def launch(
    cwd: Path,
    tag: str,
    argvs: list[list[str]],
    timeout: float,
    while_running: Callable[[list[subprocess.Popen]], None] | None = None,
    envs: list[dict[str, str]] | None = None,
) -> list[dict]:
    """Start one trainer per argv (under the audit hook) at once; wait for all with one deadline;
    kill whatever is left. Returns per process: rc, out, err, seconds and ``writes`` (paths
    relative to its ``--run-dir``). ``while_running(procs)`` is called once all have started
    (e.g. to signal one); the deadline and the kill of stragglers cover it too. ``envs[i]``:
    variables added to process i's environment (a scheduler's, say)."""
    procs, files = [], []
    logs = cwd / "logs"
    logs.mkdir(exist_ok=True)
    start = time.monotonic()
    try:
        for i, argv in enumerate(argvs):
            out, err = (logs / f"{tag}.{i}.out").open("w"), (logs / f"{tag}.{i}.err").open("w")
            files += [out, err]
            root = cwd / argv[argv.index("--run-dir") + 1]
            env = mp_env(4, AUDIT_ROOT=str(root), AUDIT_LOG=str(logs / f"{tag}.{i}.writes.json"))
            env.update(envs[i] if envs else {})
            cmd = [sys.executable, "-c", AUDIT, *argv]
            procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err))
        if while_running is not None:
            while_running(procs)
        hung, ended = [], []
        for i, proc in enumerate(procs):
            try:
                proc.wait(timeout=max(0.1, start + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung.append(i)
            ended.append(time.monotonic() - start)  # an upper bound on when process i ended
    finally:
        for proc in procs:  # stragglers (or everything, if starting one failed)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for f in files:
            f.close()
    results = []
    for i, proc in enumerate(procs):
        log = logs / f"{tag}.{i}.writes.json"
        results.append(
            {
                "rc": proc.returncode,
                "out": (logs / f"{tag}.{i}.out").read_text(errors="replace"),
                "err": (logs / f"{tag}.{i}.err").read_text(errors="replace"),
                "writes": json.loads(log.read_text()) if log.exists() else None,
                "seconds": ended[i],
            }
        )
    assert not hung, f"{tag}: process(es) {hung} still running after {timeout} s:\n" + tails(
        results
    )
    return results


def tails(results: list[dict]) -> str:
    return "\n".join(
        f"--- process {i}: exit {r['rc']}\n{r['out'][-1500:]}\n{r['err'][-2500:]}"
        for i, r in enumerate(results)
    )


def trainer_args(run_dir: str, sets: list[str], *extra: str) -> list[str]:
    args = ["--config", "tiny", "--run-dir", run_dir]
    for item in sets:
        args += ["--set", item]
    return [*args, *extra]


def joining(coordinator: str, count: int, rank: int, timeout_s: float) -> list[str]:
    return [
        "--coordinator",
        coordinator,
        "--num-processes",
        str(count),
        "--process-id",
        str(rank),
        "--init-timeout",
        f"{timeout_s:g}",
    ]


def pair(run_dir: str, sets: list[str], *extra: str) -> list[list[str]]:
    """Arguments of the two processes of one run: the same command, each its own --process-id."""
    coordinator = f"127.0.0.1:{free_port()}"
    return [
        trainer_args(run_dir, sets, *extra, *joining(coordinator, 2, i, JOIN_TIMEOUT_S))
        for i in (0, 1)
    ]


def restore(checkpoints: Path, step: int) -> ckpt.Restored:
    manager = ckpt.CheckpointManager(checkpoints, read_only=True)
    try:
        return manager.restore(step)
    finally:
        manager.close()


def resume_and_match_one_process(
    tmp_path: Path, sets: list[str], stop: int, steps: int
) -> list[dict]:
    """Resume run "two" (stopped at ``stop``) as 2 processes to ``steps``; its train loss equals
    run "one" (1 process, 8 devices, uninterrupted) at every step, to ``REL``. Returns the two
    processes' results (as :func:`launch`)."""
    resumed = launch(tmp_path, "resume", pair("two", sets, "--resume"), LAUNCH_TIMEOUT_S)
    for r in resumed:
        assert r["rc"] == 0, tails(resumed)
        assert f"resumed from step {stop}" in r["out"] and f"done: {steps} steps" in r["out"]
    l1, l2 = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert sorted(l1) == sorted(l2) == list(range(1, steps + 1))
    for step in l1:
        assert l2[step] == pytest.approx(l1[step], rel=REL), (step, l1, l2)
    assert l1[steps] < l1[1]  # it trained
    return resumed
