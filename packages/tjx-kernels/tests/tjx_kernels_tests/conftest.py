"""Shared fixtures of tjx-kernels' tests."""

from __future__ import annotations

import pytest

from ._ref import measured_table


@pytest.fixture(autouse=True)
def _rule_without_measurements(monkeypatch, tmp_path_factory):
    """The tests exercise ``auto``'s rule and the launch lookup, not the packaged table's data:
    its H100 timings (the GPU suite's measurement) would decide otherwise under
    `pretend_h100`. Every test starts with an H100 entry that holds nothing; a test that measures
    writes its own table, and the packaged table's own test reads it by name. (Its own folder:
    a test's ``tmp_path`` stays the test's.)"""
    measured_table(monkeypatch, tmp_path_factory.mktemp("no_timings"), {})
