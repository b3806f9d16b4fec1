"""Generation for the encoder-decoder (T5/BART style) with a KV cache.

The source is encoded once, in the jitted prefill, which also projects every decoder layer's
cross-attention keys/values from the encoder output and keeps them in the decoding state; each
jitted decode step then runs the decoder on one token, with its self-attention KV cache and those
fixed cross keys/values. The prefill, decode loop and sampling are ``generation``'s (shared with
``generate``): one compile for the prefill, one for the decode step.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from tjx.nn.encdec import EncoderDecoder
from tjx.nn.generation import check_sampling, check_tokens, run_generation, sampling_key

Array = jax.Array


def generate_seq2seq(
    model: EncoderDecoder,
    src: Any,
    *,
    max_new_tokens: int,
    decoder_start_id: int | None = None,
    decoder_prompts: Any = None,
    prompt_lengths: Any = None,
    src_lengths: Any = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    pad_id: int | None = None,
    key: Array | None = None,
) -> Array:
    """Generate ``max_new_tokens`` target tokens for each source sequence.

    The decoder starts from ``decoder_start_id`` (T5 uses the pad id 0, BART ``</s>``), or from
    right-padded ``decoder_prompts`` (a forced target prefix). Greedy and sampling settings, EOS
    handling and padding behave exactly as in ``generate``.

    Parameters
    ----------
    model : EncoderDecoder
        The model.
    src : array-like
        int ``[b, S]`` right-padded source tokens (``1 <= S <= max_seq_len``; an empty source
        is an error: give at least one token, e.g. EOS, per row).
    max_new_tokens : int
        Tokens to generate per row (``P + max_new_tokens <= max_seq_len``).
    decoder_start_id : int, optional
        The first decoder token of every row (default 0); not with ``decoder_prompts``.
    decoder_prompts : array-like, optional
        int ``[b, P]`` right-padded decoder prefixes, instead of ``decoder_start_id``.
    prompt_lengths : array-like, optional
        int ``[b]`` real lengths of ``decoder_prompts`` (default ``P``).
    src_lengths : array-like, optional
        int ``[b]`` real source lengths in ``[1, S]`` (default ``S``); the rest is padding that
        the encoder and the cross-attention ignore.
    temperature, top_k, top_p : sampling settings (``temperature=0`` → greedy).
    eos_id : int, optional
        A row stops after producing it; later slots hold ``pad_id``.
    seed : int, optional
        Sampling seed; sampling (``temperature > 0``) needs ``seed`` or ``key``.
    pad_id : int, optional
        Filler after a row's end (default ``eos_id`` or 0).
    key : Array, optional
        One PRNG key instead of ``seed`` (split per step, as in ``generate``).

    Returns
    -------
    Array
        int32 ``[b, P + max_new_tokens]`` (``P = 1`` with ``decoder_start_id``): each row's
        decoder prefix, then its new tokens, padded.

    Raises
    ------
    ValueError
        A bad argument (the message names it), or lengths over ``max_seq_len``.
    """
    if not isinstance(model, EncoderDecoder):
        raise ValueError(
            f"model must be an EncoderDecoder (use generate for decoder LMs); got "
            f"{type(model).__name__}"
        )
    source, lengths = check_tokens(
        src,
        src_lengths,
        name="src",
        lengths_name="src_lengths",
        empty_fix="every row needs at least one source token (e.g. EOS) for the encoder",
    )
    max_len = model.config.max_seq_len
    if source.shape[1] > max_len:
        raise ValueError(f"src length {source.shape[1]} exceeds the model's max_seq_len={max_len}")
    b = source.shape[0]
    if decoder_prompts is None:
        start = 0 if decoder_start_id is None else decoder_start_id
        decoder_prompts = np.full((b, 1), start, np.int32)
    elif decoder_start_id is not None:
        raise ValueError("decoder_start_id and decoder_prompts: give one of them, not both")
    prompts, prompt_lens = check_tokens(
        decoder_prompts,
        prompt_lengths,
        name="decoder_prompts",
        lengths_name="prompt_lengths",
        empty_fix="the decoder needs a first token per row; leave decoder_prompts out to start "
        "from decoder_start_id",
    )
    if prompts.shape[0] != b:
        raise ValueError(
            f"decoder_prompts must have one row per src row ({b}); got {prompts.shape[0]}"
        )
    sampling = check_sampling(max_new_tokens, temperature, top_k, top_p)
    root = sampling_key(seed, key, temperature)
    # Segment ids with 0 on the padding: the encoder and cross-attention mask, as in __call__.
    src_ids = (np.arange(source.shape[1])[None, :] < lengths[:, None]).astype(np.int32)
    return run_generation(
        model,
        prompts,
        prompt_lens,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        eos_id=eos_id,
        key=root,
        pad_id=pad_id,
        src=source,
        src_ids=src_ids,
    ).tokens
