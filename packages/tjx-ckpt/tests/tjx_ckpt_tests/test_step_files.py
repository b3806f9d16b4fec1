"""A step whose files show it incomplete is skipped quietly, before orbax opens it.

Covers the three cases of issue #16 point 5: the OCDBT root manifest deleted (orbax used to print
one "Event loop is closed" traceback per leaf), a broken ``_CHECKPOINT_METADATA`` (orbax logged
an error, or could not even open the directory) and a missing ``commit_success.txt``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp
import pytest

from tjx.ckpt import (
    CheckpointManager,
    CorruptCheckpointError,
    CorruptCheckpointWarning,
    restore_params_and_step,
)
from tjx.ckpt.stepfiles import array_store_problem, commit_problem
from tjx_ckpt_tests._restoring import (
    assert_one_skip_warning,
    assert_quiet,
    restore_newest,
    save_steps,
    saved,
)
from tjx_ckpt_tests._states import assert_bit_exact, make_state


@pytest.mark.usefixtures("default_unraisablehook")
@pytest.mark.parametrize("how", ["manager", "params"])
def test_missing_ocdbt_manifest_is_skipped_without_tracebacks(
    tmp_path: Path, how: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    layers = 4  # 45 leaves: orbax starts that many reads before the first one fails
    save_steps(tmp_path, (1, 2), layers=layers)
    found = subprocess.run(
        ["find", str(tmp_path / "2"), "-name", "manifest.ocdbt"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # The root of the step's array store, and the per-process store merged into it.
    root = tmp_path / "2" / "state" / "manifest.ocdbt"
    assert sorted(found) == [str(root), str(tmp_path / "2/state/ocdbt.process_0/manifest.ocdbt")]
    root.unlink()
    capfd.readouterr()

    step, tree, caught = restore_newest(tmp_path, how, layers=layers)

    assert_quiet(capfd, caplog, tmp_path)
    assert step == 1
    assert_bit_exact(tree, saved(how, 1, layers=layers))
    assert_one_skip_warning(caught, 2, "state/manifest.ocdbt is missing")


@pytest.mark.usefixtures("default_unraisablehook")
@pytest.mark.parametrize(
    "content",
    [b"", b'{"item_handlers": ', b"[1]", b'{"commit_timestamp_nsecs": "soon"}'],
    ids=["empty", "cut-short", "not-an-object", "bad-field"],
)
def test_broken_step_metadata_is_corruption(
    tmp_path: Path,
    content: bytes,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    save_steps(tmp_path, (1, 2))
    (tmp_path / "2" / "_CHECKPOINT_METADATA").write_bytes(content)
    capfd.readouterr()
    for how in ("manager", "params"):
        step, tree, caught = restore_newest(tmp_path, how)
        assert step == 1
        assert_bit_exact(tree, saved(how, 1))
        assert_one_skip_warning(caught, 2, "_CHECKPOINT_METADATA is ")
    assert_quiet(capfd, caplog, tmp_path)


def test_every_step_metadata_broken_is_one_error_naming_the_folder(tmp_path: Path) -> None:
    save_steps(tmp_path, (1, 2))
    for step in (1, 2):
        (tmp_path / str(step) / "_CHECKPOINT_METADATA").write_bytes(b"")
    target = jax.eval_shape(lambda: make_state(0, layers=1))
    expected = rf"^no readable checkpoint in {re.escape(str(tmp_path))}: step 2: .*empty; step 1: "
    with (
        CheckpointManager(tmp_path) as manager,
        pytest.warns(CorruptCheckpointWarning),
        pytest.raises(CorruptCheckpointError) as err,
    ):
        manager.restore(target=target)
    assert err.match(expected)
    with pytest.warns(CorruptCheckpointWarning), pytest.raises(CorruptCheckpointError) as err:
        restore_params_and_step(tmp_path, target=target["params"])
    assert err.match(expected)


def test_step_with_broken_metadata_still_counts_for_keep_last(tmp_path: Path) -> None:
    # orbax reads every step's metadata when a manager opens; '[1]' used to make that raise.
    save_steps(tmp_path, (1, 2))
    (tmp_path / "1" / "_CHECKPOINT_METADATA").write_bytes(b"[1]")
    with CheckpointManager(tmp_path, keep_last=2, async_save=False) as manager:
        assert manager.all_steps() == [1, 2]
        manager.save(3, state=make_state(3, layers=1))
        assert manager.all_steps() == [2, 3]
        assert manager.restore().step == 3


def test_orbax_writes_the_commit_marker_on_a_local_disk(tmp_path: Path) -> None:
    """The premise of skipping a step without it: plain orbax (no tjx commit) writes it too."""
    with ocp.CheckpointManager(tmp_path) as plain:
        plain.save(1, args=ocp.args.StandardSave({"w": jax.numpy.ones(2)}))
    assert (tmp_path / "1" / "commit_success.txt").is_file()
    assert not list(tmp_path.glob("1.orbax-checkpoint-tmp*"))  # committed by the rename


def test_step_without_commit_marker_is_skipped_as_uncommitted(tmp_path: Path) -> None:
    save_steps(tmp_path, (1, 2))
    (tmp_path / "2" / "commit_success.txt").unlink()
    for how in ("manager", "params"):
        step, tree, caught = restore_newest(tmp_path, how)
        assert step == 1
        assert_bit_exact(tree, saved(how, 1))
        assert_one_skip_warning(caught, 2, "never committed: commit_success.txt is missing")


def test_leftover_tmp_folder_is_not_a_step(tmp_path: Path) -> None:
    save_steps(tmp_path, (1, 2))
    # A save killed before its commit: every file written but the marker, no rename yet.
    leftover = tmp_path / "3.orbax-checkpoint-tmp-1795369977"
    shutil.copytree(tmp_path / "2", leftover)
    (leftover / "commit_success.txt").unlink()
    with CheckpointManager(tmp_path, read_only=True) as reader:
        assert reader.all_steps() == [1, 2]
        step, _, caught = restore_newest(tmp_path, "params")
        assert step == 2 and caught == []
    assert leftover.is_dir()  # read-only: left as it was
    with CheckpointManager(tmp_path, async_save=False) as manager:
        assert manager.all_steps() == [1, 2]
        # A writing manager removes it, in orbax's background future (awaited by the next save).
        deadline = time.monotonic() + 10
        while leftover.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not leftover.exists()
        assert_bit_exact(
            manager.restore(target=make_state(0, layers=1)).state, make_state(2, layers=1)
        )


def test_file_checks_name_what_is_wrong(tmp_path: Path) -> None:
    step = tmp_path / "5"
    step.mkdir()
    assert commit_problem(step) == (
        "it was never committed: commit_success.txt is missing (a commit writes it before "
        "renaming the step into place)"
    )
    (step / "commit_success.txt").write_text("Checkpoint commit was successful")
    assert commit_problem(step) == "_CHECKPOINT_METADATA is missing"
    metadata = step / "_CHECKPOINT_METADATA"
    metadata.mkdir()
    assert str(commit_problem(step)).startswith("_CHECKPOINT_METADATA cannot be read (")
    metadata.rmdir()
    metadata.write_bytes(b"\xff\xfe")
    assert str(commit_problem(step)).startswith("_CHECKPOINT_METADATA is not JSON (")
    metadata.write_text('{"commit_timestamp_nsecs": 1795369978046188535}')
    assert commit_problem(step) is None

    state = step / "state"
    state.write_text("a file where the item folder should be")
    assert str(array_store_problem(state)).startswith("state/manifest.ocdbt cannot be read (")
    state.unlink()
    state.mkdir()
    assert array_store_problem(state) == (
        "state/manifest.ocdbt is missing (the root of its array store)"
    )
    (state / "manifest.ocdbt").write_bytes(b"")
    empty = "state/manifest.ocdbt is empty (the root of its array store)"
    assert array_store_problem(state) == empty
    (state / "manifest.ocdbt").write_bytes(b"\x0c\xdb\x3a\x2a")
    assert array_store_problem(state) is None
