"""Reward functions for GRPO: the built-ins on known completions, the registry, the checks."""

from __future__ import annotations

import numpy as np
import pytest

from tjx.data import (
    REWARDS,
    RewardError,
    arithmetic_rows,
    check_reward_weights,
    check_rewards,
    register_reward,
)
from tjx.data.rewards import score, score_each


def test_exact_answer_scores_the_right_answer_only():
    row = {"answer": "95"}
    assert REWARDS["exact_answer"](" 95\n", row) == 1.0
    assert REWARDS["exact_answer"]("96", row) == 0.0
    assert REWARDS["exact_answer"]("95 apples", row) == 0.0


def test_format_scores_one_integer_whatever_its_value():
    for text, want in [("12", 1.0), ("-7 ", 1.0), ("+3", 1.0), ("1 2", 0.0), ("twelve", 0.0),
                       ("", 0.0), ("3.5", 0.0)]:  # fmt: skip
        assert REWARDS["format"](text, {}) == want, text


def test_length_falls_linearly_past_the_rows_budget():
    rng = np.random.default_rng()
    budget = int(rng.integers(2, 20))
    row = {"max_chars": budget}
    for n in range(0, 3 * budget):
        expected = min(1.0, max(0.0, 1.0 - (n - budget) / budget))
        assert REWARDS["length"]("x" * n, row) == pytest.approx(expected), n
    assert REWARDS["length"]("x" * 16, {}) == 1.0 and REWARDS["length"]("x" * 32, {}) == 0.0


def test_the_arithmetic_prompts_are_answered_by_their_own_answer():
    rows = list(arithmetic_rows(50, seed=3, kind="prompts"))
    for row in rows:
        a, op, b = row["prompt"][0]["content"].removeprefix("What is ").rstrip("?").split()
        assert int(row["answer"]) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    got = score(["exact_answer", "format"], [r["answer"] for r in rows], rows, weights=[1.0, 0.5])
    np.testing.assert_array_equal(got, np.full(50, 1.5, np.float32))
    with pytest.raises(ValueError, match="kind must be one of"):
        next(arithmetic_rows(1, kind="prompt"))


def test_score_sums_the_weighted_rewards_per_completion():
    rows = [{"answer": "4"}, {"answer": "4"}, {"answer": "5"}]
    got = score(["exact_answer", "format"], ["4", "four", "4"], rows, weights=[2.0, 1.0])
    np.testing.assert_array_equal(got, np.array([3.0, 0.0, 1.0], np.float32))
    with pytest.raises(RewardError, match="2 reward weights for 1 rewards"):
        score(["format"], ["4"], rows[:1], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="2 completions for 1 rows"):
        score(["format"], ["4", "5"], rows[:1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "1", True])
def test_a_weight_that_is_no_finite_number_is_refused_naming_its_reward(bad):
    # NaN or an infinity would make every score, then every advantage and the loss, non-finite
    rows = [{"answer": "4"}]
    assert check_reward_weights(["exact_answer", "format"], [1, -0.5]) == [1.0, -0.5]
    assert check_reward_weights(["format"], None) == [1.0]
    with pytest.raises(RewardError) as err:
        check_reward_weights(["exact_answer", "format"], [1.0, bad])
    assert str(err.value).startswith(f"the weight of reward 'format', {bad!r}, is not a finite ")
    assert err.value.argument == "reward_weights"
    for fn in (score, score_each):  # both sums check them before scoring
        with pytest.raises(RewardError, match="the weight of reward 'format'"):
            fn(["format"], ["4"], rows, [bad])


def test_an_unknown_or_failing_reward_is_one_line_naming_it():
    with pytest.raises(
        RewardError, match="unknown reward 'exact'; the rewards are: .*exact_answer"
    ):
        check_rewards(["exact"], {"answer": "1"})
    with pytest.raises(RewardError, match="at least one reward"):
        check_rewards([], {"answer": "1"})
    with pytest.raises(RewardError, match="'exact_answer' raised KeyError.*answer"):
        check_rewards(["exact_answer"], {"prompt": "no answer field"})

    @register_reward("test_nan")
    def nan(completion: str, example: dict) -> float:
        return float("nan")

    @register_reward("test_text")
    def text(completion: str, example: dict) -> float:
        return "1"  # type: ignore[return-value]

    try:
        with pytest.raises(RewardError, match="'test_nan' returned nan"):
            check_rewards(["format", "test_nan"], {"answer": "1"})
        with pytest.raises(RewardError, match="'test_text' returned str, not a number"):
            score(["test_text"], ["1"], [{"answer": "1"}])
        with pytest.raises(ValueError, match="exists already"):
            register_reward("test_nan")(text)
        register_reward("test_nan")(nan)  # the same function again is no clash
    finally:
        REWARDS.pop("test_nan")
        REWARDS.pop("test_text")


def test_completion_texts_stop_before_the_end_of_turn_and_score_each_keeps_each_reward():
    from tjx.data import completion_texts

    class Letters:  # a tokenizer of ids 1..26 as letters
        def decode(self, ids):
            return "".join(chr(ord("a") + i - 1) for i in ids)

    rng = np.random.default_rng()
    eos = 27
    ids = rng.integers(1, 27, size=(6, 5)).astype(np.int32)
    lengths = rng.integers(1, 6, size=6).astype(np.int32)
    ended = rng.random(6) < 0.5
    for r in range(6):  # an ended completion's last counted token is the end of turn
        if ended[r]:
            ids[r, lengths[r] - 1] = eos
    texts = completion_texts(Letters(), ids, lengths, eos)
    for r, text in enumerate(texts):
        kept = ids[r, : lengths[r] - int(ended[r])]
        assert text == "".join(chr(ord("a") + int(i) - 1) for i in kept)
    examples = [{"answer": t if rng.random() < 0.5 else "zz"} for t in texts]
    total, each = score_each(["exact_answer", "length"], texts, examples, [2.0, 0.5])
    want_exact = np.array([float(t == e["answer"]) for t, e in zip(texts, examples, strict=True)])
    np.testing.assert_allclose(each["exact_answer"], want_exact)
    np.testing.assert_allclose(each["length"], np.ones(6))  # 5 letters: within 16 characters
    np.testing.assert_allclose(total, 2.0 * want_exact + 0.5)
    with pytest.raises(RewardError, match="1 reward weights for 2 rewards"):
        score_each(["exact_answer", "length"], texts, examples, [1.0])
