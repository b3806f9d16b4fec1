"""Checkpoints on gs:// and s3:// (real servers on 127.0.0.1): the marker is the commit."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tjx.ckpt import (
    CheckpointManager,
    CorruptCheckpointWarning,
    RunFolder,
    check_can_create,
    objects,
    storage,
)
from tjx.ckpt.folder import write_if_changed
from tjx_ckpt_tests._states import assert_bit_exact, make_state


def test_a_state_round_trips_bit_exact_through_a_store(store_url: str) -> None:
    state = make_state(5)
    with CheckpointManager(store_url, async_save=False) as manager:
        assert manager.save(5, state=state, data_state={"offset": 9}, config={"d": 1})
        assert manager.all_steps() == [5]
        restored = manager.restore(target=make_state(0))
    assert restored.step == 5
    assert restored.data_state == {"offset": 9}
    assert_bit_exact(restored.state, state)
    files = objects.file_sizes(f"{store_url}/5")
    assert "commit_success.txt" in files and "tjx_files.json" in files


def _w(step: int) -> dict:
    return {"w": jax.numpy.full((3,), float(step))}


def _objects(url: str) -> list[str]:
    return sorted(objects.file_sizes(url))


def test_keep_last_and_best_delete_old_steps_on_a_store(store_url: str) -> None:
    # Step 1 is kept as the best only, step 2 as the last only; step 3, the new best and last,
    # removes both at once (a save on a store is ~100 requests: no more steps than that needs).
    losses = {1: 1.0, 2: 4.0, 3: 0.5}
    with CheckpointManager(store_url, keep_last=1, keep_best=1, best_metric="loss") as manager:
        for step, loss in losses.items():
            manager.save(step, state=_w(step), metrics={"loss": loss})
            if step == 2:
                manager.wait_until_finished()
                assert manager.all_steps() == [1, 2]
        manager.wait_until_finished()
        assert manager.all_steps() == [3]
    # Nothing of the removed steps is left; a reopened manager ranks from the saved manifests
    # (without step 3's loss it would keep step 4 alone) and removes its own last step.
    assert {name.split("/")[0] for name in _objects(store_url)} == {"3"}
    with CheckpointManager(store_url, keep_last=1, keep_best=1, best_metric="loss") as manager:
        manager.save(4, state=_w(4), metrics={"loss": 9.0})
        manager.wait_until_finished()
        assert manager.all_steps() == [3, 4]
        manager.save(5, state=_w(5), metrics={"loss": 9.5})
        manager.wait_until_finished()
        assert manager.all_steps() == [3, 5]
    assert {name.split("/")[0] for name in _objects(store_url)} == {"3", "5"}


def test_a_step_without_its_marker_is_never_listed_and_is_removed_by_a_writer(
    store_url: str,
) -> None:
    # What a crash mid-save leaves on a store: the step's objects, no commit marker; and what a
    # crash mid-deletion leaves: the marker gone first, some objects still there.
    with CheckpointManager(store_url, keep_last=None, async_save=False) as manager:
        for step in (1, 2, 3):
            manager.save(step, state=_w(step))
    fs = storage.filesystem(store_url)
    fs.rm_file(f"{store_url}/3/commit_success.txt")
    fs.rm_file(f"{store_url}/2/commit_success.txt")
    with CheckpointManager(store_url, read_only=True) as reader:
        assert reader.all_steps() == [1]
        assert reader.restore().step == 1
    assert {name.split("/")[0] for name in _objects(store_url)} == {"1", "2", "3"}  # read-only
    with CheckpointManager(store_url, keep_last=None, async_save=False) as manager:
        assert {name.split("/")[0] for name in _objects(store_url)} == {"1"}
        manager.save(3, state=_w(30))  # the step number is free again
        np.testing.assert_array_equal(manager.restore(3).state["w"], np.full(3, 30.0))


def test_a_corrupt_newest_step_on_a_store_falls_back_and_is_replaced(store_url: str) -> None:
    with CheckpointManager(store_url, keep_last=None, async_save=False) as manager:
        for step in (1, 2):
            manager.save(step, state=_w(step))
    fs = storage.filesystem(store_url)
    data = [f for f in _objects(f"{store_url}/2") if "/d/" in f]
    fs.pipe_file(f"{store_url}/2/{data[0]}", b"cut")  # shorter than the commit recorded
    with CheckpointManager(store_url, keep_last=None, async_save=False) as manager:
        with pytest.warns(CorruptCheckpointWarning, match=r"step 2 .*truncated.*using step 1"):
            restored = manager.restore()
        assert (restored.step, restored.skipped) == (1, (2,))
        manager.save(2, state=_w(20))  # a corrupt step's number may be saved again
        np.testing.assert_array_equal(manager.restore(2).state["w"], np.full(3, 20.0))


def test_a_run_folder_on_a_store_writes_whole_files(store_url: str) -> None:
    run = RunFolder(store_url)
    assert str(run.path) == store_url and str(run.checkpoints) == f"{store_url}/checkpoints"
    check_can_create(store_url)
    assert _objects(store_url) == []  # the write probe is gone again
    config = run.path / "config.yaml"
    assert write_if_changed(config, "model: {d: 4}\nlr: 0.5\n")
    assert not write_if_changed(config, "model: {d: 4}\nlr: 0.5\n")  # unchanged: not rewritten
    assert run.read("config.yaml") == {"model": {"d": 4}, "lr": 0.5}
    assert run.write_json("final.json", {"step": 3, "val_loss": float("nan")})
    assert np.isnan(run.read("final.json")["val_loss"])
    assert run.latest_step() is None and not run.has_checkpoints()
    with CheckpointManager(run.checkpoints, async_save=False) as manager:
        manager.save(4, state=_w(4))
    assert run.latest_step() == 4 and run.step_folders() == [4] and run.has_checkpoints()
    assert run.unfinished_step() is None
    write_if_changed(run.checkpoints / "8" / "_CHECKPOINT_METADATA", "{}")  # a save cut short
    assert run.unfinished_step() == 8 and run.latest_step() == 4
    with pytest.raises(FileNotFoundError, match="model.json is missing"):
        run.read("model.json")


def test_a_step_is_deleted_marker_first(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with CheckpointManager(store_url, keep_last=None, async_save=False) as manager:
        for step in (1, 2):
            manager.save(step, state=_w(step))
    fs = storage.filesystem(store_url)

    def cut(*args: object, **kwargs: object) -> None:  # a crash after the first request
        raise KeyboardInterrupt

    monkeypatch.setattr(fs, "rm", cut)
    with pytest.raises(KeyboardInterrupt):
        objects.remove_step(f"{store_url}/2")
    monkeypatch.undo()
    # The marker went first: step 2 is no longer committed, though its arrays are still there.
    assert objects.committed_steps(store_url) == [1]
    assert "state/manifest.ocdbt" in objects.file_sizes(f"{store_url}/2")
    with CheckpointManager(store_url, read_only=True) as reader:
        assert reader.restore().step == 1
    with CheckpointManager(store_url, keep_last=None):  # a writer removes what is left
        assert objects.step_prefixes(store_url) == [1]
