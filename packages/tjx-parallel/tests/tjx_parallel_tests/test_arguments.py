"""check_distributed_args: each rule of a multi-process setup's values, naming the argument."""

from __future__ import annotations

import math

import pytest

from tjx.parallel import DistributedArgumentError, check_distributed_args
from tjx.parallel.arguments import MAX_PORT


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"coordinator": "10.0.0.1:1234", "num_processes": 4, "process_id": 3, "timeout_s": 0.5},
        {"coordinator": f"host:{MAX_PORT}"},
        {"coordinator": "[::1]:1"},  # the port is after the last colon
        {"num_processes": 1, "process_id": 0},
        {"process_id": 7},  # no count given: any rank >= 0
    ],
)
def test_good_values_pass(kwargs) -> None:
    check_distributed_args(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "argument", "problem"),
    [
        (
            {"coordinator": "host"},
            "coordinator",
            f"expected HOST:PORT with a port in 1..{MAX_PORT}, got 'host'",
        ),
        ({"coordinator": ":80"}, "coordinator", None),
        ({"coordinator": "h:0"}, "coordinator", None),
        ({"coordinator": f"h:{MAX_PORT + 1}"}, "coordinator", None),
        ({"coordinator": "h:http"}, "coordinator", None),
        ({"num_processes": 0}, "num_processes", "must be >= 1, got 0"),
        ({"num_processes": 2, "process_id": 2}, "process_id", "must be in 0..1, got 2"),
        ({"process_id": -1}, "process_id", "must be in >= 0, got -1"),
        ({"timeout_s": 0.0}, "timeout_s", "must be > 0 seconds, got 0.0"),
        ({"timeout_s": math.nan}, "timeout_s", "must be > 0 seconds, got nan"),
        # the first broken rule wins, in the order of the parameters
        ({"coordinator": "x", "num_processes": 0, "timeout_s": -1.0}, "coordinator", None),
    ],
)
def test_bad_values_name_their_argument(kwargs, argument, problem) -> None:
    with pytest.raises(DistributedArgumentError) as err:
        check_distributed_args(**kwargs)
    assert err.value.argument == argument
    if problem is not None:
        assert err.value.problem == problem
    assert str(err.value) == f"{argument}: {err.value.problem}"
    assert isinstance(err.value, ValueError)
