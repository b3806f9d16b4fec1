"""cuDNN attention for packed batches without an ``s × s`` mask.

A packed row holds several documents, each a contiguous run of one segment id (0 = padding);
tokens attend within their run. cuDNN takes that layout natively, so the dense ``[b, 1, s, s]``
mask (a bias inside cuDNN, read every layer, and a ``dbias`` of the same size written back) is
only the fallback. Per batch, at run time (``lax.switch`` of two branches, one executed):

* the cheap branch, by GPU generation:

  - ``packed`` (Hopper and later, where cuDNN has the layout): every row holds at most
    ``max_segments`` runs and no id comes back in a later run — cuDNN's packed layout, segment
    starts and lengths ``[b, M]`` (a row of one document is one run);
  - ``single`` (before Hopper): every row is at most one run from column 0, then padding —
    plain causal (or full) attention with per-row lengths (``jax.nn.dot_product_attention``'s
    ``query_seq_lengths``); cuDNN zeroes the padded rows itself;

* ``dense``: anything else — the boolean mask, as before. Its forward is recomputed in its
  backward (``jax.checkpoint``), so its mask is never a residual the cheap branch must carry
  (``lax.switch`` saves the union of its branches' residuals).

Padding rows (id 0) are zeros (the tjx convention: they see no key) in every branch, with zero
gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tjx.kernels._jax_private import install_capability_hook, packed_attention
from tjx.kernels.choice import Target
from tjx.kernels.mask import AttentionMask

Array = jax.Array

#: Runs per row the packed branch takes (a static size: cuDNN's segment count is ``b × M``).
#: Rows with more use the dense branch. Not measured on a GPU: each empty slot is a sequence
#: of length 0 to cuDNN, so a larger M costs launch slots, not memory traffic.
DEFAULT_MAX_SEGMENTS = 8

#: The scope that marks the branch packed batches take (tjx-metrics' roofline counts that
#: branch of the switch when it estimates a step; the same name as its ``LIKELY_BRANCH``).
LIKELY_BRANCH = "likely_branch"


def segment_runs(ids: Array, max_segments: int) -> tuple[Array, Array, Array, Array]:
    """The runs of equal segment ids in each row (padding runs included).

    Every token is in exactly one run, so the packed layout leaves no token unspecified: a run
    of padding is a segment of its own, whose queries see only padding (their outputs are
    zeroed afterwards, which also makes their gradients exactly zero).

    Parameters
    ----------
    ids : Array
        int ``[b, s]`` segment ids (0 = padding).
    max_segments : int
        Slots per row (``M``).

    Returns
    -------
    (offsets, lengths, count, distinct)
        ``offsets`` int32 ``[b, M + 1]``: start column of each run, -1 after the last (cuDNN's
        packed layout, as ``fused_attention_stablehlo.dot_product_attention`` takes it);
        ``lengths`` int32 ``[b, M]``: run lengths, -1 padded; ``count`` int32 ``[b]``: runs per
        row (may exceed ``M``: then the row does not fit); ``distinct`` bool ``[b]``: every run
        of a nonzero id has an id no earlier run had (so "same run" means "same segment").
    """
    b, s = ids.shape
    prev = jnp.concatenate([ids[:, :1], ids[:, :-1]], axis=1)
    nxt = jnp.concatenate([ids[:, 1:], ids[:, -1:]], axis=1)
    col = jnp.arange(s, dtype=jnp.int32)
    start = (ids != prev) | (col == 0)[None, :]
    end = (ids != nxt) | (col == s - 1)[None, :]
    slots = jnp.arange(max_segments, dtype=jnp.int32)

    def nth(flags: Array) -> Array:  # [b, M]: column of the m-th flag, -1 if none
        rank = jnp.cumsum(flags, axis=1, dtype=jnp.int32) - 1
        hit = flags[:, None, :] & (rank[:, None, :] == slots[None, :, None])
        return jnp.max(jnp.where(hit, col[None, None, :], -1), axis=2)

    starts, ends = nth(start), nth(end)
    lengths = jnp.where(starts >= 0, ends - starts + 1, -1)
    offsets = jnp.concatenate([starts, jnp.full((b, 1), -1, jnp.int32)], axis=1)
    count = jnp.sum(start, axis=1, dtype=jnp.int32)
    # A nonzero run's id must exceed every id before it: then no id comes back in a later run.
    seen = jax.lax.cummax(jnp.where(col[None, :] == 0, 0, prev), axis=1)
    distinct = jnp.all(~start | (ids == 0) | (ids > seen), axis=1)
    return offsets, lengths, count, distinct


def branch_index(ids: Array, *, max_segments: int, packed_ok: bool) -> tuple[Array, Array, Array]:
    """(0 for the cheap branch, 1 for the dense one; offsets; lengths) of a batch of
    self-attention segment ids. The cheap branch is ``packed`` on Hopper and later (rows of at
    most ``max_segments`` runs, each id in one run), ``single`` before (at most one run per row,
    from column 0)."""
    offsets, lengths, count, distinct = segment_runs(ids, max_segments)
    if packed_ok:
        fits = jnp.all((count <= max_segments) & distinct)
    else:  # one run (a document, or padding), or a document from column 0 then padding
        fits = jnp.all((count == 1) | ((count == 2) & (ids[:, 0] != 0) & (ids[:, -1] == 0)))
    return jnp.where(fits, 0, 1).astype(jnp.int32), offsets, lengths


@jax.custom_vjp
def _zero_rows(x: Array, keep: Array) -> Array:
    """``x`` [b, s, ...] with the rows where ``keep`` [b, s] is False set to 0; the gradient is cut
    there too. Its residual is ``keep`` itself (a ``jnp.where`` would save the broadcast mask)."""
    return jnp.where(keep.reshape(keep.shape + (1,) * (x.ndim - 2)), x, jnp.zeros((), x.dtype))


def _zero_rows_fwd(x: Array, keep: Array) -> tuple[Array, Array]:
    return _zero_rows(x, keep), keep


def _zero_rows_bwd(keep: Array, g: Array) -> tuple[Array, None]:
    return _zero_rows(g, keep), None


_zero_rows.defvjp(_zero_rows_fwd, _zero_rows_bwd)


def segment_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: AttentionMask,
    *,
    scale: float,
    target: Target,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
) -> Array:
    """cuDNN attention of a packed batch: ``mask``'s self-attention segment ids ``[b, s]`` (one
    array, 0 = padding), its causal flag and window (no key lengths, chunk or sinks).

    See the module docstring for the branches. ``q`` ``[b, s, h, d]``, ``k``/``v``
    ``[b, s, h_kv, d]``; returns ``[b, s, h, d]`` in ``q``'s dtype. The window (causal only, as
    cuDNN's own sliding window): a query sees its ``window`` latest keys, itself included; runs
    are contiguous, so the distance within a segment is the distance in the row.
    """
    causal, window = mask.causal, mask.window
    if mask.segment_ids is None or isinstance(mask.segment_ids, tuple | list):
        raise ValueError("segment_attention: `mask.segment_ids` must be one [batch, seq] array")
    if mask.kv_lengths is not None or mask.chunk is not None or mask.sinks is not None:
        raise ValueError(
            "segment_attention: `mask` takes segment ids, causal and window only (no key "
            "lengths, chunk or sinks); use tjx.kernels.attention"
        )
    ids = jnp.asarray(mask.segment_ids, jnp.int32)
    if window is not None and not causal:
        raise ValueError("segment_attention: cuDNN's sliding window needs causal=True")
    local = None if window is None else (window - 1, 0)
    install_capability_hook()  # jax's own checks see `target` when cross-lowering for it
    packed_ok = target.compute_capability is not None and target.compute_capability >= (9, 0)
    index, offsets, lengths = branch_index(ids, max_segments=max_segments, packed_ok=packed_ok)
    keep = ids != 0

    def single(q: Array, k: Array, v: Array) -> Array:
        n = jnp.sum(keep, axis=1, dtype=jnp.int32)
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            scale=scale,
            is_causal=causal,
            query_seq_lengths=n,
            key_value_seq_lengths=n,
            local_window_size=local,
            implementation="cudnn",
        )

    def packed(q: Array, k: Array, v: Array) -> Array:
        # Every token is in a run (padding runs too), so cuDNN writes every output and gradient.
        out = packed_attention(
            q,
            k,
            v,
            lengths=lengths,
            offsets=offsets,
            causal=causal,
            scale=scale,
            target=target,
            window=window,
        )
        return _zero_rows(out, keep)

    @jax.checkpoint  # its mask is recomputed, never a residual the other branches must carry
    def dense(q: Array, k: Array, v: Array) -> Array:
        same = ((ids[:, :, None] == ids[:, None, :]) & (ids[:, None, :] != 0))[:, None]
        out = jax.nn.dot_product_attention(
            q,
            k,
            v,
            mask=same,
            scale=scale,
            is_causal=causal,
            local_window_size=local,
            implementation="cudnn",
        )
        return _zero_rows(out, keep)  # a padding row sees nothing: zeros

    cheap = packed if packed_ok else single

    def likely(q: Array, k: Array, v: Array) -> Array:
        # The branch packed batches take: tjx-metrics' roofline counts it (not the fallback)
        # when it estimates a step (`LIKELY_BRANCH`).
        with jax.named_scope(LIKELY_BRANCH):
            return cheap(q, k, v)

    # One cheap branch per GPU generation (packed rows of one run are the single case), so the
    # switch's residuals are that branch's and the recomputed fallback's inputs.
    return jax.lax.switch(index, [likely, dense], q, k, v)  # type: ignore[no-any-return]
