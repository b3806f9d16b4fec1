"""Preallocated KV caches for incremental decoding, their size, and top-k sparse decode attention.

A cache is a dict of stacked arrays with a leading ``layers`` axis:
``{"k": [L, b, T, kv_heads, head_dim], "v": ...}`` for standard attention, or
``{"latent": [L, b, T, kv_latent_dim]}`` for the MLA-style compressed cache (keys and values are
up-projected from the latent at each decode step; DeepSeek's MLA adds ``"rope_key"`` ``[L, b, T,
qk_rope_head_dim]``, the rotated key its heads share; a key-selection part its own entries
``[L, b, T, width]``, ``mla.selection_cache``: DeepSeek-V3.2's indexer keys). Slot ``p mod T``
holds the token at absolute position ``p`` (prompts are right-padded, see ``generate``): while
``p < T`` slot ``t`` is position ``t``; a model whose every layer has a sliding window gets a
*rolling* cache of the window's size (``init_cache``), where a new token overwrites the one that
just left the window.
A decode step writes one token, or several (`write_step`: a speculative draft's verification),
and each of its queries sees the positions up to its own (`step_visible`), so rows past a row's
length (a rejected draft's) are never read.

A stack with Gated DeltaNet layers (``mixer_pattern``) caches its attention layers as above (the
leading axis counts them only) and its delta layers' states beside them: ``{"conv": [L_delta, b,
conv_kernel - 1, conv_dim], "recurrent": [L_delta, b, H_v, d_k, d_v]}`` (float32), a fixed size
whatever the length (`layer_cache` gives a layer its own part).

Layers of their own shape (:mod:`tjx.nn.family_config`): global layers of their own width or
key/value heads cache as ``{"global_k", "global_v"}`` ``[L_global, b, T, global_kv_heads,
global_head_dim]`` beside the others' ``k``/``v``; the ``kv_shared_layers`` cache nothing (they
read an earlier layer's).
`cache_groups` says which part each layer has, `own_cache` and `restack` cut and join them.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from tjx.kernels import soft_cap
from tjx.nn.configs import TransformerConfig
from tjx.nn.family_config import LayerShape

Array = jax.Array
LayerCache = dict[str, Array]


def init_cache(
    config: TransformerConfig,
    batch: int,
    max_len: int,
    dtype: Any = None,
    *,
    num_layers: int | None = None,
) -> dict[str, Array]:
    """Zeros cache for ``batch`` sequences of up to ``max_len`` tokens.

    ``dtype`` defaults to the config's compute dtype; ``num_layers`` to ``config.num_layers``
    (an encoder-decoder passes its decoder depth).

    Parameters
    ----------
    config : TransformerConfig
        The model's config.
    batch : int
        Rows.
    max_len : int
        Slots per row (``<= max_seq_len``).
    dtype : dtype, optional
        Cache dtype.
    num_layers : int, optional
        Cached layers (default ``config.num_layers``).

    Returns
    -------
    dict of str to Array
        ``{"k", "v"}`` ``[L, b, T, kv_heads, head_dim]`` or ``{"latent"}`` ``[L, b, T, r]``;
        ``T`` is ``max_len``, or the window when every layer is windowed and it is shorter
        (a rolling cache).
    """
    if max_len > config.max_seq_len:
        raise ValueError(
            f"cache length {max_len} exceeds the model's max_seq_len={config.max_seq_len}"
        )
    dt = dtype or config.precision.compute_dtype
    mixers = config.layer_mixers(num_layers)
    max_len = cache_slots(config, max_len, len(mixers))
    groups = _groups(config, num_layers)
    cache = _attention_cache(config, groups.count("attention"), batch, max_len, dt)
    if "global" in groups:
        shape = config.layer_shape(groups.index("global"))
        size = (groups.count("global"), batch, max_len, shape.kv_heads, shape.head_dim)
        cache |= {"global_k": jnp.zeros(size, dt), "global_v": jnp.zeros(size, dt)}
    deltas = mixers.count("delta")
    if deltas:
        assert config.delta.key_heads is not None and config.delta.value_heads is not None
        assert config.delta.key_dim is not None and config.delta.value_dim is not None
        conv = config.delta.conv_dim
        state = (config.delta.value_heads, config.delta.key_dim, config.delta.value_dim)
        cache["conv"] = jnp.zeros((deltas, batch, config.delta.conv_kernel - 1, conv), dt)
        work = jnp.promote_types(dt, jnp.float32)  # the delta rule's state stays float32
        cache["recurrent"] = jnp.zeros((deltas, batch, *state), work)
    return cache


def _attention_cache(
    config: TransformerConfig, layers: int, batch: int, slots: int, dt: Any
) -> dict[str, Array]:
    """The attention layers' part: keys and values, or MLA's latents (none without a layer)."""
    if not layers:
        return {}
    if config.attention.type == "mla":
        assert config.mla.kv_latent_dim is not None
        cache = {"latent": jnp.zeros((layers, batch, slots, config.mla.kv_latent_dim), dt)}
        if config.mla.qk_rope_head_dim is not None:  # DeepSeek's: and the shared rotated key
            cache["rope_key"] = jnp.zeros((layers, batch, slots, config.mla.qk_rope_head_dim), dt)
        for name, width in config.mla.selection_cache.items():  # a key selection's entries
            cache[name] = jnp.zeros((layers, batch, slots, width), dt)
        return cache
    assert config.num_kv_heads is not None and config.head_dim is not None
    shape = (layers, batch, slots, config.num_kv_heads, config.head_dim)
    return {"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)}


#: The cache entries of delta layers (the rest belong to attention layers).
DELTA_ENTRIES = ("conv", "recurrent")
#: The cache entries of global layers of their own geometry (``k``, ``v`` to them).
GLOBAL_ENTRIES = ("global_k", "global_v")


def cache_groups(
    mixers: tuple[str, ...],
    shapes: tuple[LayerShape, ...] | None,
    heads: tuple[int | None, int | None],
) -> tuple[str | None, ...]:
    """Each layer's part of the cache: its mixer (``"attention"``: ``k``/``v`` or MLA's
    latents; ``"delta"``), ``"global"`` for a global layer of its own width or key/value
    heads (``global_k``/``global_v``), or None for a ``kv_shared_layers`` layer (none).

    Parameters
    ----------
    mixers : tuple of str
        Each layer's mixer (``TransformerConfig.layer_mixers``).
    shapes : tuple of LayerShape or None
        Each layer's shape (``TransformerConfig.layer_shapes``); None for a stack whose layers
        are alike (an encoder-decoder's decoder): each layer's part is its mixer.
    heads : tuple of int
        The model's ``(head_dim, num_kv_heads)``: a global layer of other ones has its own part.

    Returns
    -------
    tuple of str or None
    """
    if shapes is None:
        return mixers
    apart = any(s.is_global and (s.head_dim, s.kv_heads) != heads for s in shapes)
    groups: list[str | None] = []
    for mixer, shape in zip(mixers, shapes, strict=True):
        if mixer != "attention":
            groups.append(mixer)
            continue
        groups.append(
            None if shape.kv_source is not None else "global" if apart and shape.is_global
            else "attention"
        )  # fmt: skip
    return tuple(groups)


def _groups(config: TransformerConfig, num_layers: int | None = None) -> tuple[str | None, ...]:
    """`cache_groups` of ``config``'s stack of ``num_layers`` (default ``num_layers``)."""
    mixers, shapes = config.layer_mixers(num_layers), config.layer_shapes(num_layers)
    return cache_groups(mixers, shapes, (config.head_dim, config.num_kv_heads))


def _group_of(name: str) -> str:
    if name in DELTA_ENTRIES:
        return "delta"
    return "global" if name in GLOBAL_ENTRIES else "attention"


def own_cache(cache: dict[str, Array] | None, groups: tuple[str | None, ...], i: int) -> Any:
    """Layer ``i``'s own cache (``groups``: `cache_groups`): its group's entries at its index
    among that group's layers, a global layer's under ``k``/``v``; None for a layer without."""
    group = groups[i]
    if cache is None or group is None:
        return None
    j = groups[:i].count(group)
    mine = {name: a[j] for name, a in cache.items() if _group_of(name) == group}
    return {name.removeprefix("global_"): a for name, a in mine.items()}


def restack(caches: list[Any], groups: tuple[str | None, ...]) -> dict[str, Array]:
    """The layers' caches (`own_cache`'s, updated; None for a layer without) stacked back into
    one cache: the inverse of `own_cache` over every layer."""
    named = [
        {("global_" + n if g == "global" else n): a for n, a in c.items()}
        for c, g in zip(caches, groups, strict=True)
        if c is not None
    ]
    return stack_layer_caches(named)


def layer_cache(cache: dict[str, Array] | None, mixers: tuple[str, ...], i: int) -> Any:
    """Layer ``i``'s own cache: its mixer's entries at its index among the layers of that mixer
    (every entry at ``i`` in a stack of one mixer)."""
    if cache is None:
        return None
    delta = mixers[i] == "delta"
    j = mixers[:i].count(mixers[i])
    return {name: a[j] for name, a in cache.items() if (name in DELTA_ENTRIES) == delta}


def stack_layer_caches(caches: list[dict[str, Array]]) -> dict[str, Array]:
    """The layers' caches (`layer_cache`'s, updated) stacked back entry by entry, in layer
    order: the inverse of `layer_cache` over every layer."""
    names = [name for c in caches for name in c]
    return {
        name: jnp.stack([c[name] for c in caches if name in c]) for name in dict.fromkeys(names)
    }


def segment_cache(
    cache: dict[str, Array] | None,
    mixers: tuple[str, ...],
    start: int,
    unit: tuple[str, ...],
    repeats: int,
) -> dict[str, Array] | None:
    """A scanned stack's segment's share of ``cache`` (``mixers``: every layer's; the segment:
    ``repeats`` units of ``unit``'s mixers from layer ``start``), each entry ``[repeats, its
    mixer's layers per unit, ...]``: the rows of the segment's layers of that mixer (entries of a
    mixer the segment has none of are left out)."""
    if cache is None:
        return None
    out = {}
    for name, a in cache.items():
        mixer = "delta" if name in DELTA_ENTRIES else "attention"
        per = unit.count(mixer)
        if per:
            first = mixers[:start].count(mixer)
            rows = a[first : first + per * repeats]
            out[name] = rows.reshape(repeats, per, *a.shape[1:])
    return out


def concat_layer_caches(caches: list[dict[str, Array]]) -> dict[str, Array]:
    """Segments' caches (in layer order, each entry with its rows in layer order) joined entry by
    entry: the inverse of `segment_cache` over every segment."""
    names = dict.fromkeys(name for c in caches for name in c)
    return {name: jnp.concatenate([c[name] for c in caches if name in c]) for name in names}


def cache_slots(config: TransformerConfig, max_len: int, num_layers: int | None = None) -> int:
    """Slots per row of a cache for ``max_len`` tokens: the window when every layer has one and
    it is shorter (a rolling cache), else ``max_len`` (a layer of a mixed
    ``attention.window_pattern`` that attends to everything needs every slot)."""
    windows = config.layer_windows(num_layers)
    if windows and all(w is not None for w in windows):
        return min(max_len, max(w for w in windows if w is not None))
    return max_len


def slot_positions(cache_pos: Array, slots: int) -> Array:
    """int32 ``[b, slots]``: the position each slot holds once row ``r`` has written position
    ``cache_pos[r]`` (the latest ``p <= cache_pos`` with ``p mod slots`` = the slot; negative
    where no such position exists yet)."""
    t = jnp.arange(slots, dtype=jnp.int32)[None, :]
    pos = cache_pos.astype(jnp.int32)[:, None]
    return pos - jnp.mod(pos - t, slots)


def write_step(
    cache: LayerCache, new: dict[str, Array], cache_pos: Array, *, rolling: bool
) -> tuple[LayerCache, LayerCache, Array]:
    """A decode step's new rows written into a layer's cache, and what the step attends over.

    The step's ``s >= 1`` tokens sit at positions ``cache_pos[r] .. cache_pos[r] + s - 1`` of
    row ``r`` and are written at slots ``position mod T``. The step attends over the updated
    cache, whose slots hold the positions `slot_positions` gives for the step's last position
    (a slot past it holds none: a row written by an earlier step that was then rolled back, as
    a rejected speculative draft is, is never seen again and is overwritten when its position
    is written). A ``rolling`` cache (of a window's size) with ``s > 1`` would overwrite keys its
    own earlier tokens still see: that step attends over the cache as it was, followed by the
    new rows, and the cache is written after.

    Parameters
    ----------
    cache : dict of str to Array
        The layer's entries ``[b, T, ...]`` (keys and values, or latents).
    new : dict of str to Array
        Some of those entries for the step's tokens, ``[b, s, ...]`` (``s <= T``).
    cache_pos : Array
        int ``[b]``: each row's first new position.
    rolling : bool
        Whether the cache may be a rolling one (`Attention` knows: a windowed layer whose cache
        is no longer than the window).

    Returns
    -------
    (updated cache, the entries attended over ``[b, K, ...]``, their positions)
        The positions are int32 ``[b, K]``, negative where a slot holds none yet.
    """
    first = next(iter(new))
    b, s = new[first].shape[:2]
    slots = cache[first].shape[1]
    if s > slots:
        raise ValueError(
            f"a decode step of {s} tokens does not fit a cache of {slots} slots (each token "
            "needs a slot of its own); decode fewer tokens per step or make the cache longer"
        )
    pos = cache_pos.astype(jnp.int32)
    ahead = pos[:, None] + jnp.arange(s, dtype=jnp.int32)[None, :]  # [b, s]
    at, rows = jnp.mod(ahead, slots), jnp.arange(b)[:, None]
    cast = {n: a.astype(cache[n].dtype) for n, a in new.items()}
    updated = dict(cache) | {n: cache[n].at[rows, at].set(a) for n, a in cast.items()}
    if s == 1 or not rolling:
        return updated, updated, slot_positions(pos + s - 1, slots)
    seen = {n: jnp.concatenate([cache[n], a], axis=1) for n, a in cast.items()}
    return updated, seen, jnp.concatenate([slot_positions(pos - 1, slots), ahead], axis=1)


def step_visible(
    held: Array,
    positions: Array,
    *,
    window: int | None = None,
    chunk: int | None = None,
    local: Any = None,
) -> Array:
    """bool ``[b, s, K]``: which of a decode step's keys (at positions ``held`` ``[b, K]``,
    negative: none) each of its queries (at ``positions`` ``[b, s]``) sees: causally (the
    step's own later tokens and any stale row past them are hidden by position), within a
    ``window`` (``p - window < key``) or the query's own ``chunk`` where ``local``
    says the layer's applies (None or True: it does; a traced bool: per scanned layer)."""
    keys, queries = held[:, None, :], positions.astype(jnp.int32)[:, :, None]
    visible = (keys >= 0) & (keys <= queries)
    if (window is None and chunk is None) or local is False:
        return visible
    if window is not None:
        near = queries - keys < window
    else:
        assert chunk is not None
        near = keys // chunk == queries // chunk
    return visible & (near if local is None or local is True else near | ~local)


def kv_cache_bytes(
    config: TransformerConfig, *, batch: int, seq_len: int, dtype: Any = jnp.bfloat16
) -> int:
    """Bytes of the KV cache for ``batch × seq_len`` tokens under ``config`` (a rolling cache
    holds the window's tokens only, see ``cache_slots``).

    Standard attention stores ``2 · L · kv_heads · head_dim`` values per token (``L``: the
    attention layers; a delta layer keeps a fixed-size state, see `init_cache`); MLA stores
    ``L · mla.kv_latent_dim`` (DeepSeek's: ``+ mla.qk_rope_head_dim``). Compare
    ``kv_cache_bytes(cfg)`` with ``kv_cache_bytes(cfg.replace(attention=cfg.attention.replace(
    type="mha"), mla=MLAConfig()))`` for the saving.

    Parameters
    ----------
    config : TransformerConfig
        The model's config.
    batch, seq_len : int
        Cached rows and tokens per row.
    dtype : dtype
        Cache dtype.

    Returns
    -------
    int
        Bytes.
    """
    itemsize = jnp.dtype(dtype).itemsize
    seq_len = cache_slots(config, seq_len)
    if config.attention.type == "mla":
        assert config.mla.kv_latent_dim is not None
        per_token = config.mla.kv_latent_dim + (config.mla.qk_rope_head_dim or 0)
        per_token += sum(config.mla.selection_cache.values())  # a key selection's entries
    else:
        assert config.num_kv_heads is not None and config.head_dim is not None
        per_token = 2 * config.num_kv_heads * config.head_dim
    mixers = config.layer_mixers()
    groups = _groups(config)  # kv sharing: shared layers hold none, global ones their own
    total = groups.count("attention") * batch * seq_len * per_token * itemsize
    if "global" in groups:
        shape = config.layer_shape(groups.index("global"))
        wide = 2 * shape.kv_heads * shape.head_dim
        total += groups.count("global") * batch * seq_len * wide * itemsize
    deltas = mixers.count("delta")
    if deltas:  # their fixed-size states (`init_cache`): the inputs of K - 1 tokens, the matrix
        assert config.delta.key_heads is not None and config.delta.value_heads is not None
        assert config.delta.key_dim is not None and config.delta.value_dim is not None
        conv = config.delta.conv_dim
        work = jnp.promote_types(dtype, jnp.float32).itemsize
        matrix = config.delta.value_heads * config.delta.key_dim * config.delta.value_dim
        total += deltas * batch * ((config.delta.conv_kernel - 1) * conv * itemsize + matrix * work)
    return int(total)


def topk_decode_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    kv_lengths: Array | None = None,
    topk: int,
    bias: Array | None = None,
    scale: float | None = None,
    softcap: float | None = None,
    kv_mask: Array | None = None,
) -> Array:
    """Decode-time sparse attention: each query head keeps its ``topk`` highest-scoring keys.

    Parameters
    ----------
    q : Array
        ``[b, s_q, h, d]`` (``s_q`` is 1 when decoding).
    k, v : Array
        ``[b, T, h_kv, d]``; head ``h`` uses kv head ``h // (h / h_kv)`` as in tjx.kernels.
    kv_lengths : Array, optional
        int ``[b]``; keys at ``>= kv_lengths`` are invalid and never selected.
    kv_mask : Array, optional
        bool ``[b, T]``: the valid keys (a rolling cache's), instead of or with ``kv_lengths``;
        or ``[b, s_q, T]``, each query's own (a decode step of several tokens, `step_visible`).
    topk : int
        Keys kept per query and head (softmax over those only).
    bias : Array, optional
        Additive ``[b|1, h|1, s_q, T]`` logit bias (ALiBi), applied before selection.
    scale : float, optional
        Logit scale; default ``1/sqrt(d)``.
    softcap : float, optional
        Soft-cap the scaled logits (``softcap · tanh(x / softcap)``, Gemma 2) before the bias.

    Returns
    -------
    Array
        ``[b, s_q, h, d]`` in ``q``'s dtype.
    """
    b, s_q, h, d = q.shape
    t, h_kv = k.shape[1], k.shape[2]
    g = h // h_kv
    kk = jnp.repeat(k, g, axis=2)
    vv = jnp.repeat(v, g, axis=2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, kk, preferred_element_type=jnp.float32)
    logits = soft_cap(logits * (1.0 / math.sqrt(d) if scale is None else scale), softcap)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    valid = jnp.ones((b, 1, t), bool)
    if kv_lengths is not None:
        valid = (jnp.arange(t)[None, :] < kv_lengths[:, None])[:, None, :]
    if kv_mask is not None:
        valid = valid & (kv_mask if kv_mask.ndim == 3 else kv_mask[:, None, :])
    logits = jnp.where(valid[:, None, :, :], logits, -jnp.inf)
    kth = jax.lax.top_k(logits, min(topk, t))[0][..., -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum(
        "bhqk,bkhd->bqhd", probs.astype(v.dtype), vv, preferred_element_type=jnp.float32
    )
    return out.astype(q.dtype)


def last_real(new: dict[str, Array], slots: int, lengths: Array | None) -> dict[str, Array]:
    """Per row, the keys/values (or latents) of its last ``slots`` real positions, each in slot
    ``position mod slots`` (a rolling cache filled by a prompt longer than it)."""
    s = jax.tree.leaves(new)[0].shape[1]
    b = jax.tree.leaves(new)[0].shape[0]
    last = jnp.full((b,), s, jnp.int32) if lengths is None else lengths.astype(jnp.int32)
    t = jnp.arange(slots, dtype=jnp.int32)[None, :]
    # The latest real position p <= last - 1 with p = t (mod slots); clipped when none.
    held = t + slots * jnp.floor_divide(last[:, None] - 1 - t, slots)
    index = jnp.clip(held, 0, s - 1)
    return {name: jnp.take_along_axis(x, index.reshape(*index.shape, *(1,) * (x.ndim - 2)), 1)
            for name, x in new.items()}  # fmt: skip
