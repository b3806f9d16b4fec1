"""A C++ abort (SIGABRT) of a joined process ends it with one line and status 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tjx.parallel import aborts


def test_a_listening_port_is_reachable_and_a_closed_one_is_not() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert aborts.coordinator_reachable(f"127.0.0.1:{port}", settle_s=0.0)
    # The same port, now closed: refused.
    assert not aborts.coordinator_reachable(f"127.0.0.1:{port}", settle_s=0.0)
    # Unknown or malformed: never claims the coordinator is gone.
    assert aborts.coordinator_reachable(None, settle_s=0.0)
    assert aborts.coordinator_reachable("no-port", settle_s=0.0)
    assert not aborts.coordinator_reachable("127.0.0.1:notaport", settle_s=0.0)


_CHILD = textwrap.dedent("""
    import os, sys
    from tjx.parallel import aborts

    def report(message):
        print(f"demo: error: {message}", file=sys.stderr, flush=True)

    aborts.guard_aborts(lambda: "never used", report)
    aborts.guard_aborts(lambda: "what happened", report)  # the latest meaning counts
    os.abort()
    """)


def test_cpp_logs_stay_on_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    set_to: list[int] = []
    monkeypatch.setattr(aborts, "set_cpp_log_level", set_to.append)
    monkeypatch.setattr(aborts, "_guard", {"callback": object()})  # installed: no new handler
    monkeypatch.setenv(aborts.CPP_LOGS_ENV, "1")
    aborts.guard_aborts(lambda: "x", print)
    assert set_to == []
    monkeypatch.setenv(aborts.CPP_LOGS_ENV, "0")
    aborts.guard_aborts(lambda: "x", print)
    assert set_to == [1000]  # absl's "nothing", FATAL included


def test_an_abort_becomes_one_line_and_status_1() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.pop(aborts.CPP_LOGS_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == "demo: error: what happened\n"


def _terminate_child(cpp_logs: str | None) -> subprocess.CompletedProcess[str]:
    """A child that guards aborts, then ends in ``std::terminate`` as gloo's thread does when a
    peer drops in the middle of a collective."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.pop(aborts.CPP_LOGS_ENV, None)
    if cpp_logs is not None:
        env[aborts.CPP_LOGS_ENV] = cpp_logs
    terminate = 'import ctypes; ctypes.CDLL("libstdc++.so.6")._ZSt9terminatev()'
    child = _CHILD.replace("os.abort()", terminate)
    return subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.skipif(sys.platform != "linux", reason="libstdc++'s std::terminate: Linux only")
def test_a_cpp_terminate_is_the_same_one_line_without_the_exception() -> None:
    done = _terminate_child(None)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "demo: error: what happened\n"  # not "terminate called after ..."
    kept = _terminate_child("1")  # the C++ log asked for: libstdc++'s own words come first
    assert kept.returncode == 1, kept.stderr
    assert kept.stderr.startswith("terminate called without an active exception"), kept.stderr
    assert kept.stderr.endswith("demo: error: what happened\n"), kept.stderr


def test_a_failing_report_still_ends_with_status_1() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    child = _CHILD.replace('print(f"demo: error: {message}", file=sys.stderr, flush=True)', "1 / 0")
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1 and done.stderr == "", done.stderr


def test_the_abort_line_names_what_happened() -> None:
    asked: list[int] = []

    def gone() -> bool:
        asked.append(1)
        return False

    assert aborts.abort_message("process 2 of 3 stopped responding", 1, 3, gone) == (
        "process 2 of 3 stopped responding"
    )
    assert aborts.abort_message(None, 1, 2, gone) == (
        "lost the coordinator (process 0 of 2): its connection closed (killed or crashed), and "
        "jax's runtime ended this process"
    )
    assert aborts.abort_message(None, 1, 2, lambda: True).startswith(
        "jax's runtime aborted process 1 of 2 (a fatal error in its C++ runtime; set "
        "TJX_CPP_LOGS=1 to see its log)"
    )
    asked.clear()
    assert aborts.abort_message(None, 0, 2, gone).startswith("jax's runtime aborted process 0")
    assert asked == []  # process 0 hosts the coordinator: never probed
