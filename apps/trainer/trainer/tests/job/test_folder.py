"""The trainer's run directory: its layout over tjx.ckpt's storage (`RunFolder`, tested there),
the config written in its own order, the samples, where the run started (``init.json``), and
what counts as a run to start from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tjx.ckpt import RunFileError, RunFolder
from trainer.config.folder import RunDir


def test_layout() -> None:
    run = RunDir("runs/a")  # a str is taken as a path
    assert run.path == Path("runs/a")
    assert run.config_file == Path("runs/a/config.yaml")
    assert run.final_file == Path("runs/a/final.json")
    assert run.curve_file == Path("runs/a/loss_curve.png")
    assert run.checkpoints == Path("runs/a/checkpoints")
    assert run.samples_file(12) == Path("runs/a/samples/step_0000012.txt")
    assert (RunDir.MODEL_FILE, RunDir.DATA_FILE) == ("model.json", "data.json")
    assert isinstance(run, RunFolder)  # its storage: whole-file writes, the committed steps


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


def test_samples_go_to_one_file_per_step(tmp_path: Path) -> None:
    run = RunDir(tmp_path)  # never created: the samples folder is made on first use
    path = run.write_samples(40, "hello\n")
    assert path == tmp_path / "samples" / "step_0000040.txt" and path.read_text() == "hello\n"


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


def test_init_json_records_a_hugging_face_folders_model_type(tmp_path: Path) -> None:
    """What the export writes back where the model's switches alone would name another family."""
    run = RunDir(tmp_path / "run")
    run.create({"a": 1})
    run.write_init(str(tmp_path), kind="hugging-face", step=None, model_type="qwen3_5_moe")
    assert run.read_init() == {"init_from": str(tmp_path.resolve()), "kind": "hugging-face",
                               "step": None, "model_type": "qwen3_5_moe"}  # fmt: skip


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


def test_the_w_and_b_run_is_made_once_and_read_back_by_every_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder in ("gpt2-long", "other"):  # made by the run's first files
        (tmp_path / folder).mkdir()
    run = RunDir(tmp_path / "gpt2-long")
    run_id, name = run.wandb_run()
    assert name == "gpt2-long" and len(run_id) == 12 and int(run_id, 16) >= 0
    assert RunDir(tmp_path / "gpt2-long").wandb_run() == (run_id, name)  # a resume's
    assert RunDir(tmp_path / "other").wandb_run()[0] != run_id  # another run: another id
    monkeypatch.chdir(tmp_path / "gpt2-long")
    assert RunDir(".").wandb_run() == (run_id, name)  # --run-dir . names the same folder
    (run.path / RunDir.WANDB_FILE).write_text('{"id": 7}')
    with pytest.raises(RunFileError, match="wandb.json: no W&B run id and name as text"):
        run.wandb_run()
