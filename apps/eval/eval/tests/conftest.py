"""Shared fixtures of the evaluator's unit tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture()
def rng():
    """A fresh NumPy generator per test."""
    return np.random.default_rng(1234)
