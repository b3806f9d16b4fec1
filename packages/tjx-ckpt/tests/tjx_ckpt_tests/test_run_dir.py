"""The run directory: its layout, whole-or-nothing writes, reads that name the file and the
reason, and which step is the newest committed one."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml  # type: ignore[import-untyped]

from tjx.ckpt import (
    CheckpointError,
    CheckpointManager,
    RunDir,
    RunFileError,
    RunFileNotFoundError,
    durable,
)
from tjx.ckpt.run_dir import COMMIT_MARKER, write_if_changed


def test_layout() -> None:
    run = RunDir("runs/a")  # a str is taken as a path
    assert run.path == Path("runs/a")
    assert run.config_file == Path("runs/a/config.yaml")
    assert run.final_file == Path("runs/a/final.json")
    assert run.curve_file == Path("runs/a/loss_curve.png")
    assert run.checkpoints == Path("runs/a/checkpoints")
    assert run.samples_file(12) == Path("runs/a/samples/step_0000012.txt")
    assert (RunDir.MODEL_FILE, RunDir.DATA_FILE) == ("model.json", "data.json")


def test_create_writes_the_config_as_yaml_in_its_own_order(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "deep" / "run")
    config = {"name": "x", "model": {"d_model": 32, "attention": "xla"}, "data": [1, 2]}
    assert run.create(config)
    assert (run.path / "samples").is_dir()
    text = run.config_file.read_text()
    assert text.index("name") < text.index("model") < text.index("data")  # not sorted
    assert text.index("d_model") < text.index("attention")
    assert yaml.safe_load(text) == config and run.read_config() == config
    assert not run.create(config)  # the same config: nothing written


def test_write_if_changed_keeps_identical_files(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    assert write_if_changed(path, "a")
    stamp = path.stat().st_mtime_ns
    assert not write_if_changed(path, "a")
    assert path.stat().st_mtime_ns == stamp
    assert write_if_changed(path, "b") and path.read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch) -> None:
    run = RunDir(tmp_path)
    run.write_final({"step": 1})

    def crash(src: object, dst: object) -> None:
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        run.write_final({"step": 2})
    assert run.read(RunDir.FINAL_FILE) == {"step": 1}
    monkeypatch.undo()
    run.write_final({"step": 3})  # the leftover temporary file is simply overwritten
    assert run.read(RunDir.FINAL_FILE) == {"step": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json"]


def test_json_files_are_sorted_and_take_any_value(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.write_json(RunDir.MODEL_FILE, {"b": np.dtype("float32"), "a": tmp_path})
    text = (tmp_path / "model.json").read_text()
    assert text.index('"a"') < text.index('"b"') and '"float32"' in text
    assert run.read(RunDir.MODEL_FILE) == {"a": str(tmp_path), "b": "float32"}
    assert not run.write_json(RunDir.MODEL_FILE, {"a": tmp_path, "b": np.dtype("float32")})


def test_final_json_is_standard_json_with_nan_and_infinity_named(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    rng = np.random.default_rng(46)
    loss = float(rng.uniform(8000.0, 9000.0))  # a loss that grew: exp(loss) overflows
    summary = {"step": 20, "val_loss": loss, "val_perplexity": math.inf}  # exp(loss) overflowed
    summary |= {"val_top1": math.nan, "val_bits_per_byte": -math.inf, "num_params": 10}

    def refuse(token: str) -> None:
        raise ValueError(f"not standard JSON: {token}")

    run.write_final(summary)
    text = run.final_file.read_text()
    strict = json.loads(text, parse_constant=refuse)  # what jq or a browser would parse
    assert strict["val_perplexity"] is None and strict["val_loss"] == loss
    assert strict["nonfinite"] == {
        "val_bits_per_byte": "-Infinity",
        "val_perplexity": "Infinity",
        "val_top1": "NaN",
    }
    back = run.read(RunDir.FINAL_FILE)
    assert back["val_perplexity"] == math.inf and back["val_bits_per_byte"] == -math.inf
    assert math.isnan(back["val_top1"]) and "nonfinite" not in back
    assert {k: v for k, v in back.items() if k != "val_top1"} == {
        k: v for k, v in summary.items() if k != "val_top1"
    }
    # A final.json written before (bare tokens) reads as it always did.
    run.final_file.write_text('{"step": 20, "val_perplexity": Infinity, "val_top1": NaN}')
    old = run.read(RunDir.FINAL_FILE)
    assert old["val_perplexity"] == math.inf and math.isnan(old["val_top1"])
    with pytest.raises(ValueError, match="inside a list"):
        run.write_json("x.json", {"losses": [1.0, math.nan]})


def test_samples_go_to_one_file_per_step(tmp_path: Path) -> None:
    run = RunDir(tmp_path)  # never created: the samples folder is made on first use
    path = run.write_samples(40, "hello\n")
    assert path == tmp_path / "samples" / "step_0000040.txt" and path.read_text() == "hello\n"


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
        RunDir(tmp_path).read(name)
    assert err.value.path == tmp_path / name
    assert err.value.reason.startswith(reason)
    assert "\n" not in err.value.reason  # one line, for an app's one error line
    assert isinstance(err.value, ValueError) and isinstance(err.value, CheckpointError)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RunFileNotFoundError) as err:
        RunDir(tmp_path).read_config()
    assert err.value.path == tmp_path / "config.yaml"
    assert isinstance(err.value, FileNotFoundError)
    # also a RunFileError: one `except RunFileError` answers every unreadable run file
    assert isinstance(err.value, RunFileError) and err.value.reason == "missing"
    assert str(err.value) == f"{tmp_path / 'config.yaml'} is missing"
    (tmp_path / "config.yaml").mkdir()  # not a file either
    with pytest.raises(RunFileNotFoundError):
        RunDir(tmp_path).read_config()


def test_a_file_that_cannot_be_opened(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "data.json").write_text("{}")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(RunFileError, match="cannot be read \\(Permission denied\\)"):
        RunDir(tmp_path).read("data.json")


def _step(run: RunDir, name: str, *, committed: bool = True) -> None:
    folder = run.checkpoints / name
    folder.mkdir(parents=True)
    if committed:
        (folder / COMMIT_MARKER).write_text("ok")


def test_steps_and_the_newest_committed_one(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.step_folders() == [] and not run.has_checkpoints() and run.latest_step() is None
    _step(run, "10")
    _step(run, "30")
    _step(run, "40.orbax-checkpoint-tmp-123")  # a save in progress
    _step(run, "_deleted")
    _step(run, "50", committed=False)  # a copy cut short: a step folder, but not committed
    (run.checkpoints / "60").write_text("a file, not a step")
    assert run.step_folders() == [10, 30, 50] and run.has_checkpoints()
    assert run.latest_step() == 30


def test_uncommitted_folders_still_count_as_checkpoints(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    _step(run, "5", committed=False)
    assert run.has_checkpoints() and run.latest_step() is None


def test_checkpoints_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").write_text("x")
    assert RunDir(tmp_path).step_folders() == []


def test_latest_step_of_a_real_save(tmp_path: Path) -> None:
    """The marker the commit writes is the one looked for (orbax's name, tjx-ckpt's commit)."""
    run = RunDir(tmp_path)
    with CheckpointManager(run.checkpoints, async_save=False) as manager:
        manager.save(3, state={"w": np.zeros(2, np.float32)})
        manager.save(7, state={"w": np.ones(2, np.float32)})
    assert run.latest_step() == 7 == manager.latest_step()


def test_the_commit_marker_is_orbaxs() -> None:
    from orbax.checkpoint._src.path import atomicity

    assert COMMIT_MARKER == atomicity.COMMIT_SUCCESS_FILE == durable.COMMIT_MARKER


def test_importing_the_package_loads_neither_orbax_nor_jax() -> None:
    """An app reads its run directory before jax is imported (or after a Ctrl-C cut that short)."""
    code = (
        "import sys, tjx.ckpt as c\n"
        "c.RunDir('.').latest_step()\n"
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


def test_init_json_records_the_first_start_and_a_local_source_as_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    run = RunDir(tmp_path / "run")
    run.create({"a": 1})
    assert run.read_init() is None
    assert run.write_init("base", kind="tjx-run", step=7)
    expected = {"init_from": str((tmp_path / "base").resolve()), "kind": "tjx-run", "step": 7}
    assert run.read_init() == expected
    assert not run.write_init("org/other", kind="hugging-face", step=None)  # a resume keeps it
    assert run.read_init() == expected


def test_init_json_keeps_a_hub_name_as_given(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_init("org/name", kind="hugging-face", step=None)
    assert run.read(RunDir.INIT_FILE) == {"init_from": "org/name", "kind": "hugging-face",
                                          "step": None}  # fmt: skip


def test_a_run_is_a_folder_with_its_model_and_config_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    run = RunDir(tmp_path / "run")
    run.create({"a": 1})
    assert not RunDir.is_run(str(tmp_path / "run"))  # config.yaml alone: not yet a run
    run.write_json(RunDir.MODEL_FILE, {"kind": "gpt2"})
    assert RunDir.is_run(str(tmp_path / "run")) and RunDir.is_run("~/run")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / RunDir.MODEL_FILE).write_text("{}")  # a model without its config
    assert not RunDir.is_run(str(tmp_path / "half"))
    assert not RunDir.is_run(None) and not RunDir.is_run(str(tmp_path / "missing"))


def test_a_run_config_with_a_key_twice_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("train:\n  steps: 10\n  steps: 20\n")
    with pytest.raises(RunFileError) as err:
        RunDir(tmp_path).read_config()
    assert err.value.reason == "key 'steps' is given twice (line 3); keep one"
