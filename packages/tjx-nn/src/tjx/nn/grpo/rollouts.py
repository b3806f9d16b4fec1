"""GRPO's rollouts: ``G`` completions per prompt from tjx.nn's KV-cache generation, as a batch.

`greedy_completions` is the held-out side: one greedy completion per prompt, in the same layout, so
a policy's success rate is measured without the rollouts' sampling noise (the trainer's
``val_reward`` and the evaluator's held-out reward). `sample_groups` repeats each prompt ``G`` times
(a group's rows are consecutive, the order `group_advantages` reads), samples with `tjx.nn.generate`
(one jitted prefill, one jitted decode step per token; temperature and top-p; a row stops at the
end-of-turn token) and lays the result out as the batch `token_logprobs` scores: ``inputs`` the
sequence but its last token, ``targets`` the next tokens where they are a completion's (its end-of-
turn token included, as TRL's completion mask includes it) and ``-100`` elsewhere: the prompt, and
the padding after the end. With ``mask_truncated`` (TRL's ``mask_truncated_completions``, DAPO's
advice) a completion that ran out of tokens before its end-of-turn token is left out of the
loss: its ``mask`` row is 0 (its reward is still scored and logged). `sample_groups` also returns
each completion token's log-probability from the decode that sampled it (``Rollout.logps``: the
sampling policy's, GRPO's π_old, without a second forward pass).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tjx.nn.decoder import DecoderLM
from tjx.nn.generation import (
    Place,
    check_sampling,
    check_tokens,
    generate,
    run_generation,
    sampling_key,
)

__all__ = ["Rollout", "greedy_completions", "rollout_batch", "sample_groups"]

Array = jax.Array


class Rollout(NamedTuple):
    """Sampled completions and the batch that scores them.

    Attributes
    ----------
    batch : dict
        ``inputs`` and ``targets`` int32 ``[rows, P + T - 1]`` (`token_logprobs`' layout).
    mask : Array
        float32 ``[rows, P + T - 1]``: 1 where ``targets`` is a completion token (0 on a
        truncated completion's row with ``mask_truncated``).
    completions : numpy.ndarray
        int32 ``[rows, T]``: each row's new tokens, ``pad_id`` after its end.
    lengths : numpy.ndarray
        int32 ``[rows]``: each completion's tokens, its end-of-turn token included.
    truncated : numpy.ndarray
        bool ``[rows]``: the completions without an end-of-turn token (all of them without
        ``eos_id``).
    logps : Array or None
        float32 ``[rows, P + T - 1]`` (`token_logprobs`' layout, 0 where ``targets`` is
        ``-100``): each completion token's log-probability as the decode that sampled it scored
        it (`sample_groups`); None for `greedy_completions`.
    """

    batch: dict[str, Array]
    mask: Array
    completions: np.ndarray
    lengths: np.ndarray
    truncated: np.ndarray
    logps: Array | None = None


def rollout_batch(
    sequences: np.ndarray,
    prompt_lengths: np.ndarray,
    *,
    max_new_tokens: int,
    eos_id: int | None,
    mask_truncated: bool = False,
    logps: np.ndarray | None = None,
) -> Rollout:
    """Lay out generated ``sequences`` (``generate``'s output: each row's prompt, then its new
    tokens, padded) as a `Rollout`.

    Parameters
    ----------
    sequences : numpy.ndarray
        int ``[rows, P + T]``.
    prompt_lengths : numpy.ndarray
        int ``[rows]``: each row's real prompt tokens.
    max_new_tokens : int
        ``T``.
    eos_id : int, optional
        The end-of-turn token: a completion ends after it (without one, every completion has
        ``T`` tokens).
    mask_truncated : bool
        Zero the mask of the completions without an end-of-turn token (needs ``eos_id``).
    logps : numpy.ndarray, optional
        float ``[rows, P + T]``: each token's log-probability at its slot (`run_generation`'s
        ``Generated.logps``), laid out as ``Rollout.logps``.
    """
    if mask_truncated and eos_id is None:
        raise ValueError("rollout_batch: mask_truncated needs eos_id (what ends a completion)")
    seq = np.asarray(sequences)
    lengths_p = np.asarray(prompt_lengths)
    rows, width = seq.shape
    starts = lengths_p[:, None] + np.arange(max_new_tokens)[None]  # [rows, T] absolute positions
    completions = np.take_along_axis(seq, np.minimum(starts, width - 1), axis=1)
    lengths = np.full(rows, max_new_tokens, np.int32)
    truncated = np.ones(rows, bool)
    if eos_id is not None:
        ends = completions == eos_id
        truncated = ~ends.any(1)
        lengths = np.where(truncated, max_new_tokens, ends.argmax(1) + 1).astype(np.int32)
    # targets[:, t] is sequence[:, t + 1]: a completion's token when lp <= t + 1 < lp + n.
    nxt = np.arange(1, width)[None]
    scored = (nxt >= lengths_p[:, None]) & (nxt < (lengths_p + lengths)[:, None])
    targets = np.where(scored, seq[:, 1:], -100)
    # targets[:, t] is the token at slot t + 1: its log-probability too (0 where not scored).
    scores = (
        None if logps is None else jnp.asarray(np.where(scored, logps[:, 1:], 0.0), jnp.float32)
    )
    if mask_truncated:  # scored still (the logged length), but not in the loss
        scored = scored & ~truncated[:, None]
    pad = completions.dtype.type(0)
    keep = np.arange(max_new_tokens)[None] < lengths[:, None]
    return Rollout(
        batch={"inputs": jnp.asarray(seq[:, :-1], jnp.int32),
               "targets": jnp.asarray(targets, jnp.int32)},  # fmt: skip
        mask=jnp.asarray(scored, jnp.float32),
        completions=np.where(keep, completions, pad).astype(np.int32),
        lengths=lengths,
        truncated=truncated,
        logps=scores,
    )


def sample_groups(
    model: DecoderLM,
    prompts: np.ndarray,
    prompt_lengths: np.ndarray,
    *,
    group: int,
    max_new_tokens: int,
    key: Array,
    temperature: float = 1.0,
    top_p: float | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    mask_truncated: bool = False,
    place: Place | None = None,
    place_cache: Place | None = None,
    logprobs: bool = False,
) -> Rollout:
    """``group`` sampled completions of each prompt (a group's rows consecutive).

    Parameters
    ----------
    model : DecoderLM
        The policy as it is now (GRPO's ``π_old`` for the update steps that follow).
    prompts : numpy.ndarray
        int ``[prompts, P]``, right-padded.
    prompt_lengths : numpy.ndarray
        int ``[prompts]``.
    group : int
        ``G``.
    max_new_tokens : int
        ``T``: the completions' budget.
    key : Array
        The rollout's PRNG key (the run's, split per rollout: a resumed run samples the same).
    temperature, top_p : sampling settings (temperature > 0: GRPO needs different completions).
    eos_id, pad_id : the end-of-turn token and the filler after it.
    mask_truncated : bool
        Leave the completions that did not end out of the loss (`rollout_batch`).
    place, place_cache : callable, optional
        Where the generation's arrays go (`generate`'s ``place``: e.g. the ``prompts × group``
        rows split over a data mesh); default: JAX's default device. ``place_cache``: the KV
        cache's leaves' (their rows at axis 1; `generate`'s).
    logprobs : bool
        Also score each completion token's log-probability in the programs that sample it
        (``Rollout.logps``). Off, the programs are `generate`'s own.

    Returns
    -------
    Rollout
        With ``logprobs``, ``logps``: each completion token's log-probability, scored in the
        prefill's and decode steps' own programs from the logits they sampled it from (the
        float32 logits over ``temperature``, the whole vocabulary, as `token_logprobs` reads
        them).
    """
    if temperature <= 0:
        raise ValueError("sample_groups: GRPO samples (temperature > 0); greedy gives G copies")
    reps, lengths = check_tokens(
        np.repeat(np.asarray(prompts), group, axis=0),
        np.repeat(np.asarray(prompt_lengths), group, axis=0),
        name="prompts",
        lengths_name="prompt_lengths",
        empty_fix="every prompt needs at least one token",
    )
    out = run_generation(model, reps, lengths, max_new_tokens=max_new_tokens,
                         sampling=check_sampling(max_new_tokens, temperature, None, top_p),
                         eos_id=eos_id, key=sampling_key(None, key, temperature), pad_id=pad_id,
                         place=place, place_cache=place_cache, logprobs=logprobs)  # fmt: skip
    return rollout_batch(
        np.asarray(out.tokens),
        lengths,
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        mask_truncated=mask_truncated,
        logps=out.logps,
    )


def greedy_completions(
    model: DecoderLM,
    prompts: np.ndarray,
    prompt_lengths: np.ndarray,
    *,
    max_new_tokens: int,
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> Rollout:
    """One greedy (temperature 0) completion of each prompt, as a `Rollout`.

    Parameters
    ----------
    model : DecoderLM
        The policy to measure.
    prompts : numpy.ndarray
        int ``[prompts, P]``, right-padded.
    prompt_lengths : numpy.ndarray
        int ``[prompts]``, each ``>= 1``.
    max_new_tokens : int
        ``T``.
    eos_id, pad_id : the end-of-turn token and the filler after it.

    Returns
    -------
    Rollout
    """
    lengths = np.asarray(prompt_lengths)
    out = generate(model, np.asarray(prompts), max_new_tokens=max_new_tokens, temperature=0.0,
                   prompt_lengths=lengths, eos_id=eos_id, pad_id=pad_id)  # fmt: skip
    return rollout_batch(np.asarray(out), lengths, max_new_tokens=max_new_tokens, eos_id=eos_id)
