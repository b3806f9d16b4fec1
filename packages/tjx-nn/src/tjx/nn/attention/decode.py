"""An attention layer's steps around its KV cache: a prompt's keys and values (or latents) written
from slot 0, a decode step of one or more tokens attending over the cache (a rolling one of the
window's size, MLA's latents, DeepSeek's absorbed form, the top-k keys of
``attention.decode_topk``), and a layer of ``kv_shared_layers`` attending to another layer's keys
and values. `tjx.nn.attention.Attention`'s call runs them.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

from tjx import kernels
from tjx.nn import mla as ds
from tjx.nn.attention.positions import LayerPositions, Local
from tjx.nn.attention.projections import normed
from tjx.nn.kv_cache import LayerCache, last_real, step_visible, topk_decode_attention, write_step
from tjx.nn.linear import Dense
from tjx.nn.norms import RMSNorm
from tjx.nn.positions import alibi_bias
from tjx.nn.rope_scaling import RopeScaling
from tjx.nn.sequence import current_sequence_parallel

Array = jax.Array


class CachedLayer(Protocol):
    """What these steps read of their attention layer (`tjx.nn.attention.Attention`)."""

    position: str | None
    positions: LayerPositions
    window: int | None
    chunk: int | None
    deepseek: bool
    decode_topk: int | None
    num_heads: int
    scale: float
    softcap: float | None
    qk_scope: str
    kernel: kernels.AttentionKernel
    kv_down: Dense | None
    key: Dense | None
    value: Dense | None
    k_norm: RMSNorm | None

    def _sinks(self) -> Array | None: ...

    def _mask(self, mask: kernels.AttentionMask, near: bool) -> kernels.AttentionMask: ...

    def _kernel(
        self, q: Array, k: Array, v: Array, *, kernel: kernels.AttentionKernel, **kw: Any
    ) -> Array: ...

    def _windowed(self, local: Local, attend: Any) -> Array: ...

    def _keys_values(
        self,
        src: Array,
        positions: Array | None,
        lora_rng: Array | None = None,
        local: Local = None,
    ) -> tuple[Array, Array]: ...


def shared_layer(
    attn: CachedLayer,
    q: Array,
    shared: LayerCache | None,
    mask: kernels.AttentionMask,
    positions: Array,
    decoding: bool,
    local: Local,
    drop: float,
    rng: Array | None,
) -> Array:
    """Attend to another layer's keys and values (``kv_shared_layers``): the whole call's,
    with this layer's mask, or while decoding the ones its source attended over, by their
    positions (``shared["pos"]``) with this layer's window."""
    if shared is None:
        raise ValueError(
            "this layer reads an earlier layer's keys and values (kv_shared_layers); call it "
            "through its stack, which hands them over"
        )
    if current_sequence_parallel() is not None:
        raise ValueError(
            "kv_shared_layers are not supported under sequence_parallel; train without it"
        )
    k, v = shared["k"].astype(q.dtype), shared["v"].astype(q.dtype)
    if not decoding:
        return attn._windowed(
            local,
            lambda near: attn._kernel(
                q, k, v, kernel=attn.kernel, mask=attn._mask(mask, near),
                dropout_rate=drop, dropout_rng=rng,
            ),
        )  # fmt: skip
    visible = step_visible(shared["pos"], positions, window=attn.window, local=local)
    return kernels.attention(
        q,
        k,
        v,
        mask=kernels.AttentionMask(sinks=attn._sinks()),
        scale=attn.scale,
        softcap=attn.softcap,
        implementation="xla",
        bias=_masked(visible),
    )


def write_prefill(new: dict[str, Array], cache: LayerCache, lengths: Array | None) -> LayerCache:
    """``new``'s arrays (keys and values, or latents) of a prompt written from slot 0."""
    slots = jax.tree.leaves(cache)[0].shape[1]
    # A rolling cache shorter than the prompt keeps its last real tokens.
    if jax.tree.leaves(new)[0].shape[1] > slots:
        new = last_real(new, slots, lengths)
    put = jax.lax.dynamic_update_slice_in_dim
    return {n: put(cache[n], a.astype(cache[n].dtype), 0, 1) for n, a in new.items()}


def decode_step(
    attn: CachedLayer,
    x: Array,
    q: Array,
    positions: Array,
    cache: LayerCache,
    cache_pos: Array,
    bias: Array | None,
    local: Local,
    kv_out: LayerCache | None,
) -> tuple[Array, LayerCache]:
    """A decode step of ``s >= 1`` tokens at ``positions`` (``cache_pos + i``): their keys
    and values (or latents) written into the cache, each query attending causally to the
    cache's earlier positions and the step's own (`tjx.nn.kv_cache.write_step`)."""
    s = x.shape[1]
    t = jax.tree.leaves(cache)[0].shape[1]
    if s > 1 and attn.position == "rope" and _length_dependent(attn.positions.rope_scaling):
        raise ValueError(
            "a decode step of several tokens rotates them at one length, but this model's "
            "rope_scaling (dynamic or longrope) turns its frequencies with the length; "
            "decode one token per step (generate)"
        )
    # A rolling cache (the window's size) would lose keys the step's earlier tokens see.
    rolling = attn.window is not None and t <= attn.window
    finish = None  # DeepSeek's absorbed form: the value up-projection after attending
    if attn.deepseek:
        cache, held, q, k, v, finish = ds.decode_step(
            attn, x, q, positions, cache, cache_pos, local, rolling=rolling
        )
    elif "latent" in cache:
        assert attn.kv_down is not None and attn.key is not None and attn.value is not None
        new = {"latent": attn.kv_down(x)}
        cache, seen, held = write_step(cache, new, cache_pos, rolling=rolling)
        latent = seen["latent"].astype(q.dtype)
        k, v = normed(attn.k_norm, attn.qk_scope, attn.key(latent)), attn.value(latent)
        if attn.position == "rope":  # each cached key at its own position (right padding)
            k = attn.positions.apply(k, jnp.maximum(held, 0), local, jnp.max(cache_pos) + s)
    else:
        k_new, v_new = attn._keys_values(x, positions, local=local)
        new = {"k": k_new, "v": v_new}
        cache, seen, held = write_step(cache, new, cache_pos, rolling=rolling)
        k, v = seen["k"].astype(q.dtype), seen["v"].astype(q.dtype)
        if kv_out is not None:
            kv_out.update(k=seen["k"], v=seen["v"], pos=held)
    if attn.position == "alibi":
        bias = add_bias(bias, alibi_bias(positions, jnp.maximum(held, 0), attn.num_heads))
    visible = step_visible(held, positions, window=attn.window, chunk=attn.chunk, local=local)
    if attn.decode_topk is not None and attn.decode_topk < k.shape[1]:
        out = topk_decode_attention(
            q,
            k,
            v,
            kv_mask=visible,
            topk=attn.decode_topk,
            bias=bias,
            scale=attn.scale,
            softcap=attn.softcap,
        )
    else:
        # A few queries per row: the XLA path (fused kernels target long query blocks).
        out = kernels.attention(
            q,
            k,
            v,
            mask=kernels.AttentionMask(sinks=attn._sinks()),
            scale=attn.scale,
            softcap=attn.softcap,
            implementation="xla",
            bias=add_bias(bias, _masked(visible)),
        )
    return (out if finish is None else finish(out)), cache


def _masked(visible: Array) -> Array:
    """float32 ``[b, 1, s, K]``: 0 where a query sees a key, ``-inf`` (the kernels' mask value)
    where not, as an additive bias (each query its own mask: a decode step of several tokens)."""
    return jnp.where(visible, 0.0, -jnp.inf).astype(jnp.float32)[:, None]


def _length_dependent(scaling: Any) -> bool:
    """Whether a RoPE scaling turns its frequencies with the call's length (dynamic, longrope)."""
    parsed = RopeScaling.parse(scaling)
    return parsed is not None and parsed.depends_on_length


def add_bias(bias: Array | None, extra: Array) -> Array:
    """``bias + extra`` where ``bias`` may be absent."""
    return extra if bias is None else bias + extra
