"""Autoregressive generation with a preallocated KV cache.

One jitted prefill runs the whole (right-padded) prompt batch and fills the cache; one jitted
decode step then produces a token per call. ``generate_seq2seq`` serves the encoder-decoder the
same way: its prefill also encodes the source once and projects every decoder layer's
cross-attention keys/values, which the decode steps then read from the cache. Both are compiled
once per (model graph, batch, cache length, sampling settings): the Python loop only feeds new
tokens, so no per-token recompilation.

Padding convention: prompts are **right-padded**; ``prompt_lengths[r]`` says how many tokens of row
``r`` are real. Row ``r``'s token at absolute position ``t`` sits in cache slot ``t``, so every row
decodes at its own position (the attention's ``kv_lengths`` hides unused slots). The output row is
the prompt's real tokens followed directly by the new tokens, right-padded with ``pad_id``.

LongRoPE (``rope_scaling`` of type ``longrope``, Phi-3's) rotates with its short factors while a
call's longest position is within ``original_max_position_embeddings`` and with its long ones
past it. When a generation crosses that length, the cached keys were rotated with the short
factors: the step that crosses re-reads the whole sequence so far (a second prefill, compiled
once), as transformers' Phi-3 does, so every token is what a forward over its prefix computes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx.nn.decoder import DecoderLM
from tjx.nn.encdec import EncoderDecoder
from tjx.nn.losses import target_logprobs

Array = jax.Array

#: How many times the prefill / decode functions were traced (tests check no per-token retrace).
TRACE_COUNTS = {"prefill": 0, "decode": 0}

Sampling = tuple[float, int | None, float | None]
#: Where a generation's arrays go (`generate`'s ``place``): one array in, that array placed.
Place = Callable[[Any], Array]


class Generated(NamedTuple):
    """`run_generation`'s tokens (int32 ``[b, P + T]``: `generate`'s) and, when asked, ``logps``
    (float32 ``[b, P + T]``): at each new token's slot its log-probability under the float32
    logits over the temperature, before top-k/top-p (tjx.nn.grpo's `token_logprobs`' reading);
    0 at the prompt and the padding."""

    tokens: Array
    logps: np.ndarray | None = None


def sample_logits(
    logits: Array,
    key: Array,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Array:
    """Pick one token per row of float ``logits`` ``[b, vocab]``.

    ``temperature == 0`` is greedy (argmax). Otherwise logits are divided by ``temperature``,
    restricted to the ``top_k`` largest and to the smallest set whose probability reaches
    ``top_p`` (nucleus), then sampled.

    Parameters
    ----------
    logits : Array
        ``[b, vocab]``.
    key : Array
        PRNG key (unused when greedy).
    temperature : float
        0 = greedy.
    top_k : int, optional
        Keep the ``top_k`` largest logits.
    top_p : float, optional
        Nucleus mass in ``(0, 1]``.

    Returns
    -------
    Array
        int32 ``[b]``.
    """
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep a token if the mass strictly before it is below top_p (always keeps the first).
        before = jnp.cumsum(probs, axis=-1) - probs
        cutoff = jnp.min(jnp.where(before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _pick(logits: Array, key: Array, sampling: Sampling, logprobs: bool) -> Any:
    """A token per row of ``logits`` ``[b, vocab]``, and with ``logprobs`` its log-probability
    under the logits over the temperature (the whole vocabulary: what GRPO's π_old scores)."""
    t, k, p = sampling
    tok = sample_logits(logits, key, temperature=t, top_k=k, top_p=p)
    if not logprobs:
        return tok
    return tok, target_logprobs(logits.astype(jnp.float32) / t, tok)


@partial(jax.jit, static_argnames=("graphdef", "sampling", "logprobs"))
def _prefill(
    graphdef: Any,
    state: Any,
    prompts: Array,
    lengths: Array,
    cache: Any,
    key: Array,
    sampling: Sampling,
    src: Array | None = None,
    src_ids: Array | None = None,
    logprobs: bool = False,
) -> tuple[Any, Any]:
    TRACE_COUNTS["prefill"] += 1
    model = nnx.merge(graphdef, state)
    if src is not None:  # encoder-decoder: encode once, cross keys/values into the cache
        cache = model.start_cache(src, cache, src_segment_ids=src_ids)
    b = prompts.shape[0]
    logits, cache = model.forward_cached(prompts, cache, jnp.zeros((b,), jnp.int32), lengths)
    last = logits[jnp.arange(b), lengths - 1]
    return cache, _pick(last, key, sampling, logprobs)


@partial(jax.jit, static_argnames=("graphdef", "sampling", "logprobs"), donate_argnames="cache")
def _decode(
    graphdef: Any,
    state: Any,
    tokens: Array,
    pos: Array,
    cache: Any,
    key: Array,
    sampling: Sampling,
    logprobs: bool = False,
) -> tuple[Any, Any]:
    TRACE_COUNTS["decode"] += 1
    model = nnx.merge(graphdef, state)
    logits, cache = model.forward_cached(tokens[:, None], cache, pos)
    return cache, _pick(logits[:, 0], key, sampling, logprobs)


def check_sampling(
    max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> Sampling:
    """Validate the sampling arguments (``ValueError`` naming the bad one); the jit-static tuple."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None; got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None; got {top_p}")
    return (float(temperature), top_k, top_p)


def sampling_key(seed: int | None, key: Array | None, temperature: float) -> Array:
    """The root PRNG key of one generation call (each step splits its own key off it).

    A sampling call must name its randomness: with a silent default seed every call without one
    would draw the same "random" continuation. Greedy decoding reads no key, so needs none.

    Parameters
    ----------
    seed : int, optional
        ``jax.random.key(seed)``.
    key : Array, optional
        One PRNG key: a typed key of shape ``()`` or a raw ``uint32[2]`` one.
    temperature : float
        0 = greedy.

    Returns
    -------
    Array
        A typed PRNG key of shape ``()``.

    Raises
    ------
    ValueError
        Both ``seed`` and ``key``; neither while sampling; a ``key`` that is not one key.
    """
    if seed is not None and key is not None:
        raise ValueError("seed and key: give one of them, not both")
    if key is not None:
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            typed = key
        elif key.dtype == jnp.uint32 and key.shape == (2,):
            typed = jax.random.wrap_key_data(key)
        else:
            typed = None
        if typed is None or typed.shape != ():
            raise ValueError(
                "key must be one PRNG key (jax.random.key(n), shape ()); got "
                f"{key.dtype}{tuple(key.shape)}: a batch of keys is not split per row or step"
            )
        return typed
    if seed is not None:
        return jax.random.key(seed)
    if temperature > 0:
        raise ValueError(
            "sampling (temperature > 0) needs seed= or key=: without one every call would draw "
            "the same tokens; pass a new seed (or a new split of your key) per call"
        )
    return jax.random.key(0)  # greedy: never read


def check_tokens(
    tokens: Any, lengths: Any, *, name: str, lengths_name: str, empty_fix: str
) -> tuple[np.ndarray, np.ndarray]:
    """int32 ``[b, P]`` right-padded ``tokens`` and their ``[b]`` real lengths (default ``P``).

    A row needs at least one real token (``empty_fix`` says what to give instead of none); a
    batch of zero rows is valid.
    """
    arr = np.asarray(tokens, dtype=np.int32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be int [batch, length]; got shape {arr.shape}")
    b, P = arr.shape
    if P == 0:
        raise ValueError(f"{name} has length 0 (shape {arr.shape}): {empty_fix}")
    lens = np.full((b,), P, np.int32) if lengths is None else np.asarray(lengths)
    lens = lens.astype(np.int32)
    if lens.shape != (b,) or (b > 0 and (lens.min() < 1 or lens.max() > P)):
        raise ValueError(
            f"{lengths_name} must be [batch] ints in [1, {P}]; got {lens} ({empty_fix})"
        )
    return arr, lens


def run_generation(
    model: DecoderLM | EncoderDecoder,
    prompts: np.ndarray,
    lengths: np.ndarray,
    *,
    max_new_tokens: int,
    sampling: Sampling,
    eos_id: int | None,
    key: Array,
    pad_id: int | None,
    src: np.ndarray | None = None,
    src_ids: np.ndarray | None = None,
    place: Place | None = None,
    place_cache: Place | None = None,
    logprobs: bool = False,
) -> Generated:
    """The shared prefill + decode loop (arguments already validated; ``key`` from
    ``sampling_key``). Every sampled step gets its own key split off ``key``, never ``key``
    itself, and one key samples a whole batch row-independently. ``place``, ``place_cache``:
    `generate`'s. ``logprobs`` (sampling only): each new token's log-probability too, computed
    inside the prefill and decode programs from the logits they sample from (`Generated`)."""
    if logprobs and sampling[0] == 0:
        raise ValueError("logprobs: greedy decoding (temperature 0) has no sampled distribution")
    put: Place = jnp.asarray if place is None else place
    put_cache = place if place_cache is None else place_cache

    def new_cache() -> Any:  # unplaced as before without ``place``: the same programs
        cache = model.init_cache(b, total)
        return cache if put_cache is None else jax.tree.map(put_cache, cache)

    b, P = prompts.shape
    total = P + max_new_tokens
    max_len = model.config.max_seq_len
    if total > max_len:
        raise ValueError(
            f"prompt length {P} + max_new_tokens {max_new_tokens} = {total} exceeds the "
            f"model's max_seq_len={max_len}"
        )
    if b == 0:
        return Generated(jnp.zeros((0, total), jnp.int32), np.zeros((0, total), np.float32))
    fill = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
    graphdef, state = nnx.split(model)
    cache = new_cache()
    short = _longrope_original(model)  # set while the cache holds short-factor keys
    if short is not None and short < P:
        short = None
    key, sub = jax.random.split(key)
    extra = () if src is None else (put(src), put(src_ids))
    # With ``logprobs`` each program returns (token, its log-probability): the latter kept on
    # the device, read once at the end (the loop already waits for each step's token).
    cache, tok = _prefill(graphdef, state, put(prompts), put(lengths), cache, sub, sampling,
                          *extra, logprobs=logprobs)  # fmt: skip
    scores: list[tuple[np.ndarray, np.ndarray, Array]] = []  # (rows live, their slots, logps)
    out = np.full((b, total), fill, np.int32)
    for r in range(b):
        out[r, : lengths[r]] = prompts[r, : lengths[r]]
    rows = np.arange(b)
    pos = lengths.copy()  # slot of the token just produced
    done = np.zeros((b,), bool)
    for step in range(max_new_tokens):
        if logprobs:
            tok, lp = tok
            scores.append((~done, pos.copy(), lp))
        tok_np = np.asarray(tok)
        tok_np = np.where(done, fill, tok_np)
        out[rows, pos] = tok_np
        if eos_id is not None:
            done |= tok_np == eos_id
        if step == max_new_tokens - 1 or done.all():
            break
        key, sub = jax.random.split(key)
        if short is not None and int(pos.max()) + 1 > short:  # LongRoPE turns long: re-read
            short, seen = None, int(pos.max()) + 1
            cache, tok = _prefill(
                graphdef, state, put(out[:, :seen]), put(pos + 1),
                new_cache(), sub, sampling, *extra, logprobs=logprobs,
            )  # fmt: skip
        else:
            cache, tok = _decode(graphdef, state, put(tok_np), put(pos), cache, sub, sampling,
                                 logprobs=logprobs)  # fmt: skip
        pos = pos + 1
    if not logprobs:
        return Generated(jnp.asarray(out))
    logps = np.zeros((b, total), np.float32)
    for live, slots, lp in scores:  # a row's steps after its end-of-turn token score nothing
        logps[rows, slots] = np.where(live, np.asarray(lp, np.float32), 0.0)
    return Generated(jnp.asarray(out), logps)


class GenerationPrograms(NamedTuple):
    """`generate`'s two jitted programs, lowered (`lower_generation`)."""

    prefill: jax.stages.Lowered
    decode: jax.stages.Lowered


def lower_generation(
    model: DecoderLM,
    rows: int,
    prompt_len: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    place: Callable[[jax.ShapeDtypeStruct], jax.ShapeDtypeStruct] = lambda x: x,
    place_cache: Callable[[jax.ShapeDtypeStruct], jax.ShapeDtypeStruct] | None = None,
    logprobs: bool = False,
) -> GenerationPrograms:
    """`generate`'s prefill and decode step for ``rows`` prompts of ``prompt_len`` tokens,
    lowered over abstract inputs: what a plan compiles for a device that is not here (a GRPO
    run's rollouts, its held-out greedy completions). Nothing is allocated: the KV cache is
    its shape (``jax.eval_shape``).

    Parameters
    ----------
    model : DecoderLM
        A model whose state may be abstract (``jax.ShapeDtypeStruct`` leaves with shardings).
    rows, prompt_len : int
        The prompt batch: ``[rows, prompt_len]``.
    max_new_tokens : int
        The completions' budget (the cache holds ``prompt_len + max_new_tokens`` slots).
    temperature, top_k, top_p
        The sampling settings (`generate`'s; static in the programs).
    place : callable
        Gives each non-state input (prompts, lengths, tokens, positions, the cache's leaves,
        the key) its sharding; the identity by default (one device).
    place_cache : callable, optional
        The cache's leaves' own (their rows are axis 1, after the layers: tjx.nn.kv_cache);
        default ``place``.
    logprobs : bool
        The programs also score each sampled token's log-probability (`run_generation`'s, a
        GRPO rollout's π_old taken from its decode).

    Returns
    -------
    GenerationPrograms
    """
    sampling = check_sampling(max_new_tokens, temperature, top_k, top_p)
    total = prompt_len + max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(
            f"prompt length {prompt_len} + max_new_tokens {max_new_tokens} = {total} exceeds "
            f"the model's max_seq_len={model.config.max_seq_len}"
        )
    graphdef, state = nnx.split(model)
    cache_shape = jax.eval_shape(lambda: model.init_cache(rows, total))
    cache = jax.tree.map(place if place_cache is None else place_cache, cache_shape)
    ids = place(jax.ShapeDtypeStruct((rows, prompt_len), jnp.int32))
    lengths = place(jax.ShapeDtypeStruct((rows,), jnp.int32))
    key = place(jax.eval_shape(lambda: jax.random.key(0)))
    return GenerationPrograms(
        _prefill.lower(graphdef, state, ids, lengths, cache, key, sampling, logprobs=logprobs),
        _decode.lower(graphdef, state, lengths, lengths, cache, key, sampling, logprobs=logprobs),
    )


def _longrope_original(model: DecoderLM | EncoderDecoder) -> int | None:
    """The length past which ``model``'s LongRoPE turns to its long factors (None: no
    LongRoPE)."""
    scaling = model.config.position.rope_scaling
    if scaling is None or scaling.type != "longrope":
        return None
    # RopeScaling refuses a longrope scaling without its pretraining length.
    assert scaling.original_max_position_embeddings is not None
    return int(scaling.original_max_position_embeddings)


def generate(
    model: DecoderLM,
    prompts: Any,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    prompt_lengths: Any = None,
    pad_id: int | None = None,
    key: Array | None = None,
    place: Place | None = None,
    place_cache: Place | None = None,
) -> Array:
    """Generate ``max_new_tokens`` tokens after each prompt.

    A model with multi-token prediction (``mtp.depths``) also decodes greedily with its own
    draft: `tjx.nn.generate_speculative` (the same tokens, and the drafts' acceptance rate).

    Parameters
    ----------
    model : DecoderLM
        A ``GPT2``/``Llama``/``DecoderLM`` (for ``EncoderDecoder`` use ``generate_seq2seq``).
    prompts : array-like
        int ``[b, P]`` right-padded prompts, ``P >= 1``: generation conditions on at least one
        token per row, so an empty prompt is an error (start it with a BOS token instead).
    max_new_tokens : int
        Tokens to generate per row (``P + max_new_tokens <= max_seq_len``).
    temperature, top_k, top_p : sampling settings (``temperature=0`` → greedy).
    eos_id : int, optional
        A row stops after producing it; later slots hold ``pad_id``. Generation ends early when
        every row has stopped.
    seed : int, optional
        Sampling seed (``key = jax.random.key(seed)``). Sampling (``temperature > 0``) needs
        ``seed`` or ``key``; greedy decoding needs neither.
    prompt_lengths : array-like, optional
        int ``[b]`` real prompt lengths (default: all ``P``); each in ``[1, P]``.
    pad_id : int, optional
        Filler after a row's end (default ``eos_id`` or 0).
    key : Array, optional
        One PRNG key instead of ``seed``. Each step samples with its own key split off it and
        rows sample independently; the same key (or seed) gives the same tokens, so pass a new
        one (``jax.random.split``) per call.
    place : callable, optional
        Puts each array the loop makes (the prompts, their lengths, the KV cache's leaves, each
        step's tokens and positions) where its programs run: e.g. its rows split over a data
        mesh with ``model``'s weights replicated there (`jax.device_put`); default: left to
        JAX (the default device). The tokens are the same wherever the rows run.
    place_cache : callable, optional
        The same for the KV cache's leaves, whose rows are their axis 1 (a leading layers
        axis: tjx.nn.kv_cache); default ``place``.

    Returns
    -------
    Array
        int32 ``[b, P + max_new_tokens]``: each row's real prompt, then its new tokens, padded.

    Raises
    ------
    ValueError
        A bad argument (the message names it): e.g. an empty prompt, sampling without a seed
        or key, both of them, or lengths over ``max_seq_len``.
    """
    if isinstance(model, EncoderDecoder):
        raise ValueError("model: generate serves decoder LMs; use generate_seq2seq for it")
    arr, lengths = check_tokens(
        prompts,
        prompt_lengths,
        name="prompts",
        lengths_name="prompt_lengths",
        empty_fix="every row needs at least one token to condition on; start each prompt "
        "with a BOS token (GPT-2: <|endoftext|>)",
    )
    sampling = check_sampling(max_new_tokens, temperature, top_k, top_p)
    root = sampling_key(seed, key, temperature)
    return run_generation(
        model,
        arr,
        lengths,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        eos_id=eos_id,
        key=root,
        pad_id=pad_id,
        place=place,
        place_cache=place_cache,
    ).tokens
