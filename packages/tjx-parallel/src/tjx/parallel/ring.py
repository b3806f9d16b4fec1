"""Attention over a sequence split across the ``context`` axis: the per-device program.

Runs inside ``shard_map`` (see :mod:`tjx.parallel.context`), on each device's two mirrored chunks
(:mod:`tjx.parallel.context_layout`: device ``r`` holds chunks ``r`` and ``2C - 1 - r`` of ``c``
tokens each). The keys/values of every device reach every other one, ``C`` blocks in all:

* ``ring``: each step passes the block along the ring (``ppermute`` to the next device), so step
  ``t`` holds the block of device ``r - t``; a device holds one block at a time;
* ``all_gather``: one ``all_gather`` brings every block, step ``t`` reads the one of ``r - t``.

Causal work per step is the same on every device: step 0 is the device's own block (causal on the
local order, which is the global order of its tokens); at step ``t > 0`` a block from a device
``src < r`` is seen whole by both local chunks in its first chunk only, and a block from
``src > r`` is seen whole by the local second chunk only — ``2c × c`` logits either way, chosen by
``lax.cond`` on the device's own index. Each step's partial output is merged by its rows'
log-sum-exp (an online softmax).

The gradient is a ``custom_vjp``: the forward keeps only its own q/k/v, the merged output and
log-sum-exp; the backward walks the blocks again, each block's backward recomputing its
probabilities from the merged log-sum-exp (FlashAttention-2's backward), and the blocks' dK/dV
travel back to their devices (ring: with the block, one more ``ppermute`` at the end;
all-gather: one ``psum_scatter``).

The block computations are the caller's (``forward``/``backward`` with the contract of
``tjx.kernels.attention_forward``/``attention_backward``): this package does not import a kernel.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
#: ``forward(q, k, v, *, causal, segment_ids, scale, window, token_index) -> (out, lse)``.
BlockForward = Callable[..., tuple[Array, Array]]
#: ``backward(q, k, v, out, lse, d_out, *, causal, segment_ids, scale, window, token_index)
#: -> (dq, dk, dv)``.
BlockBackward = Callable[..., tuple[Array, Array, Array]]


@dataclasses.dataclass(frozen=True)
class RingConfig:
    """The static description of one context-parallel attention call."""

    axis: str
    ways: int
    strategy: str
    causal: bool
    scale: float
    window: int | None
    forward: BlockForward
    backward: BlockBackward


def _chunk_index(cfg: RingConfig, device: Array, c: int) -> Array:
    """Global token indices ``[2c]`` of ``device``'s two chunks."""
    local = jnp.arange(c, dtype=jnp.int32)
    late = 2 * cfg.ways - 1 - device
    return jnp.concatenate([device * c + local, late * c + local])


def _kw(cfg: RingConfig, diagonal: bool, ids: Any, index: Any) -> dict[str, Any]:
    """Keyword arguments of one block call. With a window the masks come from the tokens'
    indices (``token_index``); without one, the device's own block (``diagonal``) is causal on
    its local order and every other block the caller passes is seen whole."""
    indexed = cfg.window is not None
    return dict(
        causal=cfg.causal and (diagonal or indexed),
        segment_ids=ids,
        scale=cfg.scale,
        window=cfg.window,
        token_index=index if cfg.window is not None else None,
    )


def _pair(q_ids: Array | None, kv_ids: Array | None) -> tuple[Array, Array] | None:
    return None if q_ids is None or kv_ids is None else (q_ids, kv_ids)


def _sl(x: Array | None, part: slice) -> Array | None:
    return None if x is None else x[:, part]


def _pad_rows(x: Array, c: int, value: float, first: bool, axis: int = 1) -> Array:
    """``x`` with ``c`` rows of ``value`` before (``first``) or after it along ``axis``."""
    shape = list(x.shape)
    shape[axis] = c
    fill = jnp.full(shape, value, x.dtype)
    return jnp.concatenate([fill, x] if first else [x, fill], axis=axis)


def _merge(o: Array, lse: Array, o_t: Array, lse_t: Array) -> tuple[Array, Array]:
    """Online-softmax merge of two partial attentions (``o`` float32 [b, s, h, d], ``lse``
    [b, h, s]); a row no block has seen stays 0 with lse ``-inf``."""
    new = jnp.logaddexp(lse, lse_t)
    empty = new == -jnp.inf

    def weight(x: Array) -> Array:
        w = jnp.where(empty, 0.0, jnp.exp(x - jnp.where(empty, 0.0, new)))
        return jnp.swapaxes(w, 1, 2)[..., None]

    return o * weight(lse) + o_t.astype(jnp.float32) * weight(lse_t), new


class _Blocks:
    """Where step ``t``'s keys/values (and key segment ids) come from, per strategy."""

    def __init__(self, cfg: RingConfig, *arrays: Array | None) -> None:
        self.cfg, self.arrays = cfg, list(arrays)
        self.gathered = (
            [None if a is None else lax.all_gather(a, cfg.axis) for a in arrays]
            if cfg.strategy == "all_gather"
            else None
        )

    def step(self, t: int, src: Array) -> list[Array | None]:
        if self.gathered is None:  # ring: pass the block one device on
            perm = [(j, (j + 1) % self.cfg.ways) for j in range(self.cfg.ways)]
            self.arrays = [None if a is None else lax.ppermute(a, self.cfg.axis, perm) for a in
                           self.arrays]  # fmt: skip
            return self.arrays
        return [
            None if g is None else lax.dynamic_index_in_dim(g, src, 0, keepdims=False)
            for g in self.gathered
        ]


def _forward(
    cfg: RingConfig, q: Array, k: Array, v: Array, ids: Array | None
) -> tuple[Array, Array]:
    """Merged (output float32, lse) of the local queries against every device's keys."""
    r = lax.axis_index(cfg.axis)
    c = q.shape[1] // 2
    own = _chunk_index(cfg, r, c)
    o, lse = cfg.forward(q, k, v, **_kw(cfg, True, _pair(ids, ids), (own, own)))
    o = o.astype(jnp.float32)
    blocks = _Blocks(cfg, k, v, ids)
    for t in range(1, cfg.ways):
        src = (r - t) % cfg.ways
        kb, vb, kid = blocks.step(t, src)
        assert kb is not None and vb is not None
        theirs = _chunk_index(cfg, src, c)
        if not cfg.causal:
            o_t, lse_t = cfg.forward(q, kb, vb, **_kw(cfg, False, _pair(ids, kid), (own, theirs)))
        else:
            o_t, lse_t = lax.cond(
                r >= t,
                functools.partial(_first_half, cfg),
                functools.partial(_second_half, cfg),
                q, kb, vb, ids, kid, own, theirs,
            )  # fmt: skip
        o, lse = _merge(o, lse, o_t, lse_t)
    return o, lse


def _first_half(cfg: RingConfig, q: Array, kb: Array, vb: Array, ids: Any, kid: Any,
                own: Array, theirs: Array) -> tuple[Array, Array]:  # fmt: skip
    """A block from an earlier device: every local query sees its first chunk, none its second."""
    c = q.shape[1] // 2
    first = slice(0, c)
    kw = _kw(cfg, False, _pair(ids, _sl(kid, first)), (own, theirs[first]))
    o, lse = cfg.forward(q, kb[:, first], vb[:, first], **kw)
    return o.astype(jnp.float32), lse


def _second_half(cfg: RingConfig, q: Array, kb: Array, vb: Array, ids: Any, kid: Any,
                 own: Array, theirs: Array) -> tuple[Array, Array]:  # fmt: skip
    """A block from a later device: only the local second chunk sees it, all of it."""
    c = q.shape[1] // 2
    late = slice(c, 2 * c)
    kw = _kw(cfg, False, _pair(_sl(ids, late), kid), (own[late], theirs))
    o, lse = cfg.forward(q[:, late], kb, vb, **kw)
    o = _pad_rows(o.astype(jnp.float32), c, 0.0, first=True)
    return o, _pad_rows(lse, c, -jnp.inf, first=True, axis=2)


def _backward(
    cfg: RingConfig, res: tuple[Any, ...], d_out: Array
) -> tuple[Array, Array, Array, None]:
    q, k, v, ids, out, lse = res
    # The walk below repeats the forward's ppermutes / all_gather of the same k and v: left
    # alone, XLA would merge them with the forward's and keep every block alive from the forward
    # to here (all C blocks per layer, the memory a ring exists to avoid). A barrier makes them
    # new values, so the backward passes the blocks around again instead.
    k, v, ids = lax.optimization_barrier((k, v, ids))
    r = lax.axis_index(cfg.axis)
    c = q.shape[1] // 2
    own = _chunk_index(cfg, r, c)
    f32 = jnp.float32
    dq, dk, dv = cfg.backward(
        q, k, v, out, lse, d_out, **_kw(cfg, True, _pair(ids, ids), (own, own))
    )
    dq, dk, dv = dq.astype(f32), dk.astype(f32), dv.astype(f32)
    gathered = cfg.strategy == "all_gather"
    if gathered:  # every block's dK/dV, summed into their owners by one psum_scatter at the end
        acc_k = jnp.zeros((cfg.ways, *k.shape), f32)
        acc_v = jnp.zeros((cfg.ways, *v.shape), f32)
        acc_k = lax.dynamic_update_index_in_dim(acc_k, dk, r, 0)
        acc_v = lax.dynamic_update_index_in_dim(acc_v, dv, r, 0)
    blocks = _Blocks(cfg, k, v, ids)
    perm = [(j, (j + 1) % cfg.ways) for j in range(cfg.ways)]
    for t in range(1, cfg.ways):
        src = (r - t) % cfg.ways
        kb, vb, kid = blocks.step(t, src)
        assert kb is not None and vb is not None
        theirs = _chunk_index(cfg, src, c)
        args = (q, kb, vb, ids, kid, own, theirs, out, lse, d_out)
        if not cfg.causal:
            kw = _kw(cfg, False, _pair(ids, kid), (own, theirs))
            gq, gk, gv = cfg.backward(q, kb, vb, out, lse, d_out, **kw)
            g = (gq.astype(f32), gk.astype(f32), gv.astype(f32))
        else:
            first, second = (
                functools.partial(f, cfg) for f in (_first_half_grads, _second_half_grads)
            )
            g = lax.cond(r >= t, first, second, *args)
        dq = dq + g[0]
        if gathered:
            acc_k = _add_at(acc_k, g[1], src)
            acc_v = _add_at(acc_v, g[2], src)
        else:  # the block's gradient travels with it
            dk, dv = (lax.ppermute(x, cfg.axis, perm) for x in (dk, dv))
            dk, dv = dk + g[1], dv + g[2]
    if gathered:
        dk = lax.psum_scatter(acc_k, cfg.axis, scatter_dimension=0)
        dv = lax.psum_scatter(acc_v, cfg.axis, scatter_dimension=0)
    elif cfg.ways > 1:  # after C - 1 steps a device holds the gradient of device r + 1's block
        dk, dv = (lax.ppermute(x, cfg.axis, perm) for x in (dk, dv))
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


def _add_at(acc: Array, x: Array, i: Array) -> Array:
    return lax.dynamic_update_index_in_dim(acc, lax.dynamic_index_in_dim(acc, i, 0) + x[None], i, 0)


def _first_half_grads(cfg: RingConfig, q: Array, kb: Array, vb: Array, ids: Any, kid: Any,
                      own: Array, theirs: Array, out: Array, lse: Array,
                      d_out: Array) -> tuple[Array, Array, Array]:  # fmt: skip
    c = q.shape[1] // 2
    first = slice(0, c)
    kw = _kw(cfg, False, _pair(ids, _sl(kid, first)), (own, theirs[first]))
    dq, dk, dv = cfg.backward(q, kb[:, first], vb[:, first], out, lse, d_out, **kw)
    f32 = jnp.float32
    pad = functools.partial(_pad_rows, c=c, value=0.0, first=False)
    return dq.astype(f32), pad(dk.astype(f32)), pad(dv.astype(f32))


def _second_half_grads(cfg: RingConfig, q: Array, kb: Array, vb: Array, ids: Any, kid: Any,
                       own: Array, theirs: Array, out: Array, lse: Array,
                       d_out: Array) -> tuple[Array, Array, Array]:  # fmt: skip
    c = q.shape[1] // 2
    late = slice(c, 2 * c)
    kw = _kw(cfg, False, _pair(_sl(ids, late), kid), (own[late], theirs))
    dq, dk, dv = cfg.backward(
        q[:, late], kb, vb, out[:, late], lse[:, :, late], d_out[:, late], **kw
    )
    f32 = jnp.float32
    return _pad_rows(dq.astype(f32), c, 0.0, first=True), dk.astype(f32), dv.astype(f32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def ring_attention(cfg: RingConfig, q: Array, k: Array, v: Array, ids: Array | None) -> Array:
    """The local output ``[b, 2c, h, d]`` of context-parallel attention (inside ``shard_map``).

    Parameters
    ----------
    cfg : RingConfig
        Axis, its size, strategy, mask, scale and the block functions.
    q, k, v : Array
        This device's queries and keys/values (its two chunks, in layout order).
    ids : Array, optional
        int ``[b, 2c]`` segment ids of its tokens (0 = padding), or None.
    """
    o, _ = _forward(cfg, q, k, v, ids)
    return o.astype(q.dtype)


def _vjp_forward(
    cfg: RingConfig, q: Array, k: Array, v: Array, ids: Array | None
) -> tuple[Array, tuple[Any, ...]]:
    o, lse = _forward(cfg, q, k, v, ids)
    out = o.astype(q.dtype)
    return out, (q, k, v, ids, out, lse)


ring_attention.defvjp(_vjp_forward, _backward)
