"""The evaluator's command line and metric arithmetic."""

from __future__ import annotations

import pytest

from eval.cli import main
from eval.runs import RunError, check_run_dir


def test_missing_run_dir_exits_2(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--max-new-tokens", "0"], "--max-new-tokens"),
        (["--max-batches", "0"], "--max-batches"),
        (["--temperature", "-1"], "--temperature"),
    ],
)
def test_bad_numbers_exit_2(tmp_path, capsys, flags, needle):
    assert main(["--checkpoint", str(tmp_path), *flags]) == 2
    assert needle in capsys.readouterr().err


def test_check_run_dir_names_what_is_missing(tmp_path):
    with pytest.raises(RunError, match="has no config.yaml"):
        check_run_dir(tmp_path)
    for name in ("config.yaml", "model.json", "data.json"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(RunError, match="holds no checkpoint"):
        check_run_dir(tmp_path)
    (tmp_path / "checkpoints" / "5").mkdir(parents=True)
    check_run_dir(tmp_path)


def test_compare_needs_two_runs():
    with pytest.raises(SystemExit) as exc:
        main(["--compare", "a"])
    assert exc.value.code == 2


def test_table_prints_counts_as_whole_numbers(capsys):
    from eval.cli import _print_table

    results = [{"loss": 2.123456, "num_tokens": 426514.0}, {"loss": 1.5, "num_tokens": 1000.0}]
    _print_table(["step 10", "step 20"], results)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["loss", "2.1235", "1.5000"]
    assert lines[2].split() == ["num_tokens", "426,514", "1,000"]
