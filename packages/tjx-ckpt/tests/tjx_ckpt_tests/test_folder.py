"""A run's folder as storage: whole-or-nothing writes, reads that name the file and the reason,
and which step is the newest committed one."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tjx.ckpt import (
    CheckpointError,
    CheckpointManager,
    RunFileError,
    RunFileNotFoundError,
    RunFolder,
    durable,
)
from tjx.ckpt.folder import COMMIT_MARKER, TMP_DIR_SUFFIX, write_if_changed

#: Files as a trainer names them: the storage reads and writes any name.
CONFIG, MODEL, FINAL = "config.yaml", "model.json", "final.json"


def test_write_if_changed_keeps_identical_files(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    assert write_if_changed(path, "a")
    stamp = path.stat().st_mtime_ns
    assert not write_if_changed(path, "a")
    assert path.stat().st_mtime_ns == stamp
    assert write_if_changed(path, "b") and path.read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch) -> None:
    run = RunFolder(tmp_path)
    run.write_json(FINAL, {"step": 1})

    def crash(src: object, dst: object) -> None:
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        run.write_json(FINAL, {"step": 2})
    assert run.read(FINAL) == {"step": 1}
    monkeypatch.undo()
    run.write_json(FINAL, {"step": 3})  # the leftover temporary file is simply overwritten
    assert run.read(FINAL) == {"step": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json"]


def test_json_files_are_sorted_and_take_any_value(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert run.write_json(MODEL, {"b": np.dtype("float32"), "a": tmp_path})
    text = (tmp_path / "model.json").read_text()
    assert text.index('"a"') < text.index('"b"') and '"float32"' in text
    assert run.read(MODEL) == {"a": str(tmp_path), "b": "float32"}
    assert not run.write_json(MODEL, {"a": tmp_path, "b": np.dtype("float32")})


def test_final_json_is_standard_json_with_nan_and_infinity_named(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    rng = np.random.default_rng(46)
    loss = float(rng.uniform(8000.0, 9000.0))  # a loss that grew: exp(loss) overflows
    summary = {"step": 20, "val_loss": loss, "val_perplexity": math.inf}  # exp(loss) overflowed
    summary |= {"val_top1": math.nan, "val_bits_per_byte": -math.inf, "num_params": 10}

    def refuse(token: str) -> None:
        raise ValueError(f"not standard JSON: {token}")

    run.write_json(FINAL, summary)
    text = (run.path / FINAL).read_text()
    strict = json.loads(text, parse_constant=refuse)  # what jq or a browser would parse
    assert strict["val_perplexity"] is None and strict["val_loss"] == loss
    assert strict["nonfinite"] == {
        "val_bits_per_byte": "-Infinity",
        "val_perplexity": "Infinity",
        "val_top1": "NaN",
    }
    back = run.read(FINAL)
    assert back["val_perplexity"] == math.inf and back["val_bits_per_byte"] == -math.inf
    assert math.isnan(back["val_top1"]) and "nonfinite" not in back
    assert {k: v for k, v in back.items() if k != "val_top1"} == {
        k: v for k, v in summary.items() if k != "val_top1"
    }
    # A final.json written before (bare tokens) reads as it always did.
    (run.path / FINAL).write_text('{"step": 20, "val_perplexity": Infinity, "val_top1": NaN}')
    old = run.read(FINAL)
    assert old["val_perplexity"] == math.inf and math.isnan(old["val_top1"])
    with pytest.raises(ValueError, match="inside a list"):
        run.write_json("x.json", {"losses": [1.0, math.nan]})


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("config.yaml", b"model: [1, 2\n", "while parsing a flow sequence"),
        ("config.yaml", b"- 1\n- 2\n", "not a mapping: it holds a list"),
        ("config.yaml", b"", "not a mapping: it holds nothing"),
        ("model.json", b'{"a": ', "Expecting value"),
        ("model.json", b'"text"', "not a mapping: it holds a str"),
        ("data.json", b'{"a": "\xff"}', "not UTF-8 (invalid start byte at byte 7)"),
    ],
)
def test_unreadable_files_name_the_file_and_why(tmp_path, name, content, reason) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(RunFileError) as err:
        RunFolder(tmp_path).read(name)
    assert err.value.path == tmp_path / name
    assert err.value.reason.startswith(reason)
    assert "\n" not in err.value.reason  # one line, for an app's one error line
    assert isinstance(err.value, ValueError) and isinstance(err.value, CheckpointError)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RunFileNotFoundError) as err:
        RunFolder(tmp_path).read(CONFIG)
    assert err.value.path == tmp_path / "config.yaml"
    assert isinstance(err.value, FileNotFoundError)
    # also a RunFileError: one `except RunFileError` answers every unreadable run file
    assert isinstance(err.value, RunFileError) and err.value.reason == "missing"
    assert str(err.value) == f"{tmp_path / 'config.yaml'} is missing"
    (tmp_path / "config.yaml").mkdir()  # not a file either
    with pytest.raises(RunFileNotFoundError):
        RunFolder(tmp_path).read(CONFIG)


def test_a_file_that_cannot_be_opened(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "data.json").write_text("{}")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(RunFileError, match="cannot be read \\(Permission denied\\)"):
        RunFolder(tmp_path).read("data.json")


def _step(run: RunFolder, name: str, *, committed: bool = True) -> None:
    folder = run.checkpoints / name
    folder.mkdir(parents=True)
    if committed:
        (folder / COMMIT_MARKER).write_text("ok")


def test_steps_and_the_newest_committed_one(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert run.step_folders() == [] and not run.has_checkpoints() and run.latest_step() is None
    _step(run, "10")
    _step(run, "30")
    _step(run, "40.orbax-checkpoint-tmp-123")  # a save in progress
    _step(run, "_deleted")
    _step(run, "50", committed=False)  # a copy cut short: a step folder, but not committed
    (run.checkpoints / "60").write_text("a file, not a step")
    assert run.step_folders() == [10, 30, 50] and run.has_checkpoints()
    assert run.latest_step() == 30
    assert run.unfinished_step() == 50  # newer than step 30, and never committed


def test_the_unfinished_step_is_a_save_newer_than_the_last_commit(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert run.unfinished_step() is None  # no checkpoints folder yet
    _step(run, "5")
    assert run.unfinished_step() is None
    _step(run, "10.orbax-checkpoint-tmp")  # the save of step 10 was cut short
    assert run.unfinished_step() == 10 and run.latest_step() == 5
    _step(run, "15")  # a later commit: step 10's leftover is no unfinished save of now
    assert run.unfinished_step() is None and run.latest_step() == 15
    _step(run, "20.orbax-checkpoint-tmp-1764161234")
    _step(run, "25", committed=False)
    assert run.unfinished_step() == 25


def test_uncommitted_folders_still_count_as_checkpoints(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    _step(run, "5", committed=False)
    assert run.has_checkpoints() and run.latest_step() is None


def test_checkpoints_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").write_text("x")
    assert RunFolder(tmp_path).step_folders() == []


def test_latest_step_of_a_real_save(tmp_path: Path) -> None:
    """The marker the commit writes is the one looked for (orbax's name, tjx-ckpt's commit)."""
    run = RunFolder(tmp_path)
    with CheckpointManager(run.checkpoints, async_save=False) as manager:
        manager.save(3, state={"w": np.zeros(2, np.float32)})
        manager.save(7, state={"w": np.ones(2, np.float32)})
    assert run.latest_step() == 7 == manager.latest_step()


def test_the_commit_marker_is_orbaxs() -> None:
    from orbax.checkpoint._src.path import atomicity

    assert COMMIT_MARKER == atomicity.COMMIT_SUCCESS_FILE == durable.COMMIT_MARKER
    assert TMP_DIR_SUFFIX == atomicity.TMP_DIR_SUFFIX == durable.TMP_DIR_SUFFIX


def test_importing_the_package_loads_neither_orbax_nor_jax() -> None:
    """An app reads its run directory before jax is imported (or after a Ctrl-C cut that short)."""
    code = (
        "import sys, tjx.ckpt as c\n"
        "c.RunFolder('.').latest_step()\n"
        "assert not {'jax', 'orbax'} & set(sys.modules), sorted(sys.modules)\n"
        "c.CheckpointManager  # the heavy names load on first use\n"
        "assert 'orbax' in sys.modules and 'CheckpointManager' in vars(c)\n"
        "assert set(c.__all__) <= set(dir(c))\n"
        "try:\n"
        "    c.CheckpointManagr\n"
        "except AttributeError as err:\n"
        "    assert \"no attribute 'CheckpointManagr'\" in str(err)\n"
        "else:\n"
        "    raise AssertionError('a typo must not pass')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_lazy_names_in_this_process() -> None:
    import tjx.ckpt

    assert set(tjx.ckpt.__all__) <= set(dir(tjx.ckpt))
    assert tjx.ckpt.restore_params.__module__ == "tjx.ckpt.params"
    with pytest.raises(AttributeError, match="has no attribute 'restore_param'"):
        tjx.ckpt.restore_param  # type: ignore[attr-defined]  # noqa: B018


def test_a_run_config_with_a_key_twice_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("train:\n  steps: 10\n  steps: 20\n")
    with pytest.raises(RunFileError) as err:
        RunFolder(tmp_path).read(CONFIG)
    assert err.value.reason == "key 'steps' is given twice (line 3); keep one"


def test_the_names_that_went_to_the_trainer_say_where_they_are() -> None:
    """0.15 moved a training run's layout and start checks to the trainer app, which tjx.ckpt
    cannot import: the old names are an ImportError naming the new import, one line."""
    import tjx.ckpt

    with pytest.raises(ImportError) as err:
        from tjx.ckpt import RunDir  # noqa: F401
    assert "`from trainer import RunDir`" in str(err.value) and "RunFolder" in str(err.value)
    for name, home in [
        ("start_location", "trainer.loop.location"),
        ("config_changes", "trainer.config.changes"),
        ("final_summary", "trainer.config.folder"),
    ]:
        with pytest.raises(ImportError, match=f"moved out of tjx.ckpt in tjx-ckpt 0.15: .*{home}"):
            getattr(tjx.ckpt, name)


def test_the_names_that_went_to_tjx_core_are_gone_and_say_where_they_are() -> None:
    """0.14 moved `setting`, standard JSON and the config engine to tjx-core; their old paths
    warned until 0.16, which removed them. An old name is an ImportError naming its new import;
    the old module is gone."""
    import tjx.ckpt

    with pytest.raises(ImportError) as err:
        from tjx.ckpt import Schema  # noqa: F401
    assert "moved out of tjx.ckpt in tjx-ckpt 0.14" in str(err.value)
    assert "`from tjx.core.config import Schema`" in str(err.value)
    for name, new in [
        ("setting", "from tjx.core.fields import setting"),
        ("load_yaml", "from tjx.core.config import load_yaml"),
        ("flatten_config", "from tjx.core.config import flatten_config"),
    ]:
        with pytest.raises(ImportError, match=f"`{new}`"):
            getattr(tjx.ckpt, name)
    with pytest.raises(ModuleNotFoundError, match="tjx.ckpt.standard_json"):
        import tjx.ckpt.standard_json
