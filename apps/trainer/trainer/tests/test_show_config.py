"""``--show-config``: every key with its type, value, allowed values and help; the README's copy
is the command's output; every printed value reads back as that value."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.cli import main
from trainer.config.settings import apply_overrides, load_config_data, render, rows
from trainer.config.typed import read_config

README = Path(__file__).resolve().parents[2] / "README.md"


def _table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_the_readme_table_is_the_commands_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--show-config"]) == 0
    out = capsys.readouterr().out
    readme = README.read_text(encoding="utf-8")
    copy = readme.split("<!-- show-config: begin -->\n")[1].split("<!-- show-config: end -->")[0]
    assert copy == out, "regenerate the README table: python -m trainer --show-config"


def test_every_key_is_listed_once_with_a_type_and_a_line_of_help() -> None:
    listed = list(rows(read_config({})))
    keys = [key for key, *_ in listed]
    assert len(keys) == len(set(keys)) and "data.sources" in keys and "model.d_model" in keys
    assert all(tp and help_text for _, tp, _, _, help_text in listed), [
        key for key, tp, _, _, help_text in listed if not (tp and help_text)
    ]


def test_every_printed_value_reads_back_as_that_value() -> None:
    default = read_config({}).to_dict()
    for key, _, value, _, _ in rows(read_config({})):
        got = apply_overrides(default, [f"{key}={value}"])
        assert read_config(got).to_dict() == read_config(default).to_dict(), key


def test_a_preset_and_overrides_show_their_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--show-config", "--config", "tiny", "--set", "model.d_model=24"]) == 0
    shown = {r[0].strip("`"): r[2].strip("`") for r in _table_rows(capsys.readouterr().out)}
    tiny = read_config(apply_overrides(load_config_data("tiny"), ["model.d_model=24"]))
    assert shown["model.d_model"] == "24" and shown["name"] == tiny.name
    assert shown["train.steps"] == str(tiny.train.steps)
    assert render(tiny, "tiny").splitlines()[0].endswith("holds preset tiny.")


def test_a_bad_override_is_one_line_and_no_config_flag_is_still_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--show-config", "--set", "model.d_model=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trainer: error: model.d_model"), err
    with pytest.raises(SystemExit) as exit_:
        main(["--run-dir", "r"])
    assert exit_.value.code == 2
    assert "the following arguments are required: --config" in capsys.readouterr().err
