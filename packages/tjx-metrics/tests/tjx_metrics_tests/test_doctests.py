import doctest
import importlib

import pytest

MODULES = [
    "tjx.metrics.accumulate",
    "tjx.metrics.calibration",
    "tjx.metrics.classification",
    "tjx.metrics.compiled",
    "tjx.metrics.devices",
    "tjx.metrics.divergence",
    "tjx.metrics.flops",
    "tjx.metrics.heldout",
    "tjx.metrics.lm",
    "tjx.metrics.memory",
    "tjx.metrics.roofline_report",
    "tjx.metrics.spikes",
    "tjx.metrics.throughput",
    "tjx.metrics.loggers.console",
    "tjx.metrics.loggers.factory",
    "tjx.metrics.loggers.histograms",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
