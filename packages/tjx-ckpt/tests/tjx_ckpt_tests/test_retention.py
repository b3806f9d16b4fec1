"""keep_last N, keep_best K by a metric, and the trash directory of removed steps."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from tjx.ckpt import CheckpointManager

LOSSES = {1: 5.0, 2: 1.0, 3: 4.0, 4: 0.5, 5: 3.0, 6: 2.0, 7: 6.0}


def _state(step: int) -> dict:
    return {"w": jnp.full((3,), float(step))}


def test_keep_last_n(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, keep_last=2) as manager:
        for step in range(1, 6):
            manager.save(step, state=_state(step))
        manager.wait_until_finished()
        assert manager.all_steps() == [4, 5]
        np.testing.assert_array_equal(manager.restore(4).state["w"], np.full(3, 4.0))
    # Removed steps went through the trash directory, which is removed once empty.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "5"]


def test_a_trash_folder_left_by_a_kill_is_removed_on_opening(tmp_path: Path) -> None:
    # What kill -9 between orbax's rename into _deleted/ and its removal leaves behind.
    with CheckpointManager(tmp_path, keep_last=2, async_save=False) as manager:
        manager.save(1, state=_state(1))
    (tmp_path / "_deleted" / "0" / "state").mkdir(parents=True)
    (tmp_path / "_deleted" / "0" / "state" / "x").write_bytes(b"half removed")
    with CheckpointManager(tmp_path, keep_last=2) as manager:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
        for step in (2, 3):  # orbax makes the folder again for its next removal
            manager.save(step, state=_state(step))
        manager.wait_until_finished()
        assert manager.all_steps() == [2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "3"]


@pytest.mark.parametrize(("mode", "best"), [("min", [2, 4]), ("max", [1, 7])])
def test_keep_best_k_plus_last_n(tmp_path: Path, mode: str, best: list[int]) -> None:
    with CheckpointManager(
        tmp_path, keep_last=1, keep_best=2, best_metric="loss", best_mode=mode
    ) as manager:
        for step, loss in LOSSES.items():
            manager.save(step, state=_state(step), metrics={"loss": loss, "other": 1})
        manager.wait_until_finished()
        assert manager.all_steps() == sorted(set(best) | {7})
        assert manager.restore(best[0]).metrics == {"loss": LOSSES[best[0]], "other": 1}


def test_steps_without_the_metric_are_kept_only_as_latest(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, keep_last=1, keep_best=1, best_metric="loss") as manager:
        manager.save(1, state=_state(1), metrics={"loss": 0.1})
        manager.save(2, state=_state(2))
        manager.save(3, state=_state(3), metrics={"acc": 0.9})
        manager.save(4, state=_state(4))
        manager.wait_until_finished()
        assert manager.all_steps() == [1, 4]


def test_keep_all(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, keep_last=None, async_save=False) as manager:
        for step in range(3):
            manager.save(step, state=_state(step))
        assert manager.all_steps() == [0, 1, 2]
