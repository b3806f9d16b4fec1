"""``join``: resolve, join with a deadline, then one error listing every disagreement; the joining
itself (jax.distributed) is replaced by a fake here, the all-gather simulated. Two real processes
are test_joining_multiprocess.py."""

from __future__ import annotations

import numpy as np
import pytest

from tjx import parallel
from tjx.parallel import (
    NUM_PROCESSES,
    Disagreement,
    DisagreementError,
    DistributedInfo,
    DistributedSetupError,
    JoinError,
    NotJoinedError,
    digest_words,
    join,
    joining,
    require_agreement,
)
from tjx.parallel.arguments import VARIABLES

COORD = "127.0.0.1:5"


@pytest.fixture(autouse=True)
def no_dist_env(monkeypatch):
    for key in VARIABLES:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture()
def joined(monkeypatch):
    """jax.distributed 'joins' at once; the calls to initialize are recorded."""
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(
        joining, "initialize", lambda *a, **k: calls.append((a, k)) or k["resolved"]
    )
    return calls


def _others(monkeypatch, rows: list[list[int]]) -> None:
    """This is process 0 of 1 + len(rows); the others' all-gather rows are ``rows``."""
    import jax

    monkeypatch.setattr(jax, "process_count", lambda: 1 + len(rows))
    monkeypatch.setattr(
        joining,
        "gather_rows",
        lambda mine: np.stack([mine, *(np.asarray(r, np.int32) for r in rows)]),
    )


def test_one_process_starts_and_compares_nothing(monkeypatch):
    monkeypatch.setattr(joining, "initialize", lambda *a, **k: pytest.fail("initialized"))
    monkeypatch.setattr(joining, "disagreements", lambda *a, **k: pytest.fail("compared"))
    assert join(values={"config": "a"}) == DistributedInfo(None, 1, 0, "single")
    assert join(COORD, 1, 0).num_processes == 1


def test_an_incomplete_setup_is_a_value_error_naming_what_is_missing(monkeypatch):
    monkeypatch.setattr(joining, "initialize", lambda *a, **k: pytest.fail("initialized"))
    with pytest.raises(DistributedSetupError, match=r"missing coordinator") as exc:
        join(num_processes=2, process_id=0)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, JoinError)
    assert exc.value.info is None
    # The same words as resolve_distributed's.
    with pytest.raises(ValueError) as direct:
        parallel.resolve_distributed(None, 2, 0)
    assert str(exc.value) == str(direct.value)


def test_a_failed_join_keeps_the_first_line_and_the_setup(monkeypatch):
    seen = {}

    def fail(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise RuntimeError("process 1 of 2 could not join: deadline\nC++ stack")

    monkeypatch.setattr(joining, "initialize", fail)

    def words(i: DistributedInfo) -> str:
        return f"app: {i.num_processes} at {i.coordinator} as {i.process_id}"

    with pytest.raises(NotJoinedError) as exc:
        join(
            COORD,
            2,
            1,
            timeout_s=7.0,
            timeout_message=words,
            heartbeat_timeout_s=9.0,
            cpu_collectives=None,
            preemption_service=False,
        )
    err = exc.value
    assert err.reason == str(err) == "process 1 of 2 could not join: deadline"
    assert err.info == parallel.resolve_distributed(COORD, 2, 1)
    assert seen["args"] == ()
    assert seen["kwargs"] == {
        "resolved": DistributedInfo(COORD, 2, 1, "args"),  # resolved once, handed on
        "timeout_s": 7.0,
        "heartbeat_timeout_s": 9.0,
        "local_device_ids": None,
        "cpu_collectives": None,
        "timeout_message": words,  # worded when an abort comes (test_initialize.py)
        "preemption_service": False,
        "cluster": None,
    }


def test_the_not_joined_words_name_the_launch_flags(monkeypatch):
    seen = {}

    def fail(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("could not join\nC++ details")

    monkeypatch.setattr(joining, "initialize", fail)
    with pytest.raises(NotJoinedError) as exc:
        join(COORD, 2, 1, timeout_s=30.0)
    explanation = (
        "not all 2 processes joined the run at coordinator 127.0.0.1:5 within 30 s (this is "
        "process 1); start every process with the same --coordinator and --num-processes and its "
        "own --process-id in 0..1, or raise --init-timeout"
    )
    info = DistributedInfo(COORD, 2, 1, "args")
    assert exc.value.explanation == explanation == parallel.not_joined_line(info, 30.0)
    assert exc.value.reason == "could not join"


def test_a_wrong_process_count_names_the_flag_by_default(joined, monkeypatch):
    _others(monkeypatch, [[3, *digest_words("a")]])  # process 1 was told 3
    with pytest.raises(DisagreementError) as exc:
        join(COORD, 2, 0, values={"config": "a"}, lines={"config": "config differs"})
    assert str(exc.value).startswith(
        "multi-host processes disagree: --num-processes: the run has 2 processes but they were "
        "told process 0: 2, process 1: 3"
    )


def test_processes_that_agree_join(joined, monkeypatch):
    _others(monkeypatch, [[2, 1, *digest_words("lr: 0.1")]])
    info = join(COORD, 2, 0, values={"resume": True, "config": "lr: 0.1"})
    assert info == parallel.resolve_distributed(COORD, 2, 0)
    assert len(joined) == 1


def test_every_disagreement_in_one_error(joined, monkeypatch):
    # Process 1 was told 3 processes, no resume and another config.
    _others(monkeypatch, [[3, 0, *digest_words("lr: 0.2")]])
    lines = {
        NUM_PROCESSES: "--n: the run has {expected} but they were told {each}",
        "config": "config: process(es) {differ} differ",
    }
    with pytest.raises(DisagreementError) as exc:
        join(COORD, 2, 0, values={"resume": True, "config": "lr: 0.1"}, lines=lines)
    err = exc.value
    assert [d.name for d in err.found] == [NUM_PROCESSES, "resume", "config"]
    assert err.found[0] == Disagreement(NUM_PROCESSES, (2, 3), 2)
    resume_line = str(err.found[1])  # no line given: the default one
    assert str(err) == (
        "multi-host processes disagree: --n: the run has 2 but they were told process 0: 2, "
        f"process 1: 3; {resume_line}; config: process(es) [1] differ"
    )
    assert err.info == parallel.resolve_distributed(COORD, 2, 0)


def test_require_agreement_on_one_process(monkeypatch):
    monkeypatch.setattr(joining, "gather_rows", lambda x: pytest.fail("gathered"))
    require_agreement({"config": "a"})
    require_agreement({"config": "a"}, num_processes=1)
    # One process told it is one of two: the run has 1.
    with pytest.raises(DisagreementError) as exc:
        require_agreement({"config": "a"}, num_processes=2)
    assert exc.value.found == [Disagreement(NUM_PROCESSES, (2,), 1)]
    assert str(exc.value) == (
        "multi-host processes disagree: num_processes: expected 1, but process 0: 2"
    )


def test_the_count_is_compared_once():
    with pytest.raises(ValueError, match="remove it from values"):
        require_agreement({NUM_PROCESSES: 2}, num_processes=2)
    require_agreement({NUM_PROCESSES: 1})  # without num_processes it is just a value


def test_describe_words_a_disagreement():
    d = Disagreement("n", (2, 3), 2)
    assert d.describe() == str(d) == "n: expected 2, but process 0: 2, process 1: 3"
    assert d.describe("{name}: want {expected}; {each}; bad {differ}") == (
        "n: want 2; process 0: 2, process 1: 3; bad [1]"
    )


def test_the_public_names():
    for name in ("join", "require_agreement", "JoinError", "NotJoinedError", "DisagreementError"):
        assert getattr(parallel, name) is getattr(joining, name)
    assert issubclass(DistributedSetupError, JoinError) and issubclass(JoinError, RuntimeError)
