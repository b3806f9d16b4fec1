"""tjx-kernels marks the branch of its packed cuDNN switch that packed batches take with the scope
tjx-metrics' roofline counts (the two packages share no import: the name is checked here)."""

from tjx.kernels.cudnn_segments import LIKELY_BRANCH as MARKED
from tjx.metrics import LIKELY_BRANCH as COUNTED


def test_the_marker_is_the_name_the_roofline_reads():
    assert MARKED == COUNTED == "likely_branch"
