"""A run's held-out reward: greedy completions of held-out prompts, scored by named rewards.

What a GRPO run's ``val_reward`` measures (the trainer's `heldout_reward` composes the same
pieces): tjx.data's held-out prompt batches, tjx.nn's `greedy_completions` (KV-cache generation at
temperature 0, stopping at the end-of-turn token), tjx.data's `completion_texts` and
`score_each`. A GRPO run (``data.format: prompts``) is scored on its own validation prompts with
its ``grpo.rewards`` and ``grpo.max_new_tokens``; any chat run (its SFT start, a DPO run) with
``--rewards`` on the held-out prompts of its source (or ``--data``'s) in the prompts layout, so
a start and the GRPO run that grew from it are measured alike (``--compare``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.runs import LoadedRun, RunError
from tjx import data, nn

#: ``data.json``'s format of a GRPO run.
PROMPTS = "prompts"
#: The completion budget of a chat run scored with ``--rewards`` (GRPO's own default).
DEFAULT_NEW_TOKENS = 16


@dataclass(frozen=True)
class RewardSpec:
    """What a held-out reward is: the rewards by name (and weights), the completions' budget."""

    rewards: list[str]
    weights: list[float] | None
    max_new_tokens: int


def scores_rewards(run: LoadedRun, rewards: Sequence[str] | None) -> bool:
    """Whether ``run`` is scored by its held-out reward: a GRPO run, or ``--rewards`` given."""
    return run.data.get("format") == PROMPTS or bool(rewards)


def spec(run: LoadedRun, rewards: Sequence[str] | None, max_new_tokens: int | None) -> RewardSpec:
    """The run's reward settings (its ``grpo:`` section), with the command line's over them."""
    grpo = run.config.get("grpo") or {}
    names = list(rewards or grpo.get("rewards") or [])
    weights = None if rewards else grpo.get("reward_weights")
    budget = max_new_tokens or int(grpo.get("max_new_tokens") or DEFAULT_NEW_TOKENS)
    return RewardSpec(names, weights, budget)


def prompt_data(run: LoadedRun, source: str | None, max_new_tokens: int) -> Any:
    """tjx.data's `ChatRunData` of the held-out prompts: a GRPO run's own (unless ``source``),
    else ``source`` (default: the run's ``data.source``) in the prompts layout, encoded with the
    run's tokenizer and chat template, each prompt leaving ``max_new_tokens`` of the model's
    ``max_seq_len`` for its completion (longer prompts are left out, as a GRPO run leaves them)."""
    if run.data.get("format") == PROMPTS and source is None:
        return run.run_data
    where = source or str(run.data.get("source") or "")
    try:
        return data.prepare_chat_run_data(
            where,
            str(run.run_data.tokenizer_dir),  # type: ignore[union-attr]  # (a chat run's)
            kind=PROMPTS,
            seq_len=int(run.nn_config.max_seq_len) - max_new_tokens,
            names={"source": "--data", "tokenizer": "--checkpoint's tokenizer"},
        )
    except data.DataError as err:
        raise RunError(f"--rewards: the prompts of {where!r}: {err}") from None


def evaluate(
    run: LoadedRun,
    *,
    rewards: Sequence[str] | None,
    source: str | None,
    max_new_tokens: int | None,
    batch_size: int,
    max_batches: int | None,
) -> dict[str, float]:
    """``reward`` (the weighted sum's mean), ``rewards/<name>`` (each reward's mean) and
    ``prompts`` (how many) of greedy completions of the held-out prompts (the first
    ``max_batches`` batches of ``batch_size``; all by default).

    Raises
    ------
    RunError
        No reward named, an unknown reward or one that fails on a row, no held-out prompt that
        fits the run's ``seq_len``, or prompts that leave no room for a completion.
    """
    want = spec(run, rewards, max_new_tokens)
    encoder = getattr(run.run_data, "encoder", None)
    if encoder is None or encoder.template is None:  # the prompts are user turns
        raise RunError(
            "--rewards: needs a run with a chat template (data.format chat, preference or "
            "prompts): the prompts are rendered as its user turns"
        )
    if want.max_new_tokens >= int(run.nn_config.max_seq_len):
        raise RunError(
            f"--max-new-tokens: {want.max_new_tokens} leaves no room for a prompt in the model's "
            f"max_seq_len of {run.nn_config.max_seq_len}; give fewer"
        )
    prompts = prompt_data(run, source, want.max_new_tokens)
    rows = data.read_prompt_rows(data.load_sequences(prompts.val_dir))
    try:
        data.check_rewards(want.rewards, rows[0] if rows else {})
    except data.RewardError as err:
        raise RunError(f"--rewards: {err}") from None
    eos_id = prompts.encoder.end_of_turn_id
    texts: list[str] = []
    examples: list[Mapping[str, Any]] = []
    batches = itertools.islice(prompts.validation_batches(batch_size), max_batches)
    for batch in batches:
        real = np.asarray(batch["lengths"]) > 0
        if not real.any():
            continue
        ids, lengths = np.asarray(batch["prompts"])[real], np.asarray(batch["lengths"])[real]
        room = int(run.nn_config.max_seq_len) - ids.shape[1]
        if room < want.max_new_tokens:
            raise RunError(
                f"--max-new-tokens: {want.max_new_tokens} new tokens after {ids.shape[1]}-token "
                f"prompts pass the model's max_seq_len of {run.nn_config.max_seq_len}; give at "
                f"most {max(room, 0)}"
            )
        done = nn.grpo.greedy_completions(
            run.model, ids, lengths, max_new_tokens=want.max_new_tokens, eos_id=eos_id, pad_id=0
        )
        texts += data.completion_texts(prompts.tokenizer, done.completions, done.lengths, eos_id)
        examples += [rows[int(i)] for i in np.asarray(batch["row_ids"])[real]]
    if not texts:
        raise RunError(f"{prompts.val_dir}: no held-out prompt fits the run's seq_len")
    try:
        total, each = data.score_each(want.rewards, texts, examples, want.weights)
    except data.RewardError as err:
        raise RunError(f"--rewards: {err}") from None
    means = {"reward": float(total.mean()), "prompts": float(len(texts))}
    return means | {f"rewards/{k}": float(v.mean()) for k, v in each.items()}


def scope(
    run: LoadedRun, results: Mapping[str, float], want: RewardSpec, source: str | None
) -> str:
    """What a held-out reward covers, for the line under the table."""
    where = "the run's validation split"
    if source or run.data.get("format") != PROMPTS:
        where = f"the validation split of {source or run.data.get('source')!r}"
    return (
        f"({round(results['prompts']):,} held-out prompts of {where}: greedy "
        f"completions of at most {want.max_new_tokens} tokens, scored by "
        f"{', '.join(want.rewards)})"
    )
