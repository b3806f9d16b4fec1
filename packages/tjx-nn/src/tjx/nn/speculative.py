"""Greedy self-speculative decoding with a model's own multi-token-prediction module (``mtp``,
DeepSeek-V3's): depth 1 drafts the token after next, the main model verifies it.

The output is plain greedy decoding's (`tjx.nn.generate` at ``temperature=0``) token for token:
every emitted token is the main model's argmax after the prefix it conditions on; the draft only
decides whether a step emits one token or two. Each step verifies ``[last token, draft]`` in ONE
pass of the main model (a two-token cached decode step, ``forward_cached(..., extend=True)``):
one read of the weights emits one or two tokens, where greedy decoding reads them once per
token. `generate_speculative` reports the drafts' acceptance rate and its passes.

"Token for token" holds up to rounding: the two-token pass and greedy's one-token steps are
programs of their own, rounded apart, so where two logits are closer than the compute dtype's
rounding the two may pick differently, and the rows go their own ways from there. In bfloat16
that happens: an 8-layer d 1,024 Llama with random weights parted from greedy at its 15th new
token on a CPU, where float32 puts the two tokens 0.010 apart and the bf16 logits are within
0.034 of float32's (`tools/bench_speculative.py`'s `first_divergence`, 2026-11-30). The tests'
tiny float32 models emit greedy's tokens exactly.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx.nn.decoder import DecoderLM
from tjx.nn.generation import check_sampling, check_tokens
from tjx.nn.kv_cache import init_cache
from tjx.nn.mtp import shift_left

Array = jax.Array
Caches = tuple[Any, Any]


class Speculation(NamedTuple):
    """`generate_speculative`'s result.

    Attributes
    ----------
    tokens : Array
        int32 ``[b, P + max_new_tokens]``, as `tjx.nn.generate`'s greedy output.
    drafted : int
        Drafts verified while a row still had room for two tokens.
    accepted : int
        Of those, the drafts the main model agreed with (each one a token emitted without a
        pass of its own).
    passes : int
        Verification passes of the main model after the prefill (one per step, each over two
        tokens); plain greedy decoding makes ``max_new_tokens - 1`` one-token passes.
    """

    tokens: Array
    drafted: int
    accepted: int
    passes: int = 0

    @property
    def acceptance_rate(self) -> float:
        """``accepted / drafted`` in ``[0, 1]`` (NaN when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else float("nan")


def _greedy(model: DecoderLM, prenorm: Array) -> Array:
    """The main head's argmax from the stack's output."""
    return jnp.argmax(model.logits(model.normed(prenorm)), axis=-1).astype(jnp.int32)


def _draft(model: DecoderLM, prenorm: Array, tokens: Array, positions: Array, **kw: Any) -> Any:
    """MTP depth 1 at ``positions``: (its argmax, its updated cache)."""
    assert model.mtp is not None
    layer = model.mtp.layers[0]
    embedded = model.embed_tokens(tokens, positions)
    h, cache, _ = layer(prenorm, embedded, positions=positions, **kw)
    logits = model.logits(layer.norm(h))
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache


@partial(jax.jit, static_argnames=("graphdef",))
def _prefill(
    graphdef: Any, state: Any, prompts: Array, lengths: Array, caches: Caches
) -> tuple[Caches, Array, Array]:
    model = nnx.merge(graphdef, state)
    b, s = prompts.shape
    zero, rows = jnp.zeros((b,), jnp.int32), jnp.arange(b)
    hidden, cache = model.cached_trunk(prompts, caches[0], zero, lengths)
    first = _greedy(model, hidden)[rows, lengths - 1]
    # Depth 1 at position i reads t_{i+1}: the prompt's next token, the first new one at the end.
    following = shift_left(prompts, 1, 0).at[rows, lengths - 1].set(first)
    positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
    draft, mtp_cache = _draft(
        model, hidden, following, positions, cache=caches[1], cache_pos=zero, lengths=lengths
    )
    return (cache, mtp_cache), first, draft[rows, lengths - 1]


@partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("caches",))
def _verify(
    graphdef: Any, state: Any, tok: Array, draft: Array, pos: Array, caches: Caches
) -> tuple[Caches, Array, Array]:
    model = nnx.merge(graphdef, state)
    cache, mtp_cache = caches
    # One pass of the main model over [tok, draft] at pos, pos + 1 (the rows' cache lengths).
    pair = jnp.stack([tok, draft], axis=1)
    hidden, cache = model.cached_trunk(pair, cache, pos, extend=True)
    greedy = _greedy(model, hidden)  # [b, 2]: after `tok` (always right), after the draft
    accepted = greedy[:, 0] == draft
    # Depth 1 at pos reads t_{pos+1} = greedy[:, 0]; at pos + 1 (used when accepted) t_{pos+2}
    # = greedy[:, 1]: one pass of the MTP block too. A rejected draft's rows (pos + 1, in both
    # caches) lie past the length the next step starts from: hidden by position, overwritten.
    positions = pos[:, None] + jnp.arange(2, dtype=jnp.int32)
    drafts, mtp_cache = _draft(
        model, hidden, greedy, positions, cache=mtp_cache, cache_pos=pos, extend=True
    )
    return (cache, mtp_cache), greedy, jnp.where(accepted, drafts[:, 1], drafts[:, 0])


def generate_speculative(
    model: DecoderLM,
    prompts: Any,
    *,
    max_new_tokens: int,
    eos_id: int | None = None,
    prompt_lengths: Any = None,
    pad_id: int | None = None,
) -> Speculation:
    """Greedy decoding of ``model`` drafted by its MTP depth 1 and verified by the main model.

    What it caches: the main model's KV cache (as `tjx.nn.generate`) and one of the MTP block's
    own, both written slot = position. Nothing is recomputed from the prompt: the prefill runs
    the prompt once through the stack (its pre-norm output ``h^0`` feeds the MTP prefill) and
    each step then runs, in one jitted call, one two-token decode pass of the main model over
    the last token and the draft (positions ``p`` and ``p + 1``; the draft is accepted when the
    main model's choice at ``p`` is the draft) and one two-token pass of the MTP block (the
    next draft for either outcome). Each row's cache length moves past its accepted tokens
    only: a rejected draft's row at ``p + 1`` lies past it, so no query sees it (masked by
    position) and the next pass overwrites it. So each step emits one or two tokens for one
    read of the main model's weights, one program call and host round trip; greedy decoding
    spends one of each per token. Whether that is faster depends on the acceptance rate and on
    how far a two-token pass costs more than a one-token one (``tools/bench_speculative.py``
    measures both on one model and prompt).

    Parameters
    ----------
    model : DecoderLM
        A model with ``mtp.depths >= 1`` (depth 1 drafts).
    prompts, prompt_lengths, pad_id, eos_id, max_new_tokens
        As `tjx.nn.generate`'s (greedy: no sampling settings).

    Returns
    -------
    Speculation
        The tokens (equal to ``generate(model, ..., temperature=0)``'s), the drafts' counts and
        the verification passes.

    Raises
    ------
    ValueError
        A model without an MTP module, or a bad argument as `tjx.nn.generate` names it.
    """
    if not isinstance(model, DecoderLM) or model.mtp is None:
        raise ValueError(
            "generate_speculative drafts with the model's multi-token-prediction module: it "
            "needs a DecoderLM with mtp.depths >= 1 (use generate otherwise)"
        )
    if "delta" in model.config.layer_mixers():
        # A verification pass steps each delta layer's state over the draft too; a rejected
        # draft would need that state rolled back, which the delta cache cannot do.
        raise ValueError(
            "generate_speculative: delta layers (mixer_pattern) keep a running state that a "
            "rejected draft cannot roll back; decode this model with generate"
        )
    arr, lengths = check_tokens(
        prompts,
        prompt_lengths,
        name="prompts",
        lengths_name="prompt_lengths",
        empty_fix="every row needs at least one token to condition on; start it with a BOS token",
    )
    check_sampling(max_new_tokens, 0.0, None, None)
    b, P = arr.shape
    total = P + max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(
            f"prompt length {P} + max_new_tokens {max_new_tokens} = {total} exceeds the "
            f"model's max_seq_len={model.config.max_seq_len}"
        )
    if b == 0:
        return Speculation(jnp.zeros((0, total), jnp.int32), 0, 0, 0)
    fill = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
    graphdef, state = nnx.split(model)
    mtp_cache = {k: v[0] for k, v in init_cache(model.config, b, total, num_layers=1).items()}
    caches, first, draft = _prefill(
        graphdef,
        state,
        jnp.asarray(arr),
        jnp.asarray(lengths),
        (model.init_cache(b, total), mtp_cache),
    )
    out = np.full((b, total), fill, np.int32)
    for r in range(b):
        out[r, : lengths[r]] = arr[r, : lengths[r]]
    rows = np.arange(b)
    tok, draft_np = np.asarray(first), np.asarray(draft)
    pos = lengths.copy()  # slot of `tok`, the last emitted token (not yet in the cache)
    out[rows, pos] = tok
    emitted = np.ones((b,), np.int64)
    done = emitted >= max_new_tokens
    if eos_id is not None:
        done |= tok == eos_id
    drafted = accepted = passes = 0
    while not done.all():
        caches, greedy, nxt = _verify(
            graphdef, state, jnp.asarray(tok), jnp.asarray(draft_np), jnp.asarray(pos), caches
        )
        passes += 1
        greedy_np, nxt = np.asarray(greedy), np.asarray(nxt)
        g_a, g_b = greedy_np[:, 0], greedy_np[:, 1]
        live = ~done
        room = live & (emitted <= max_new_tokens - 2)  # the draft's token could be emitted
        hit = g_a == draft_np
        drafted += int(room.sum())
        accepted += int((room & hit).sum())
        out[rows[live], pos[live] + 1] = g_a[live]
        emitted += live
        stop = live & (g_a == eos_id) if eos_id is not None else np.zeros((b,), bool)
        two = room & hit & ~stop
        out[rows[two], pos[two] + 2] = g_b[two]
        emitted += two
        if eos_id is not None:
            stop |= two & (g_b == eos_id)
        # The cache length moves past the accepted tokens only: a rejected draft's row is
        # rewritten by the next pass. A finished row keeps its position (its later writes land
        # in slots it no longer reads).
        step = np.where(live, 1 + two, 0)
        tok = np.where(two, g_b, np.where(live, g_a, tok)).astype(np.int32)
        pos = pos + step
        draft_np = np.where(live, nxt, draft_np).astype(np.int32)
        done = done | stop | (emitted >= max_new_tokens)
    return Speculation(jnp.asarray(out), drafted, accepted, passes)
