"""A run's ``--resume`` restores placed as the fresh state, and a stopped run's line names the
newest committed step (or says none was saved)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from tjx.ckpt import CheckpointManager, RunFolder, last_checkpoint_words, restore_placed
from tjx.ckpt.errors import CheckpointNotFoundError
from tjx.ckpt.folder import COMMIT_MARKER


def test_the_words_name_the_newest_committed_step_and_the_run_as_given(tmp_path: Path) -> None:
    run = tmp_path / "my run"
    assert last_checkpoint_words(run, "go on") == "no checkpoint was saved"
    assert last_checkpoint_words(run, "go on", "; start again") == (
        "no checkpoint was saved; start again"
    )
    for step, committed in (("4", True), ("9", True), ("12", False)):
        (RunFolder(run).checkpoints / step).mkdir(parents=True)
        if committed:
            (RunFolder(run).checkpoints / step / COMMIT_MARKER).write_text("ok")
    assert last_checkpoint_words(run, "continue with --resume", "; x") == (
        f"the last checkpoint is step 9 in {str(run)!r}; continue with --resume"
    )
    said = last_checkpoint_words(str(run), "y")  # a str names the run as a Path does
    assert said == f"the last checkpoint is step 9 in {str(run)!r}; y"


def test_a_resume_is_placed_on_the_targets_own_shardings(tmp_path: Path) -> None:
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("fsdp",))
    shard = NamedSharding(mesh, PartitionSpec("fsdp"))
    saved = {"w": jax.device_put(jnp.arange(8.0 * jax.device_count()), shard), "n": jnp.int32(3)}
    with CheckpointManager(tmp_path, async_save=False) as manager:
        manager.save(5, state=saved, data_state={"pos": 2})
    target = {"w": jax.device_put(jnp.zeros_like(saved["w"]), shard), "n": jnp.int32(0)}
    with CheckpointManager(tmp_path) as manager:
        restored = restore_placed(manager, target, prog="demo")
    assert restored.step == 5 and restored.data_state == {"pos": 2}
    np.testing.assert_array_equal(restored.state["w"], saved["w"])
    with CheckpointManager(tmp_path, async_save=False) as manager:  # a replay's start: a step
        manager.save(7, state={**saved, "n": jnp.int32(4)}, data_state={"pos": 3})
        assert restore_placed(manager, target, prog="demo", step=5).data_state == {"pos": 2}
    for leaf, fresh in zip(jax.tree.leaves(restored.state), jax.tree.leaves(target), strict=True):
        assert leaf.sharding == fresh.sharding


def test_a_corrupt_newest_step_is_one_warning_line_with_the_programs_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {"w": jnp.arange(4.0)}
    with CheckpointManager(tmp_path, async_save=False) as manager:
        manager.save(1, state=state)
        manager.save(2, state=state)
    (tmp_path / "2" / "state").rename(tmp_path / "2" / "gone")  # step 2 cannot be read back
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with CheckpointManager(tmp_path) as manager:
        assert restore_placed(manager, state, prog="demo").step == 1
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("demo: warning: tjx.ckpt: skipping corrupt checkpoint step 2")
    assert lines[-1].endswith("; using step 1")


def test_no_checkpoint_is_the_managers_error(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path) as manager, pytest.raises(CheckpointNotFoundError):
        restore_placed(manager, {"w": jnp.zeros(2)}, prog="demo")
