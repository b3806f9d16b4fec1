"""Reward functions for reinforcement learning on verifiable tasks (GRPO): code, never data.

A reward is a Python function ``(completion, example) -> float``: the completion's text (what the
policy generated after the prompt, up to its end of turn) and the example's row (the prompt
source's JSON object, e.g. ``{"prompt": ..., "answer": "95"}``). A run names its rewards in its
config (``grpo.rewards``); the names are looked up in `REWARDS`, which holds the built-ins below
and whatever a user's code adds with `register_reward` before the run starts. Nothing in a data
file is ever run: a row only supplies values (an answer, a length) that a named function reads.

Built-ins:

- ``exact_answer``: 1.0 when the completion, stripped of surrounding whitespace, is the row's
  ``answer`` (compared as text), else 0.0;
- ``format``: 1.0 when the stripped completion is one number (an optional sign and digits: the
  form the arithmetic task asks for), else 0.0 — a reward for the form, whatever the value;
- ``length``: 1.0 for a completion of at most ``max_chars`` characters (the row's, default 16),
  falling linearly to 0.0 at twice that: rambling costs.

`check_rewards` runs every named reward on one example before a run writes anything (an unknown
name, a reward that raises or returns something other than a finite number: one line naming it);
`check_reward_weights` their weights (one finite number each); `completion_texts` decodes
generated ids into what a reward reads; `score` runs the rewards on a batch of completions and
sums them with their weights, `score_each` keeps each reward's values too (what a run logs as
``rewards/<name>``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tjx.data.errors import DataError

__all__ = [
    "REWARDS",
    "Reward",
    "RewardError",
    "check_reward_weights",
    "check_rewards",
    "completion_texts",
    "exact_answer",
    "format_reward",
    "length_reward",
    "register_reward",
    "reward_named",
    "score",
    "score_each",
]

#: A reward: the completion's text and the example's row → a finite score.
Reward = Callable[[str, Mapping[str, Any]], float]
#: The rewards a config may name, by name.
REWARDS: dict[str, Reward] = {}
_NUMBER = re.compile(r"[+-]?\d+")
#: ``length``'s budget when the row has no ``max_chars``.
DEFAULT_MAX_CHARS = 16


class RewardError(DataError):
    """A reward that is unknown, raised, or returned something other than a finite number."""


def register_reward(name: str) -> Callable[[Reward], Reward]:
    """Decorator: make ``fn`` the reward a config names ``name`` (a name is registered once)."""

    def add(fn: Reward) -> Reward:
        if name in REWARDS and REWARDS[name] is not fn:
            raise ValueError(f"register_reward: a reward named {name!r} exists already")
        REWARDS[name] = fn
        return fn

    return add


def reward_named(name: str) -> Reward:
    """The reward registered as ``name``; an unknown name is a `RewardError` listing the known."""
    try:
        return REWARDS[name]
    except KeyError:
        known = ", ".join(sorted(REWARDS))
        raise RewardError(
            f"unknown reward {name!r}; the rewards are: {known} (or register one with "
            "tjx.data.register_reward before the run)",
            argument="rewards",
        ) from None


@register_reward("exact_answer")
def exact_answer(completion: str, example: Mapping[str, Any]) -> float:
    """1.0 when the stripped completion is the row's ``answer`` as text, else 0.0."""
    if "answer" not in example:
        raise KeyError("exact_answer needs an 'answer' field in each prompt row")
    return float(completion.strip() == str(example["answer"]).strip())


@register_reward("format")
def format_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1.0 when the stripped completion is one (signed) integer, else 0.0."""
    del example  # the form is the task's, not the row's
    return float(_NUMBER.fullmatch(completion.strip()) is not None)


@register_reward("length")
def length_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1.0 up to the row's ``max_chars`` (default 16) characters, linearly 0.0 at twice that."""
    budget = int(example.get("max_chars", DEFAULT_MAX_CHARS))
    if budget < 1:
        raise ValueError(f"length: max_chars must be >= 1; got {budget}")
    over = max(0, len(completion.strip()) - budget)
    return max(0.0, 1.0 - over / budget)


def _call(name: str, fn: Reward, completion: str, example: Mapping[str, Any], where: str) -> float:
    try:
        value = fn(completion, example)
    except Exception as err:  # a user's code: any error is reported as the reward's
        raise RewardError(
            f"reward {name!r} raised {type(err).__name__}: {err} ({where}); fix the reward "
            "function or the prompt rows",
            argument="rewards",
        ) from err
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise RewardError(
            f"reward {name!r} returned {type(value).__name__}, not a number ({where})",
            argument="rewards",
        )
    if not math.isfinite(float(value)):
        raise RewardError(f"reward {name!r} returned {value} ({where})", argument="rewards")
    return float(value)


def check_rewards(names: Sequence[str], example: Mapping[str, Any]) -> None:
    """Every named reward exists and gives a finite number for ``example`` (its own ``answer``
    as the completion, else an empty one): the check a run makes before it writes anything.

    Raises
    ------
    RewardError
        An empty list, an unknown name, or a reward that fails on the example.
    """
    if not names:
        raise RewardError("grpo needs at least one reward (e.g. exact_answer)", argument="rewards")
    probe = str(example.get("answer", ""))
    for name in names:
        _call(name, reward_named(name), probe, example, "on the first prompt row")


def check_reward_weights(names: Sequence[str], weights: Sequence[float] | None) -> list[float]:
    """The weights of the named rewards (`score`'s sum): one finite number per reward; a
    negative one penalises, 0 logs a reward without training on it.

    Parameters
    ----------
    names : sequence of str
        The rewards.
    weights : sequence of float, optional
        One per name (default 1.0 each).

    Returns
    -------
    list of float
        The weights, one per name.

    Raises
    ------
    RewardError
        Another count than the rewards', or a weight that is no finite number (NaN or an
        infinity would make every score, then every advantage and the loss, NaN or infinite),
        naming it.
    """
    if weights is None:
        return [1.0] * len(names)
    weights = list(weights)
    if len(weights) != len(names):
        raise RewardError(
            f"{len(weights)} reward weights for {len(names)} rewards; give one per reward (or "
            "none: 1 each)",
            argument="reward_weights",
        )
    for name, w in zip(names, weights, strict=True):
        number = not isinstance(w, bool) and isinstance(w, int | float | np.number)
        if not number or not math.isfinite(float(w)):
            raise RewardError(
                f"the weight of reward {name!r}, {w!r}, is not a finite number (it would make "
                "every score, and so the loss, non-finite); give a finite weight",
                argument="reward_weights",
            )
    return [float(w) for w in weights]


def score(
    names: Sequence[str],
    completions: Sequence[str],
    examples: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """The weighted sum of the named rewards for each completion.

    Parameters
    ----------
    names : sequence of str
        Registered rewards.
    completions : sequence of str
        The completions' texts.
    examples : sequence of mapping
        Each completion's prompt row (one per completion: a group repeats its prompt's row).
    weights : sequence of float, optional
        One per name (default 1.0 each).

    Returns
    -------
    numpy.ndarray
        float32 ``[len(completions)]``.
    """
    if len(completions) != len(examples):
        raise ValueError(f"score: {len(completions)} completions for {len(examples)} rows")
    weights = check_reward_weights(names, weights)
    fns = [reward_named(name) for name in names]
    out = np.zeros(len(completions), np.float32)
    for i, (text, row) in enumerate(zip(completions, examples, strict=True)):
        out[i] = sum(
            w * _call(n, fn, text, row, f"completion {i}")
            for n, fn, w in zip(names, fns, weights, strict=True)
        )
    return out


def score_each(
    names: Sequence[str],
    completions: Sequence[str],
    examples: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`score`'s weighted sum and each named reward's own (unweighted) values, by name."""
    weights = check_reward_weights(names, weights)
    each = {name: score([name], completions, examples) for name in names}
    total = np.zeros(len(completions), np.float32)
    for w, values in zip(weights, each.values(), strict=True):
        total += np.float32(w) * values
    return total, each


def completion_texts(
    tokenizer: Any, completions: np.ndarray, lengths: np.ndarray, eos_id: int | None
) -> list[str]:
    """Each generated completion's text, its end-of-turn token left out: what a reward reads.

    Parameters
    ----------
    tokenizer : Tokenizer
        Anything with ``decode(ids) -> str`` (tjx.data's tokenizers).
    completions : numpy.ndarray
        int ``[rows, T]``: each row's new tokens.
    lengths : numpy.ndarray
        int ``[rows]``: each completion's tokens, its end-of-turn token included when it has one.
    eos_id : int, optional
        The end-of-turn token.
    """
    out = []
    for row, n in zip(np.asarray(completions), np.asarray(lengths), strict=True):
        ids = [int(t) for t in row[: int(n)]]
        if ids and eos_id is not None and ids[-1] == eos_id:
            ids = ids[:-1]
        out.append(tokenizer.decode(ids))
    return out
