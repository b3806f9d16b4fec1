"""A command line's run directory: where it is, and whether a run may start or resume there, as
one `ConfigError` line naming the flag and its fix; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tjx.core.config import ConfigError
from trainer.config.folder import RunDir
from trainer.loop.location import start_location


def test_a_new_local_folder_starts_fresh_and_is_not_made(tmp_path: Path) -> None:
    assert start_location(str(tmp_path / "run"), resume=False) == tmp_path / "run"
    assert not (tmp_path / "run").exists()


def test_a_home_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert start_location("~/run", resume=False) == tmp_path / "run"


def test_a_resume_needs_a_checkpoint_and_a_fresh_start_none(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        start_location(str(run), resume=True)
    assert (
        str(err.value) == f"--resume: no checkpoint in {str(run)!r}; train without --resume first"
    )
    (RunDir(run).checkpoints / "10").mkdir(parents=True)  # committed or not: a step folder
    assert start_location(str(run), resume=True) == run
    with pytest.raises(ConfigError) as err:
        start_location(str(run), resume=False)
    assert str(err.value) == (
        f"--run-dir: {str(run)!r} already holds checkpoints; pass --resume to continue or choose "
        "another --run-dir"
    )


def test_the_messages_name_the_commands_own_flags(tmp_path: Path) -> None:
    (RunDir(tmp_path).checkpoints / "3").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"^--out: .*; pass --continue to continue or choose"):
        start_location(str(tmp_path), resume=False, flag="--out", resume_flag="--continue")


def test_a_folder_that_cannot_be_made_or_an_unknown_scheme_names_the_flag(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError) as err:
        start_location(str(tmp_path / "f"), resume=False)
    assert str(err.value) == f"--run-dir: {str(tmp_path / 'f')!r} exists and is not a directory"
    with pytest.raises(ConfigError, match=r"^--run-dir: 'ftp://host/run': tjx cannot write to"):
        start_location("ftp://host/run", resume=False)


def test_a_resume_reads_the_runs_saved_config(tmp_path: Path) -> None:
    from trainer.loop.location import resumed_config

    RunDir(tmp_path).create({"train": {"steps": 3}})
    assert resumed_config(tmp_path) == {"train": {"steps": 3}}


def test_a_resume_without_a_readable_saved_config_names_the_file_and_the_way_out(
    tmp_path: Path,
) -> None:
    from trainer.loop.location import resumed_config

    config = tmp_path / "config.yaml"
    with pytest.raises(ConfigError) as err:
        resumed_config(tmp_path, flag="--out", resume_flag="--continue")
    assert str(err.value) == (
        f"--continue: {str(config)!r} is missing, so what the checkpoints were trained with is "
        "unknown; put the run's config back or train into a new --out"
    )
    config.write_text("- 1\n")
    with pytest.raises(ConfigError) as err:
        resumed_config(tmp_path)
    assert str(err.value).startswith(
        f"--resume: {str(config)!r} is not a readable run config (not a mapping: it holds a list)"
    )
    assert str(err.value).endswith("train into a new --run-dir")
