"""A committed step that no longer reads back intact is named, skipped, and never trusted."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import jax
import pytest

from tjx.ckpt import (
    CheckpointManager,
    CorruptCheckpointError,
    CorruptCheckpointWarning,
    StepExistsError,
)
from tjx_ckpt_tests._states import assert_bit_exact, make_state

# A failed tensorstore read can leave a callback aimed at orbax's closed asyncio loop, or an
# orbax coroutine never awaited; Python reports them as warnings. They are noise from the
# deliberately failed read, not tjx errors.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]


def _data_files(step_dir: Path) -> list[Path]:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, "expected OCDBT data files under state/"
    return files


def _truncate(step_dir: Path) -> None:
    for f in _data_files(step_dir):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_bytes(step_dir: Path) -> None:
    for f in _data_files(step_dir):
        data = bytearray(f.read_bytes())
        for i in range(len(data) // 2, len(data) - 8, 97):
            data[i] ^= 0x5A
        f.write_bytes(bytes(data))


def _garble_manifest(step_dir: Path) -> None:
    (step_dir / "manifest" / "metadata").write_text('{"format": "tjx-ckpt", "leaves": {')


def _bad_manifest_entry(step_dir: Path) -> None:
    path = step_dir / "manifest" / "metadata"
    manifest = json.loads(path.read_text())
    manifest["leaves"]["params/embed"]["shape"] = "oops"
    path.write_text(json.dumps(manifest))


def _drop_ocdbt_manifest(step_dir: Path) -> None:
    (step_dir / "state" / "manifest.ocdbt").unlink()


def _swap_in_other_step(step_dir: Path) -> None:
    # Well-formed arrays of the right shapes, but not the ones saved for this step.
    shutil.rmtree(step_dir / "state")
    shutil.copytree(step_dir.parent / "2" / "state", step_dir / "state")


@pytest.mark.parametrize(
    "corrupt",
    [
        _truncate,
        _flip_bytes,
        _garble_manifest,
        _bad_manifest_entry,
        _drop_ocdbt_manifest,
        _swap_in_other_step,
    ],
)
def test_corrupt_latest_step_falls_back_to_previous(
    tmp_path: Path, corrupt: Callable[[Path], None]
) -> None:
    target = jax.eval_shape(lambda: make_state(0, layers=1))
    with CheckpointManager(tmp_path, keep_last=None, async_save=False) as manager:
        for step in (1, 2, 3):
            manager.save(step, state=make_state(step, layers=1), data_state={"s": step})
        corrupt(tmp_path / "3")
        with pytest.warns(CorruptCheckpointWarning, match=r"step 3 .*/3\)"):
            restored = manager.restore(target=target)
        assert restored.step == 2 and restored.skipped == (3,)
        assert_bit_exact(restored.state, make_state(2, layers=1))
        assert restored.data_state == {"s": 2}
        with pytest.raises(CorruptCheckpointError, match="step 3"):
            manager.restore(3, target=target)
        # Resuming from 2 and saving step 3 again moves the corrupt step aside, not deleting it.
        manager.save(3, state=make_state(30, layers=1))
        assert len(list((tmp_path / "_corrupt").iterdir())) == 1
        assert_bit_exact(manager.restore(target=target).state, make_state(30, layers=1))


def test_every_step_corrupt_is_an_error_naming_them(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, async_save=False) as manager:
        for step in (1, 2):
            manager.save(step, state=make_state(step, layers=1))
        _garble_manifest(tmp_path / "1")
        _truncate(tmp_path / "2")
        with (
            pytest.warns(CorruptCheckpointWarning),
            pytest.raises(CorruptCheckpointError, match=r": step 2: .*; step 1: "),
        ):
            manager.restore()


def test_a_foreign_orbax_checkpoint_is_not_taken(tmp_path: Path) -> None:
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(tmp_path) as plain:
        plain.save(1, args=ocp.args.StandardSave({"w": jax.numpy.ones(2)}))
    with (
        CheckpointManager(tmp_path, read_only=True) as manager,
        pytest.warns(CorruptCheckpointWarning, match="manifest"),
        pytest.raises(CorruptCheckpointError, match="no readable checkpoint"),
    ):
        manager.restore()


def test_explicit_corrupt_step_raises_and_can_be_saved_again(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, async_save=False) as manager:
        manager.save(1, state=make_state(1, layers=1))
        with pytest.raises(StepExistsError):
            manager.save(1, state=make_state(1, layers=1))
        _flip_bytes(tmp_path / "1")
        with pytest.raises(CorruptCheckpointError, match="step 1"):
            manager.restore(1)
        manager.save(1, state=make_state(10, layers=1))
        restored = manager.restore(1, target=make_state(0, layers=1))
        assert_bit_exact(restored.state, make_state(10, layers=1))


def test_params_restore_names_its_step_and_falls_back_past_a_corrupt_one(tmp_path: Path) -> None:
    """The evaluator's path: read-only, params only, newest intact step and which one it was."""
    from tjx.ckpt import restore_params, restore_params_and_step

    with CheckpointManager(tmp_path, keep_last=None, async_save=False) as manager:
        for step in (1, 2):
            manager.save(step, state=make_state(step, layers=1))
    target = jax.eval_shape(lambda: make_state(0, layers=1)["params"])
    step, params = restore_params_and_step(tmp_path, target=target)
    assert step == 2
    assert_bit_exact(params, make_state(2, layers=1)["params"])
    _flip_bytes(tmp_path / "2")
    with pytest.warns(CorruptCheckpointWarning, match="step 2"):
        step, params = restore_params_and_step(tmp_path, target=target)
    assert step == 1
    assert_bit_exact(params, make_state(1, layers=1)["params"])
    with pytest.raises(CorruptCheckpointError, match="step 2"):
        restore_params(tmp_path, target=target, step=2)
