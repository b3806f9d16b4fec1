"""The trainer as two processes on loopback (jax.distributed + gloo, 4 simulated CPU devices each)
against one process with 8 devices, on the same shrunken `tiny` config.

* Both processes exit 0, each wait has a deadline, and stragglers are killed.
* Per-step training losses and validation losses of the 2-process run equal the 1-process run's
  to ``rel=1e-5``: the global batch, the parameters and the step are the same, only the order in
  which the sharded gradient and loss sums are added differs (a cross-process gloo all-reduce
  against XLA's in-process one), which moves float32 results by a few ulps per step (~1e-7
  relative seen); 1e-5 leaves room for that noise to grow through 6 Adam steps while any real
  difference — another batch, a lost row, a wrong resume position or optimizer state — moves the
  loss by 1e-3 or more.
* Only process 0 writes the run directory: both processes run under a Python audit hook that
  records every file they open for writing (and every mkdir/rename/remove); process 1 writes
  nothing outside ``checkpoints/`` (where each process saves its own shards).
* The 2-process run is stopped at step 3 (``train.stop_at``: the same save-and-exit path as a
  signal), resumed as 2 processes to step 6, and its losses after the resume still match the
  uninterrupted 1-process run; the step-6 checkpoints of both runs restore in this process to the
  same train state.
* A bad multi-host setup — processes told different process counts or configs, a coordinator
  nobody answers, fewer processes than announced — ends every process with one error line and a
  non-zero exit within the ``--init-timeout``, and writes nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from tests_integration._helpers_apps import (
    SMALL,
    app_env,
    check_ok,
    read_log,
    train,
    train_losses,
    val_losses,
)
from tjx import ckpt

STEPS, STOP = 6, 3
SETS = [*SMALL, f"train.steps={STEPS}", f"train.eval_every={STOP}"]
REL = 1e-5
LAUNCH_TIMEOUT_S = 300  # two processes: start, compile, 3 steps, 2 evaluations, a checkpoint
JOIN_TIMEOUT_S = 120  # --init-timeout of the good runs (a loaded machine starts slowly)
INIT_TIMEOUT_S = 8  # --init-timeout of the bad setups
BAD_TIMEOUT_S = 120  # ...which must all be over well within this
DIST_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS")

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(devices: int, **extra: str) -> dict[str, str]:
    env = app_env(devices, **extra)
    for key in DIST_ENV:  # hermetic: only the flags say how the processes meet
        env.pop(key, None)
    return env


def _launch(cwd: Path, tag: str, argvs: list[list[str]], timeout: float) -> list[dict]:
    """Start one trainer per argv (under the audit hook) at once; wait for all with one deadline;
    kill whatever is left. Returns per process: rc, out, err, seconds and ``writes`` (paths
    relative to its ``--run-dir``)."""
    procs, files = [], []
    logs = cwd / "logs"
    logs.mkdir(exist_ok=True)
    start = time.monotonic()
    try:
        for i, argv in enumerate(argvs):
            out, err = (logs / f"{tag}.{i}.out").open("w"), (logs / f"{tag}.{i}.err").open("w")
            files += [out, err]
            root = cwd / argv[argv.index("--run-dir") + 1]
            env = _env(4, AUDIT_ROOT=str(root), AUDIT_LOG=str(logs / f"{tag}.{i}.writes.json"))
            cmd = [sys.executable, "-c", AUDIT, *argv]
            procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err))
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
    assert not hung, f"{tag}: process(es) {hung} still running after {timeout} s:\n" + _tails(
        results
    )
    return results


def _tails(results: list[dict]) -> str:
    return "\n".join(
        f"--- process {i}: exit {r['rc']}\n{r['out'][-1500:]}\n{r['err'][-2500:]}"
        for i, r in enumerate(results)
    )


def _trainer_args(run_dir: str, sets: list[str], *extra: str) -> list[str]:
    args = ["--config", "tiny", "--run-dir", run_dir]
    for item in sets:
        args += ["--set", item]
    return [*args, *extra]


def _joining(coordinator: str, count: int, rank: int, timeout_s: float) -> list[str]:
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


def _pair(run_dir: str, sets: list[str], *extra: str) -> list[list[str]]:
    """Arguments of the two processes of one run: the same command, each its own --process-id."""
    coordinator = f"127.0.0.1:{_free_port()}"
    return [
        _trainer_args(run_dir, sets, *extra, *_joining(coordinator, 2, i, JOIN_TIMEOUT_S))
        for i in (0, 1)
    ]


def _restore(checkpoints: Path, step: int) -> ckpt.Restored:
    manager = ckpt.CheckpointManager(checkpoints, read_only=True)
    try:
        return manager.restore(step)
    finally:
        manager.close()


def test_two_processes_match_one_resume_and_only_process_0_writes(tmp_path):
    one = train(tmp_path, "one", [*SETS, "mesh.data=-1"], devices=8, env=_env(8))
    check_ok(one)
    assert "devices: 8 ×" in one.stdout

    stop_argvs = _pair("two", [*SETS, f"train.stop_at={STOP}"])
    stopped = _launch(tmp_path, "stop", stop_argvs, LAUNCH_TIMEOUT_S)
    for i, r in enumerate(stopped):
        assert r["rc"] == 0, _tails(stopped)
        assert f"multi-host: process {i} of 2" in r["out"] and "devices: 8 ×" in r["out"]
        assert f"saved step {STOP}" in r["out"]
    run = tmp_path / "two"
    ckpt_dir = run / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir() if p.name.isdigit()) == [str(STOP)]
    # One writer: each step logged once (two appending processes would log it twice).
    assert [r["step"] for r in read_log(run) if "loss" in r] == list(range(1, STOP + 1))

    resumed = _launch(tmp_path, "resume", _pair("two", SETS, "--resume"), LAUNCH_TIMEOUT_S)
    for r in resumed:
        assert r["rc"] == 0, _tails(resumed)
        assert f"resumed from step {STOP}" in r["out"] and f"done: {STEPS} steps" in r["out"]

    # (b) the same losses as one process with 8 devices, before and after the resume.
    l1, l2 = train_losses(tmp_path / "one"), train_losses(run)
    assert sorted(l1) == sorted(l2) == list(range(1, STEPS + 1))
    for step in l1:
        assert l2[step] == pytest.approx(l1[step], rel=REL), (step, l1, l2)
    assert l1[STEPS] < l1[1]  # it trained
    v1, v2 = val_losses(tmp_path / "one"), val_losses(run)
    assert sorted(v1) == sorted(v2) == [STOP, STEPS]
    for step in v1:
        assert v2[step] == pytest.approx(v1[step], rel=REL)

    # (c) only process 0 wrote the run directory; process 1 only its checkpoint shards.
    for launch in (stopped, resumed):
        primary, other = launch[0]["writes"], launch[1]["writes"]
        assert primary is not None and other is not None, "the audit log is missing"
        outside = [p for p in other if p.split(os.sep)[0] != "checkpoints"]
        assert outside == [], f"process 1 wrote {outside}"
    first = set(stopped[0]["writes"])
    for name in ("config.yaml", "model.json", "data.json", "metrics.jsonl", "final.json"):
        assert name in first, sorted(first)
    assert os.path.join("samples", f"step_{STEPS:07d}.txt") in resumed[0]["writes"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"step_{STEPS:07d}.txt"]
    summary = json.loads((run / "final.json").read_text())
    assert summary["step"] == STEPS

    # (c) the checkpoints are complete: both processes' parts restore here to the train state
    # of the 1-process run, with the data position. rtol as for the losses; the absolute floor is
    # for values that are rounding noise in both runs: the attention key biases get a zero
    # gradient in exact arithmetic (softmax ignores a per-query constant), so Adam moves them by
    # normalised noise, ~1e-6. A lost shard or another step differs by ~1e-2.
    got, ref = _restore(ckpt_dir, STEPS), _restore(tmp_path / "one" / "checkpoints", STEPS)
    assert got.step == ref.step == STEPS and got.metadata["process_count"] == 2
    assert got.data_state["step"] == ref.data_state["step"] == STEPS
    assert got.data_state["process_count"] == 2 and ref.data_state["process_count"] == 1
    flat_got = jax.tree_util.tree_leaves_with_path(got.state)
    flat_ref = jax.tree_util.tree_leaves_with_path(ref.state)
    assert [p for p, _ in flat_got] == [p for p, _ in flat_ref]
    for (path, a), (_, b) in zip(flat_got, flat_ref, strict=True):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path)
        )


def test_bad_multi_host_setups_fail_fast_with_one_line(tmp_path):
    sets = [*SMALL, "train.steps=2"]
    shared = f"127.0.0.1:{_free_port()}"
    argvs = [
        # Processes 0 and 1 of one run, told different process counts and different seeds.
        _trainer_args("disagree", sets, *_joining(shared, 2, 0, INIT_TIMEOUT_S)),
        _trainer_args("disagree", [*sets, "train.seed=1"], *_joining(shared, 3, 1, INIT_TIMEOUT_S)),
        # Process 1 of 2 at a coordinator nobody runs.
        _trainer_args(
            "nocoord", sets, *_joining(f"127.0.0.1:{_free_port()}", 2, 1, INIT_TIMEOUT_S)
        ),
        # Process 0 of 2, but no process 1 ever comes.
        _trainer_args("alone", sets, *_joining(f"127.0.0.1:{_free_port()}", 2, 0, INIT_TIMEOUT_S)),
    ]
    results = _launch(tmp_path, "bad", argvs, BAD_TIMEOUT_S)
    for r in results:
        assert r["rc"] not in (0, None) and r["seconds"] < BAD_TIMEOUT_S, _tails(results)
        errors = [line for line in r["err"].splitlines() if line.startswith("trainer: error:")]
        assert len(errors) == 1, _tails(results)
        assert "Traceback" not in r["err"], _tails(results)
    for r in results[:2]:
        assert r["rc"] == 2, _tails(results)
        assert "multi-host processes disagree" in r["err"]
        assert "the run has 2 processes but they were told process 0: 2, process 1: 3" in r["err"]
        assert "config: process(es) [1]" in r["err"]
    for i, r in ((1, results[2]), (0, results[3])):
        assert r["rc"] == 1, _tails(results)
        assert "not all 2 processes joined the run" in r["err"]
        assert f"within {INIT_TIMEOUT_S} s (this is process {i})" in r["err"]
    for r in results:  # None: the watchdog's os._exit skips the audit log's atexit
        assert not r["writes"], r["writes"]
    for name in ("disagree", "nocoord", "alone"):
        assert not (tmp_path / name).exists()
