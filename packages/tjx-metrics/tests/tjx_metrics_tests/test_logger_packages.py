"""An optional logger whose package is missing is refused before anything is written."""

import sys

import pytest

from tjx.metrics import check_logger_packages, make_logger


def test_missing_tensorboardx_is_named_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # find_spec → None: not installed
    with pytest.raises(
        ValueError,
        match=r"'tensorboard' needs the tensorboardX package.*"
        r"pip install 'tjx-metrics\[tensorboard\]'",
    ):
        check_logger_packages(["console", "tensorboard"])
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="tensorboardX"):
        make_logger(["jsonl", "tensorboard"], run_dir)
    assert not run_dir.exists()  # the JSONL file was not opened first


def test_missing_wandb_matters_only_when_wandb_would_log(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    check_logger_packages(["wandb"], wandb_mode="disabled")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    check_logger_packages(["wandb"])
    with pytest.raises(ValueError, match=r"'wandb' needs the wandb package.*tjx-metrics\[wandb\]"):
        check_logger_packages(["wandb"], wandb_mode="offline")


def test_installed_and_builtin_loggers_pass(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    check_logger_packages(["console", "jsonl"])  # no optional logger: nothing to check
    monkeypatch.delitem(sys.modules, "tensorboardX")
    pytest.importorskip("tensorboardX")
    check_logger_packages("console,tensorboard")
    with pytest.raises(ValueError, match="unknown logger 'mlflow'"):
        check_logger_packages(["mlflow"])
