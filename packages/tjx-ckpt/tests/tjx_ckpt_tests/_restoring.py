"""Restoring the way the apps do, and asserting what was printed meanwhile (shared by tests)."""

from __future__ import annotations

import gc
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import pytest

from tjx.ckpt import (
    CheckpointManager,
    CorruptCheckpointError,
    CorruptCheckpointWarning,
    restore_params_and_step,
)
from tjx_ckpt_tests._states import make_state

# Strings of the noise orbax/tensorstore printed after a failed read (none is a tjx message).
NOISE = (
    "Event loop is closed",
    "Traceback",
    "exception was never retrieved",
    "was never awaited",
    "Failed to json parse",
)


def save_steps(directory: Path, steps: tuple[int, ...], layers: int = 1) -> None:
    """Saves ``make_state(step)`` (and data state ``{"s": step}``) for each step, keeping all."""
    with CheckpointManager(directory, keep_last=None, async_save=False) as manager:
        for step in steps:
            manager.save(step, state=make_state(step, layers=layers), data_state={"s": step})


def restore_newest(directory: Path, how: str, layers: int = 1) -> tuple[int, Any, list[Any]]:
    """Restores the newest intact step as ``--resume`` (manager) or eval (params) does.

    Returns the step, the state (manager) or params (params) and every warning issued meanwhile.
    """
    target = jax.eval_shape(lambda: make_state(0, layers=layers))
    # An earlier test's failed orbax reads report "never awaited" when collected: let them do so
    # now, outside the recording (seen in CI: they were counted as this restore's warnings).
    _let_noise_show()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if how == "manager":
            with CheckpointManager(directory, keep_last=None) as manager:  # a fresh process's
                restored = manager.restore(target=target)
            assert restored.data_state == {"s": restored.step}
            step, tree = restored.step, restored.state
        else:
            step, tree = restore_params_and_step(directory, target=target["params"])
        _let_noise_show()
    return step, tree, list(caught)


def saved(how: str, step: int, layers: int = 1) -> Any:
    """What was saved for ``step``: the whole state, or its params for the params path."""
    state = make_state(step, layers=layers)
    return state if how == "manager" else state["params"]


def assert_quiet(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, own: Path
) -> None:
    """Nothing of ``NOISE`` was printed or logged about the checkpoints under ``own``.

    A log record that names another test's folder (``pytest-of-…/test_…``) is that test's
    leftover — a failed orbax read whose future asyncio reports only when it is collected, at
    any later time — not this restore's, and is not counted.
    """
    out, err = capfd.readouterr()
    logged = "\n".join(
        text
        for record in caplog.records
        if str(own) in (text := caplog.handler.format(record)) or "/pytest-of-" not in text
    )
    for where, text in (("stdout", out), ("stderr", err), ("logging", logged)):
        for noise in NOISE:
            assert noise not in text, f"{noise!r} in {where}:\n{text[:2000]}"


def assert_one_skip_warning(caught: list[Any], step: int, reason: str) -> None:
    assert [w.category for w in caught] == [CorruptCheckpointWarning], [
        str(w.message) for w in caught
    ]
    message = str(caught[0].message)
    assert f"skipping corrupt checkpoint step {step} (" in message and reason in message, message


def _let_noise_show() -> None:
    # A read left in flight reports when it ends (within milliseconds on a local disk), a
    # never-awaited coroutine when it is collected: give both the chance to show up here.
    time.sleep(0.2)
    gc.collect()


def restore_error(directory: Path, how: str, layers: int = 1) -> CorruptCheckpointError:
    """The CorruptCheckpointError of a restore (as :func:`restore_newest`) that finds no step.

    Every step must have been skipped with one CorruptCheckpointWarning each.
    """
    target = jax.eval_shape(lambda: make_state(0, layers=layers))
    with CheckpointManager(directory, read_only=True) as reader:
        steps = reader.all_steps()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CorruptCheckpointError) as info:
            if how == "manager":
                with CheckpointManager(directory, keep_last=None) as manager:
                    manager.restore(target=target)
            else:
                restore_params_and_step(directory, target=target["params"])
        _let_noise_show()
    assert [w.category for w in caught] == [CorruptCheckpointWarning] * len(steps), [
        str(w.message) for w in caught
    ]
    return info.value
