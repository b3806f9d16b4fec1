"""``disagreements``: which named values the processes do not all hold alike, with the all-gather
simulated (three processes' rows). Two real processes told different process counts and configs
are tests-integration's test_train_multiprocess.py."""

from __future__ import annotations

import numpy as np
import pytest

from tjx import parallel
from tjx.parallel import Disagreement, digest_words, disagreements, joining


def _simulate(monkeypatch, rows: list[list[int]]) -> None:
    """Three processes: this one is process 0, the others' rows come from ``rows``."""
    import jax

    def gather(mine):
        return np.stack([mine, *(np.asarray(r, np.int32) for r in rows)])

    monkeypatch.setattr(jax, "process_count", lambda: 1 + len(rows))
    monkeypatch.setattr(joining, "gather_rows", gather)


def _row(count: int, resume: bool, config: str) -> list[int]:
    return [count, int(resume), *digest_words(config)]


def test_processes_that_agree_give_nothing(monkeypatch):
    _simulate(monkeypatch, [_row(3, True, "a: 1"), _row(3, True, "a: 1")])
    mine = {"count": 3, "resume": True, "config": "a: 1"}
    assert disagreements(mine, expected={"count": 3}) == []


def test_each_differing_value_names_its_processes(monkeypatch):
    rng = np.random.default_rng(5)
    other = f"seed: {int(rng.integers(1, 1000))}"
    _simulate(monkeypatch, [_row(3, False, "seed: 0"), _row(4, True, other)])
    found = disagreements({"count": 3, "resume": False, "config": "seed: 0"})
    assert [d.name for d in found] == ["count", "resume", "config"]  # in the order given
    count, resume, config = found
    assert count.values == (3, 3, 4) and count.differ == [2]
    assert count.each() == "process 0: 3, process 1: 3, process 2: 4"
    assert resume.differ == [2] and str(resume).startswith("resume: process(es) [2] hold another")
    assert config.differ == [2]
    assert config.values[2] == tuple(digest_words(other))
    # A string shows as its digest's first word, enough to tell which processes share a value.
    first = f"{digest_words('seed: 0')[0] & 0xFFFFFFFF:08x}"
    assert config.each().startswith(f"process 0: {first}, process 1: {first}, process 2: ")


def test_expected_values_catch_what_all_processes_share(monkeypatch):
    # Every process told 4, the run has 3: equal among themselves, wrong all the same.
    _simulate(monkeypatch, [_row(4, False, "x"), _row(4, False, "x")])
    (found,) = disagreements({"count": 4, "resume": False, "config": "x"}, expected={"count": 3})
    assert found.differ == [0, 1, 2] and found.expected == 3
    assert str(found) == "count: expected 3, but process 0: 4, process 1: 4, process 2: 4"
    # A string can be expected too (compared by its digest).
    _simulate(monkeypatch, [_row(4, False, "x"), _row(4, False, "y")])
    (found,) = disagreements({"count": 4, "resume": False, "config": "x"}, expected={"config": "x"})
    assert found.name == "config" and found.differ == [2]


def test_one_process_differs_only_from_what_is_expected(monkeypatch):
    monkeypatch.setattr(joining, "gather_rows", lambda x: pytest.fail("gathered"))
    assert disagreements({"n": 2, "config": "a"}) == []
    assert disagreements({"n": 2}, expected={"n": 1}) == [Disagreement("n", (2,), 1)]


def test_expected_must_name_a_value():
    with pytest.raises(ValueError, match=r"expected names no value of this process: \['m'\]"):
        disagreements({"n": 1}, expected={"m": 1})


def test_the_public_names():
    assert parallel.disagreements is disagreements and parallel.Disagreement is Disagreement


def test_gather_rows_on_one_process_is_its_own_row():
    """The real gather (global array, replicated copy, every local shard waited for): one
    process's eight devices give back its row, bit for bit."""
    mine = np.random.default_rng(9).integers(-(2**31), 2**31, 7).astype(np.int32)
    got = joining.gather_rows(mine)
    assert got.dtype == np.int32 and got.shape == (1, 7)
    np.testing.assert_array_equal(got[0], mine)
