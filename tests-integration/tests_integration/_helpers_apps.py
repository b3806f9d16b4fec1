"""Helpers for the app integration tests: run the trainer/eval as separate processes.

The apps run as ``sys.executable -m trainer`` / ``-m eval`` with this interpreter's ``sys.path`` as
``PYTHONPATH`` (tools/devtest and Pants both give the test process every source root), CPU only,
offline, W&B disabled. Built-in data and shards go to the usual tjx cache (``$TJX_CACHE`` or
``~/.cache/tjx/data``), so the first-time Shakespeare preparation is shared by all tests.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# A smaller, faster model than `tiny` for the mechanics tests (resume, signals, DP):
# the same code paths, a fraction of the compile and step time.
SMALL = [
    "model.d_model=64",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.mlp.dim=128",
    "model.max_seq_len=32",
    "data.seq_len=32",
    "data.batch_size=8",
    "eval.batch_size=8",
    "train.eval_batches=2",
    "train.log_every=1",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "optimizer.schedule.warmup_steps=2",
    "sampling.max_new_tokens=8",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]


def app_env(devices: int = 8, **extra: str) -> dict[str, str]:
    """Environment for an app process: this test's source roots, CPU, offline."""
    env = dict(os.environ)
    # Absolute paths: the app runs in a temporary folder, and under Pants the sandbox's source
    # roots are on sys.path as relative entries ("" or ".").
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
    env.update(
        JAX_PLATFORMS="cpu",
        # Long collective timeouts: on a loaded machine the 8 simulated devices' threads may
        # reach an all-reduce tens of seconds apart (XLA's default aborts after 40 s).
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
        "--xla_cpu_collective_call_terminate_timeout_seconds=900 "
        "--xla_cpu_collective_timeout_seconds=900" + inherited_xla_flags(),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
    )
    # One XLA compilation cache for every app process of this test session. These tests start the
    # trainer over and over with the same small model (a resume compiles exactly what the run before
    # it compiled), so each step is compiled once, not once per process: measured on the 2-core
    # machine, test_train_resume 76 s -> 39 s. Set JAX_COMPILATION_CACHE_DIR to use your own.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", _session_compile_cache())
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    env.update(extra)
    return env


def inherited_xla_flags() -> str:
    """The test process's own XLA flags but its device count (pants.toml's compile-speed flags
    reach the apps too), each with a leading space."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    return "".join(f" {f}" for f in flags if "device_count" not in f)


_COMPILE_CACHE: list[str] = []


def _session_compile_cache() -> str:
    """A temporary folder for this test process's XLA compilation cache, removed at exit."""
    if not _COMPILE_CACHE:
        path = tempfile.mkdtemp(prefix="tjx-xla-cache-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        _COMPILE_CACHE.append(path)
    return _COMPILE_CACHE[0]


def run_app(
    app: str,
    args: list[str],
    cwd: Path,
    *,
    devices: int = 8,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m APP ARGS`` in ``cwd``; returns the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", app, *args],
        cwd=cwd,
        env=env or app_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def call_app(
    app: str, args: list[str], cwd: Path, *, env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """`run_app` as a call of ``APP.cli.main(ARGS)`` in this process (in ``cwd``, with ``env``'s
    variables set for the call, a ``None`` one unset): the same exit code and lines, without a
    new interpreter.

    For the bad-input tables, where each case starts the app only to see it refuse: a process
    pays Python's and the app's imports (~5 CPU seconds on the 2-core machine, 2026-11-26) for
    a few milliseconds of checks. Its stdout and stderr are what the app writes through
    ``sys.stdout``/``sys.stderr``; argparse's ``SystemExit`` is its exit code, as ``python -m``
    makes it. A few cases of each table still run as processes (the exit status as a shell sees
    it).
    """
    main = importlib.import_module(f"{app}.cli").main
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    here = os.getcwd()
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's errors and --help
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        os.chdir(here)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess([app, *args], code, out.getvalue(), err.getvalue())


def train_args(run_dir: str, sets: list[str], *extra: str, config: str = "tiny") -> list[str]:
    """The trainer's arguments ``--config CONFIG --run-dir RUN_DIR --set ... EXTRA``."""
    args = ["--config", config, "--run-dir", run_dir]
    for item in sets:
        args += ["--set", item]
    return [*args, *extra]


def train(
    cwd: Path, run_dir: str, sets: list[str], *extra: str, config: str = "tiny", **kw: Any
) -> subprocess.CompletedProcess[str]:
    """``python -m trainer --config CONFIG --run-dir RUN_DIR --set ...``."""
    return run_app("trainer", train_args(run_dir, sets, *extra, config=config), cwd, **kw)


def call_train(
    cwd: Path,
    run_dir: str,
    sets: list[str],
    *extra: str,
    config: str = "tiny",
    env: Mapping[str, str | None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`train` as a call of the trainer's ``main`` in this process (`call_app`, ``env`` as
    there): for a run that a test only needs finished or refused, where the process itself (its
    exit status, signals, several processes) is not what is tested; it saves the interpreter's
    start and imports."""
    return call_app("trainer", train_args(run_dir, sets, *extra, config=config), cwd, env=env)


def check_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """Fail with the process's output when it did not exit 0."""
    assert (
        proc.returncode == 0
    ), f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of the run's JSONL log (a NaN loss as NaN: tjx.metrics reads it back)."""
    from tjx.metrics import read_jsonl

    return read_jsonl(run_dir / "metrics.jsonl")


def train_losses(run_dir: Path) -> dict[int, float]:
    """Step → training loss (the last record wins, so a resumed run's log reads as one run)."""
    return {r["step"]: r["loss"] for r in read_log(run_dir) if "loss" in r}


def val_losses(run_dir: Path) -> dict[int, float]:
    """Step → validation loss."""
    return {r["step"]: r["val_loss"] for r in read_log(run_dir) if "val_loss" in r}


def final(run_dir: Path) -> dict[str, Any]:
    """The run's ``final.json`` (step, params digest, last validation metrics), read as the
    trainer's run directory wrote it (a non-finite value is a float again)."""
    from trainer import RunDir

    return RunDir(run_dir).read(RunDir.FINAL_FILE)


#: A 20-step small run with dropout and a checkpoint every 4 steps: the uninterrupted run that
#: test_train_resume.py and test_train_object_store.py resume against (`reference_run`).
RESUMED_STEPS, RESUMED_EVERY = 20, 4
RESUMED = [
    *SMALL,
    f"train.steps={RESUMED_STEPS}",
    "train.eval_every=0",
    f"train.checkpoint_every={RESUMED_EVERY}",
    "model.dropout=0.1",
]

_TRAINED: dict[str, Path] = {}
_REFERENCES: dict[tuple[str, ...], Path] = {}


def reference_run(root: Path, sets: list[str]) -> Path:
    """The finished, uninterrupted run of ``sets`` (a trainer process; it exited 0), trained once
    per test process in ``root/"ref"`` and read, never written, by the tests that compare with it:
    Pants runs test_train_*.py as one batch in one process, so the files that resume against the
    same run share it."""
    key = tuple(sets)
    if key not in _REFERENCES or not (_REFERENCES[key] / "final.json").exists():
        check_ok(train(root, "ref", sets))
        _REFERENCES[key] = root / "ref"
    return _REFERENCES[key]


def trained_small_run(root: Path) -> Path:
    """A finished small run (trained once per test process; reused by the eval tests)."""
    if "small" not in _TRAINED or not (_TRAINED["small"] / "final.json").exists():
        run_dir = root / "small_run"
        sets = [*SMALL, "train.steps=30", "train.eval_every=15", "train.checkpoint_every=15"]
        proc = train(root, str(run_dir), sets)
        check_ok(proc)
        # A plain run's terminal holds no Python warning text (#71: one "trainer: warning:" line)
        assert "Warning:" not in proc.stderr, proc.stderr
        _TRAINED["small"] = run_dir
    return _TRAINED["small"]
