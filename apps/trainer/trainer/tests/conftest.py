"""Shared fixtures of the trainer's unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty temporary folder (the default run dir is ./runs/<name>)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
