"""Shared fixtures of the trainer's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty temporary folder (the default run dir is ./runs/<name>)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``data.cache_dir`` for the session's runs of the generated tasks: tjx.data keys each
    prepared source by its source, tokenizer and template, so a task's BPE and encoded splits
    are made once, not in every test (encoding the 4,000 arithmetic pairs was half of a
    one-step DPO test's time)."""
    return tmp_path_factory.mktemp("data-cache")
