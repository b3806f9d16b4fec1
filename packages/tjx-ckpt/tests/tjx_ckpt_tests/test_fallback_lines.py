"""A corrupt step's fallback is one line: which step, why, which step is used, nothing else."""

from __future__ import annotations

import gc
import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orbax.checkpoint as ocp
import pytest

from tjx.ckpt import CorruptCheckpointWarning, corrupt_fallback_lines, fallback


def test_a_corrupt_newest_step_is_one_stderr_line_in_a_fresh_process(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    done = subprocess.run(
        [sys.executable, "-m", "tjx_ckpt_tests._fallback_child", str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "restored 1"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # no warning source line, no asyncio traceback
    assert lines[0].startswith(
        f"demo: warning: tjx.ckpt: skipping corrupt checkpoint step 2 ({tmp_path / 'ckpt' / '2'}): "
    )
    assert lines[0].endswith("; using step 1")


def test_other_warnings_keep_their_format() -> None:
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with corrupt_fallback_lines("demo", stream=out):
            warnings.warn("step 9 (x): bad", CorruptCheckpointWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert out.getvalue() == "demo: warning: step 9 (x): bad\n"
    assert [str(w.message) for w in caught] == ["something else"]


def test_failed_read_debris_is_dropped_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    passed_on: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: passed_on.append(str(u.exc_value)))
    monkeypatch.setattr(fallback, "_installed", False)
    fallback.silence_failed_reads()
    fallback.silence_failed_reads()  # idempotent: one filter, one hook
    logger = logging.getLogger("asyncio")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.error("Future exception was never retrieved\nfuture: <Future finished>")
        logger.error("Task exception was never retrieved")
        logger.error("something else went wrong")
    finally:
        logger.removeHandler(handler)
    assert records == ["something else went wrong"]
    for exc in (RuntimeError("Event loop is closed"), RuntimeError("other"), ValueError("x")):
        sys.unraisablehook(SimpleNamespace(exc_value=exc))  # type: ignore[arg-type]
    assert passed_on == ["other", "x"]
    # A read coroutine of orbax's, collected holding the read's error, is dropped; the same error
    # from anyone else's coroutine is not.
    orbax_read = _coroutine("/site-packages/orbax/checkpoint/_src/serialization/s.py")
    own_read = _coroutine("/x.py")
    try:
        for coroutine in (orbax_read, own_read):
            error = Exception("Encountered error while reading array index")
            sys.unraisablehook(SimpleNamespace(exc_value=error, object=coroutine))  # type: ignore
    finally:
        orbax_read.close()
        own_read.close()
    assert passed_on == ["other", "x", "Encountered error while reading array index"]


def _coroutine(filename: str) -> Any:
    """A coroutine object whose code says it was defined in ``filename``."""
    namespace: dict[str, Any] = {}
    exec(compile("async def read():\n    return 1\n", filename, "exec"), namespace)
    return namespace["read"]()


def test_debris_that_arrives_before_the_failure_is_seen_is_dropped_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tensorstore's threads may call into orbax's closed loop while the failed read is still
    # unwinding: the filter must already be in place when the first read starts.
    import jax.numpy as jnp

    from tjx.ckpt import CheckpointManager
    from tjx.ckpt import manager as manager_module
    from tjx.ckpt.errors import CorruptCheckpointError

    passed_on: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: passed_on.append(str(u.exc_value)))
    monkeypatch.setattr(fallback, "_installed", False)
    state = {"w": jnp.arange(4.0)}
    with CheckpointManager(tmp_path / "ckpt", async_save=False) as manager:
        manager.save(1, state=state)
        manager.save(2, state=state)
    real_read = manager_module.read_step

    def read_with_early_debris(mgr: object, step: int, **kwargs: object) -> object:
        if step == 2:
            sys.unraisablehook(SimpleNamespace(exc_value=RuntimeError("Event loop is closed")))
            raise CorruptCheckpointError("step 2: damaged")
        return real_read(mgr, step, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(manager_module, "read_step", read_with_early_debris)
    out = io.StringIO()
    with CheckpointManager(tmp_path / "ckpt") as manager, corrupt_fallback_lines("demo", out):
        assert manager.restore(target=state).step == 1
    assert passed_on == []
    assert out.getvalue().count("\n") == 1


def test_an_unawaited_orbax_read_says_nothing_and_anyone_elses_does() -> None:
    # A failed read's cut-off orbax coroutine, reachable only through a reference cycle (so the
    # collection decides when it ends), inside a caller's own warnings context.
    async def own_read() -> None:
        return None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for coroutine in (ocp.type_handlers.ArrayHandler().metadata([]), own_read()):
            cycle: list[Any] = [coroutine]
            cycle.append(cycle)
        del coroutine, cycle
        fallback.collect_failed_read()
    unawaited = [str(w.message) for w in caught if "was never awaited" in str(w.message)]
    assert unawaited == [f"coroutine '{own_read.__qualname__}' was never awaited"]
    assert "ArrayHandler.metadata" in fallback._orbax_coroutine_names()


def test_the_orbax_filter_outlasts_the_warnings_context_a_restore_ran_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # restore_placed restores inside corrupt_fallback_lines, whose catch_warnings ended the filter
    # the restore put in place: an orbax read the restore left unawaited, collected later (at a
    # failed save of a resumed run), printed "coroutine ... was never awaited" above the run's one
    # error line. Anyone else's unawaited coroutine still says so.
    async def own_read() -> None:
        return None

    monkeypatch.setattr(fallback, "_installed", False)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # put back after the test
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))
    with corrupt_fallback_lines("demo", io.StringIO()):
        fallback.silence_failed_reads()  # what a restore in the block does first
    shown: list[str] = []
    monkeypatch.setattr(
        warnings, "showwarning", lambda message, *rest, **kw: shown.append(str(message))
    )
    for coroutine in (ocp.type_handlers.ArrayHandler().metadata([]), own_read()):
        cycle: list[Any] = [coroutine]
        cycle.append(cycle)
    del coroutine, cycle
    gc.collect()
    assert [m for m in shown if "was never awaited" in m] == [
        f"coroutine '{own_read.__qualname__}' was never awaited"
    ]
