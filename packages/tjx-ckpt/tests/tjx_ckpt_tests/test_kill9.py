"""kill -9 at random moments while a subprocess saves: restore always finds an intact step, on a
local disk and on gs:// and s3:// (real servers on 127.0.0.1), where a step commits by its marker
and old steps are deleted marker first.

The writers are forked from one fork server that imported jax, orbax and tjx.ckpt once: each is
still a process of its own killed by SIGKILL mid-write, without paying a fresh interpreter's
imports (~4 s of CPU) per kill.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import jax
import pytest

from tjx.ckpt import CheckpointManager, CheckpointNotFoundError, objects
from tjx_ckpt_tests import _kill_child
from tjx_ckpt_tests._states import assert_bit_exact, make_state

KILLS = 10
STORE_KILLS = 5  # per store: a store's saves are slower, so most kills cut one
SEED = 20261121


@pytest.fixture(scope="module")
def forkserver() -> ForkServerContext:
    """The fork server the writers come from (started on first use, with the child's imports)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tjx_ckpt_tests._kill_child"])
    return context


def _spawn(
    forkserver: ForkServerContext, directory: Path | str, progress: Path
) -> multiprocessing.process.BaseProcess:
    """A writer saving into ``directory`` forever, returned once its first save has started."""
    # This process's environment as it is now (a store's settings), with one CPU device.
    environ = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    receive, send = forkserver.Pipe(duplex=False)
    child = forkserver.Process(
        target=_kill_child.forked, args=(str(directory), str(progress), environ, send)
    )
    child.start()
    send.close()
    try:
        assert receive.poll(120), "the writer did not start its first save within 120 s"
        assert receive.recv() == "ready"
    finally:
        receive.close()
    return child


def _progress(progress: Path) -> tuple[int, int]:
    """(newest step known committed, newest step whose save had started)."""
    committed, started = 0, 0
    if progress.exists():
        for line in progress.read_text().splitlines():
            word, _, num = line.partition(" ")
            if word == "committed":
                committed = max(committed, int(num))
            elif word == "start":
                started = max(started, int(num))
    return committed, started


def _wait_for_a_commit(progress: Path, since: int, timeout_s: float = 120.0) -> None:
    """Until the progress file names a step newer than ``since`` committed (a child's save)."""
    deadline = time.monotonic() + timeout_s
    while _progress(progress)[0] <= since:
        assert time.monotonic() < deadline, f"no save committed within {timeout_s:g} s"
        time.sleep(0.05)


def test_kill9_at_random_moments_never_leaves_a_partial_step(
    forkserver: ForkServerContext, tmp_path: Path
) -> None:
    directory = tmp_path / "run"

    def cut_short() -> bool:
        return any(".orbax-checkpoint-tmp" in p.name for p in directory.iterdir())

    _kill_loop(forkserver, directory, tmp_path / "progress.txt", KILLS, cut_short)
    assert not (directory / "_deleted").exists()  # no empty trash folder stays behind


def test_kill9_at_random_moments_on_a_store_never_leaves_a_partial_step(
    forkserver: ForkServerContext, store_url: str, tmp_path: Path
) -> None:
    def cut_short() -> bool:  # objects of a step without its marker: a save (or delete) cut
        return objects.step_prefixes(store_url) != objects.committed_steps(store_url)

    _kill_loop(forkserver, store_url, tmp_path / "progress.txt", STORE_KILLS, cut_short)


def _kill_loop(
    forkserver: ForkServerContext,
    directory: Path | str,
    progress: Path,
    kills: int,
    cut_short: Any,
) -> None:
    rng = random.Random(SEED)
    target = jax.eval_shape(lambda: make_state(0, layers=1))
    interrupted_saves = 0
    restored_steps = []
    for kill in range(kills):
        child = _spawn(forkserver, directory, progress)
        if kill % 2:
            # Every other kill comes after this child committed a step, so the restores below
            # have steps to check however slow the store (or the machine) is today.
            _wait_for_a_commit(progress, since=_progress(progress)[0])
        time.sleep(rng.uniform(0.0, 1.0))
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
        assert child.exitcode == -signal.SIGKILL
        interrupted_saves += cut_short()
        committed, started = _progress(progress)
        manager = CheckpointManager(directory, keep_last=2, keep_best=1, best_metric="loss")
        try:
            steps = manager.all_steps()
            if not steps:
                assert committed == 0
                with pytest.raises(CheckpointNotFoundError):
                    manager.restore(target=target)
                continue
            restored = manager.restore(target=target)
            # The newest listed step is intact (nothing skipped), no committed step was lost,
            # and nothing newer than the last save started can exist.
            assert restored.skipped == ()
            assert restored.step == steps[-1]
            assert committed <= restored.step <= started
            assert_bit_exact(restored.state, make_state(restored.step, layers=1))
            assert restored.data_state == {"step": restored.step}
            for step in steps[:-1]:
                older = manager.restore(step, target=target)
                assert_bit_exact(older.state, make_state(step, layers=1))
            restored_steps.append(restored.step)
        finally:
            manager.close()
    print(f"kill -9: {interrupted_saves}/{kills} kills cut a save short; steps {restored_steps}")
    assert interrupted_saves >= 1, "no kill landed during a save: the test proved nothing"
    assert len(restored_steps) >= kills // 2
    assert restored_steps == sorted(restored_steps)
