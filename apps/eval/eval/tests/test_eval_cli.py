"""The evaluator's command line and metric arithmetic."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from eval.cli import main
from eval.runs import RunError, check_run_dir


def test_the_command_line_answers_a_bad_flag_before_loading_jax(tmp_path):
    """``--help`` and a bad flag must not wait seconds for JAX: `eval.cli` (and the modules it
    imports before parsing) load it, tjx.nn and the harness on first use."""
    code = (
        "import sys\nfrom eval.cli import main\n"
        f"assert main(['--checkpoint', {str(tmp_path / 'nope')!r}]) == 2\n"
        "heavy = {'jax', 'flax', 'tjx.nn', 'lm_eval', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, sorted(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "no such run directory" in done.stderr


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


def test_an_unwritable_png_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """A read-only or immutable run dir passes os.access as root; the check writes a probe."""
    for name in ("config.yaml", "model.json", "data.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "checkpoints" / "5").mkdir(parents=True)
    (tmp_path / "plots").mkdir()
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if os.path.dirname(os.path.abspath(path)) in (str(tmp_path), str(tmp_path / "plots")):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)  # the lie
    assert main(["--checkpoint", str(tmp_path)]) == 2  # the default: RUN_DIR/attention_distance.png
    err = capsys.readouterr().err
    assert err == (
        f"eval: error: --attention-png: cannot write into {str(tmp_path)!r} (Operation not "
        "permitted); choose another place, or pass --attention-png none to skip the plot\n"
    )
    assert main(["--checkpoint", str(tmp_path), "--attention-png", f"{tmp_path}/plots/a.png"]) == 2
    assert f"cannot write into {str(tmp_path / 'plots')!r}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "data.json",
        "model.json",
        "plots",
    ]
