"""SIGTERM/SIGINT → a flag: the handler's line on file descriptor 2, a second Ctrl-C, the old
handlers back afterwards. The real thing (a trainer process signalled mid-run) is
tests-integration's test_train_sigterm.py."""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import types

import pytest

from tjx import parallel
from tjx.parallel import (
    STOP_MESSAGE,
    StopFlag,
    StoppedError,
    exit_now,
    stop_on_signals,
    write_stderr,
)
from tjx.parallel.preemption import AGAIN


def _send(sig: int) -> None:
    # Python runs the handler at the next bytecode of the main thread, i.e. before kill returns.
    os.kill(os.getpid(), sig)


def test_sigterm_sets_the_flag_and_the_old_handlers_come_back(capfd):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with stop_on_signals() as flag:
        assert isinstance(flag, StopFlag) and not flag and flag.signal_name is None
        assert signal.getsignal(signal.SIGTERM) == flag.handle
        _send(signal.SIGTERM)
        assert flag and flag.signal_name == "SIGTERM"
    assert {sig: signal.getsignal(sig) for sig in before} == before
    # The default line, without the Ctrl-C hint: a second SIGTERM does not stop at once.
    assert capfd.readouterr().err == "SIGTERM: stopping at the next step boundary\n"


def test_handlers_come_back_when_the_block_raises():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(ZeroDivisionError), stop_on_signals(message=None):
        _ = 1 / 0
    assert signal.getsignal(signal.SIGINT) == before


def test_the_callers_line_goes_to_fd_2_and_none_writes_nothing(capfd):
    with stop_on_signals(message="app: {signal}: saving{again}") as flag:
        _send(signal.SIGINT)
        assert flag.signal_name == "SIGINT"
        # Read from the file descriptor itself: the handler never goes through sys.stderr.
        assert capfd.readouterr().err == f"app: SIGINT: saving{AGAIN}\n"
    with stop_on_signals(message=None) as flag:
        _send(signal.SIGTERM)
        assert flag.signal_name == "SIGTERM"
    assert capfd.readouterr().err == ""


def test_second_sigint_calls_stop_now_then_raises(capfd):
    called = []
    with stop_on_signals(stop_now=lambda: called.append("now")) as flag:
        _send(signal.SIGINT)
        assert flag.signal_name == "SIGINT" and not called
        assert capfd.readouterr().err == STOP_MESSAGE.format(signal="SIGINT", again=AGAIN) + "\n"
        with pytest.raises(KeyboardInterrupt):  # stop_now returned: the interrupt goes on
            _send(signal.SIGINT)
    assert called == ["now"]


def test_second_sigint_without_stop_now_raises_and_sigterm_twice_does_not():
    with stop_on_signals(message=None) as flag:
        _send(signal.SIGTERM)
        _send(signal.SIGTERM)  # a scheduler repeating itself: still the boundary, not now
        assert flag.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            _send(signal.SIGINT)  # any signal was the first: this Ctrl-C is the second


def test_only_the_named_signals_are_handled():
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals(message=None, signals=(signal.SIGUSR1,)) as flag:
        assert signal.getsignal(signal.SIGINT) == before
        _send(signal.SIGUSR1)
        assert flag.signal_name == "SIGUSR1"


class _Reentrant:
    """A stream caught mid-write: every call raises what CPython's buffered IO raises then."""

    def __init__(self) -> None:
        self.flushes = 0

    def write(self, text: str) -> int:
        raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")

    def flush(self) -> None:
        self.flushes += 1
        raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stdout>'>")


def test_write_stderr_bypasses_a_busy_sys_stderr(capfd, monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Reentrant())
    line = "x" * 70_000  # more than a pipe takes at once: the rest is written too
    write_stderr(line)
    assert capfd.readouterr().err == line + "\n"


def test_exit_now_flushes_stdout_and_ends_even_when_the_flush_is_cut(monkeypatch):
    ended = []

    def fake_exit(code: int) -> None:
        ended.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    stdout = _Reentrant()
    monkeypatch.setattr(sys, "stdout", stdout)
    with pytest.raises(SystemExit):
        exit_now(130)
    assert ended == [130] and stdout.flushes == 1


def test_a_signal_inside_interruptible_work_raises_stopped_there_once(capfd):
    with stop_on_signals(message="{signal}") as flag:
        with flag.interruptible():  # no signal: the block runs to its end
            pass
        started = time.monotonic()
        with pytest.raises(StoppedError, match="SIGTERM"), flag.interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)  # work that would not end: the signal cuts it short
        assert time.monotonic() - started < 30
        assert flag.signal_name == "SIGTERM" and capfd.readouterr().err == "SIGTERM\n"
        os.kill(os.getpid(), signal.SIGTERM)  # after the block: recorded only, as before
        with pytest.raises(StoppedError, match="SIGTERM"), flag.interruptible():  # came before
            raise AssertionError("the block must not run")


def _busy() -> int:
    """A few bytecodes after a signal: Python runs the handler at one of them."""
    return sum(range(1000))


def _work(seconds: float) -> None:
    """Work in Python for ``seconds`` (an evaluation's loop: between its device calls, Python
    runs; a signal's handler runs there)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _busy()


def test_a_stop_raised_inside_a_gc_callback_is_raised_again_after_it(capfd):
    """#71: the handler once raised inside jax's garbage-collection callback, which swallowed
    the StoppedError (a traceback on stderr) and let the held-out evaluation go on."""
    sent: list[int] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start" and not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
            _busy()  # the handler runs here, inside the callback

    gc.callbacks.append(callback)
    try:
        with stop_on_signals(message="{signal}") as flag:
            started = time.monotonic()
            with pytest.raises(StoppedError, match="SIGTERM"), flag.interruptible():
                gc.collect()
                _work(20)  # work the stop must cut short
            assert time.monotonic() - started < 10
    finally:
        gc.callbacks.remove(callback)
    assert sent == [1]
    assert capfd.readouterr().err == "SIGTERM\n"  # no "Exception ignored in" traceback


class _SignalsWhenCollected:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        _busy()  # the handler runs inside the finalizer


def test_a_stop_raised_inside_a_finalizer_is_raised_again_after_it(capfd):
    with (
        stop_on_signals(message="{signal}") as flag,
        pytest.raises(StoppedError, match="SIGTERM"),
        flag.interruptible(),
    ):
        doomed = _SignalsWhenCollected()
        del doomed  # __del__ runs here; its exception would be printed and dropped
        _work(20)
    assert capfd.readouterr().err == "SIGTERM\n"


def test_other_unraisable_errors_are_still_reported_inside_the_block():
    seen = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with stop_on_signals(message=None) as flag, flag.interruptible():
            sys.unraisablehook(types.SimpleNamespace(exc_value=ValueError("x")))
        assert sys.unraisablehook == seen.append  # the block's hook is gone again
    finally:
        sys.unraisablehook = previous
    assert [type(u.exc_value) for u in seen] == [ValueError]


def test_a_stop_is_not_taken_for_the_works_own_failure():
    with stop_on_signals(message=None) as flag, pytest.raises(StoppedError), flag.interruptible():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            _busy()
        except Exception:  # the work's handler of its own failures
            pytest.fail("StoppedError was caught as an Exception")
    assert not issubclass(StoppedError, Exception)


def test_a_repeated_sigterm_writes_its_line_once(capfd):
    with stop_on_signals(message="{signal}") as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # during a save, say: the save finishes
        assert flag.signal_name == "SIGTERM"
    assert capfd.readouterr().err == "SIGTERM\n"


def test_a_closed_stderr_does_not_make_the_handler_raise(monkeypatch):
    def closed(line: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("tjx.parallel.preemption.write_stderr", closed)
    with stop_on_signals() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        _busy()
    assert flag.signal_name == "SIGTERM"


def test_a_signal_outside_interruptible_work_only_sets_the_flag():
    with stop_on_signals(message=None) as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.signal_name == "SIGINT"
    with stop_on_signals(message=None) as flag, flag.interruptible():
        pass
    assert not flag


def test_the_public_names():
    assert parallel.stop_on_signals is stop_on_signals
    assert parallel.StopFlag is StopFlag and parallel.StoppedError is StoppedError
