"""The launch flags (add_distributed_arguments, distributed_from_args) and check_distributed_args:
each rule of a multi-process setup's values, naming the argument or its flag."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys

import pytest

from tjx.parallel import (
    DEFAULT_TIMEOUT_S,
    DISTRIBUTED_FLAGS,
    NUM_PROCESSES_LINE,
    DistributedArgs,
    DistributedArgumentError,
    add_distributed_arguments,
    check_distributed_args,
    distributed_from_args,
)
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
    assert err.value.flag is None
    assert isinstance(err.value, ValueError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app")
    add_distributed_arguments(parser)
    return parser


def test_the_flags_and_their_defaults() -> None:
    got = distributed_from_args(_parser().parse_args([]))
    assert got == DistributedArgs(None, None, None, DEFAULT_TIMEOUT_S) == DistributedArgs()
    argv = ["--coordinator", "10.0.0.1:1234", "--num-processes", "4", "--process-id", "3"]
    got = distributed_from_args(_parser().parse_args([*argv, "--init-timeout", "7"]))
    assert got == DistributedArgs("10.0.0.1:1234", 4, 3, 7.0)
    assert isinstance(got.timeout_s, float)


def test_the_timeout_default_is_the_apps() -> None:
    parser = argparse.ArgumentParser(prog="app")
    add_distributed_arguments(parser, timeout_s=60.0)
    assert distributed_from_args(parser.parse_args([])).timeout_s == 60.0
    assert "(default 60)" in parser.format_help()


def test_the_help_explains_the_group() -> None:
    text = " ".join(_parser().format_help().split())  # argparse wraps at the terminal's width
    assert "multi-host:" in text
    assert (
        "Run one app process per host (or per process group) with the same command and its own"
        in text
    )
    assert (
        "--process-id; unset values come from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES" in text
    )
    assert "Without any of them the run is a single process." in text
    for flag in DISTRIBUTED_FLAGS.values():
        assert flag in text
    assert "--coordinator HOST:PORT process 0's address and a free port" in text
    assert "give up (exit 1) if not every process has joined by then (default 300)" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-processes", "2", "--process-id", "2"], "--process-id: must be in 0..1, got 2"),
        (["--process-id", "-1"], "--process-id: must be in >= 0, got -1"),
        (["--num-processes", "0"], "--num-processes: must be >= 1, got 0"),
        (["--coordinator", "localhost"], "--coordinator: expected HOST:PORT"),
        (["--init-timeout", "0"], "--init-timeout: must be > 0 seconds, got 0.0"),
    ],
)
def test_a_bad_flag_is_named_by_its_flag(argv, message) -> None:
    with pytest.raises(DistributedArgumentError) as err:
        distributed_from_args(_parser().parse_args(argv))
    assert str(err.value).startswith(message)
    assert err.value.flag == DISTRIBUTED_FLAGS[err.value.argument]
    assert err.value.flag in message


def test_the_process_count_line_names_its_flag() -> None:
    assert NUM_PROCESSES_LINE.format(expected=2, each="process 0: 3") == (
        "--num-processes: the run has 2 processes but they were told process 0: 3"
    )


def test_the_flags_load_no_jax() -> None:
    """An app's parser and its flag checks come before jax (seconds) is paid for."""
    code = (
        "import argparse, sys\n"
        "import tjx.parallel as p\n"
        "parser = argparse.ArgumentParser()\n"
        "p.add_distributed_arguments(parser)\n"
        "p.distributed_from_args(parser.parse_args(['--num-processes', '2']))\n"
        "sys.exit(int('jax' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
