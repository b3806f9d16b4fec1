"""A stack of transformer layers, unrolled or scanned (``nnx.scan``), with rematerialisation.

With ``scan_layers`` the layers are created under ``nnx.vmap`` so every parameter gets a leading
``layers`` axis (logical name ``layers``), and run under ``nnx.scan`` so compile time does not grow
with depth. ``remat`` wraps each layer in ``nnx.remat`` with a ``jax.checkpoint`` policy:

- ``none``: store everything; ``full``: store only layer inputs, recompute the rest;
- ``save_dots``: keep matmul outputs (``dots_saveable``), recompute elementwise work;
- ``save_attention_output``: keep the attention kernel's output (tagged ``attention_output``);
- ``save_dots_and_attention``: both of the above.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.kernels import AttentionMask
from tjx.nn import probes
from tjx.nn.block import KEPT, Block, LayerInputs
from tjx.nn.configs import REMAT_POLICIES, TransformerConfig
from tjx.nn.kernel_choice import ModelAttention, layer_kind, resolve_attention
from tjx.nn.kv_cache import (
    cache_groups,
    concat_layer_caches,
    layer_cache,
    own_cache,
    restack,
    segment_cache,
    stack_layer_caches,
)
from tjx.nn.layer_runs import LayerKind, Segment, Unit, scanned, segments
from tjx.nn.moe.config import moe_layers
from tjx.nn.moe.layer import MoEStats, join_stats
from tjx.nn.relative_bias import RelativePositionBias

Array = jax.Array


def remat_policy(name: str) -> Callable[..., bool] | None:
    """The ``jax.checkpoint`` policy for a remat name (``None`` = save nothing).

    Parameters
    ----------
    name : str
        One of ``REMAT_POLICIES`` other than ``"none"``.

    Returns
    -------
    callable or None
        The policy.
    """
    cp = jax.checkpoint_policies
    policies: dict[str, Callable[..., bool] | None] = {
        "full": None,
        "save_dots": cp.dots_saveable,
        "save_attention_output": cp.save_only_these_names("attention_output"),
        "save_dots_and_attention": cp.save_from_both_policies(
            cp.dots_saveable, cp.save_only_these_names("attention_output")
        ),
    }
    if name not in policies:
        raise ValueError(f"remat must be one of {REMAT_POLICIES}; got {name!r}")
    return policies[name]


class Stack(nnx.Module):
    """``num_layers`` ``Block``s applied in sequence (decoder, encoder or enc-dec decoder).

    Which layers are MoE comes from the config (``moe.config.moe_layers``), which mix tokens by
    attention or Gated DeltaNet from its ``mixer_pattern``. Scanned, a stack of one kind of
    layer keeps every block stacked in ``layers`` (leading ``layers`` axis); a stack mixing kinds
    (dense and MoE, attention and delta) is cut into ``segments`` (see `segments`), each scanning
    a ``Unit`` of blocks; unrolled, ``layers`` is the list of blocks. Canonical (unrolled) names
    are ``layers.<i>...`` either way (``params_io``).

    ``attention`` holds the kernels of its attention layers (`resolve_attention` of
    ``config``, resolved once where the model's parts are built); not given, they are resolved
    here. Given for another config or device: a ``ValueError`` (`ModelAttention.kernel`).
    """

    def __init__(
        self,
        config: TransformerConfig,
        *,
        rngs: nnx.Rngs,
        num_layers: int,
        causal: bool,
        cross: bool = False,
        residual_layers: int | None = None,
        attention: ModelAttention | None = None,
    ) -> None:
        self.num_layers = num_layers
        self.scan = config.scan_layers
        self.remat = config.remat
        # Whether each layer's sliding window (or attention chunk) applies, as the config's
        # pattern says.
        self.locals = config.layer_locals(num_layers)
        depth = residual_layers or num_layers
        kinds = moe_layers(config) if config.moe.num_experts else (False,) * num_layers
        assert len(kinds) == num_layers

        # The layers' kernels, resolved once before any layer is built: the kinds this stack
        # builds, as the model's kernel choice resolved them (kept for these arguments).
        kinds_here = [layer_kind(causal=causal, cross=False)] + (["cross"] if cross else [])
        attention = attention or resolve_attention(config, kinds=kinds_here)

        # Each layer's token mixer (attention, or Gated DeltaNet).
        self.mixers = config.layer_mixers(num_layers)
        layer_kinds = tuple(LayerKind(m, x) for m, x in zip(kinds, self.mixers, strict=True))
        # A unit repeats the MoE step and the mixer pattern both (Qwen3-Next: 4 layers).
        period = math.lcm(max(1, config.moe.layer_step), len(config.mixer_pattern or ("",)))

        def make(
            r: nnx.Rngs, moe: bool, mixer: str = "attention", index: int | None = None
        ) -> Block:
            return Block(
                config,
                index=index,
                rngs=r,
                num_layers=depth,
                causal=causal,
                cross=cross,
                moe=moe,
                attention=attention,
                mixer=mixer,
            )

        self.plan = segments(layer_kinds, period) if self.scan else ()
        layers: Any = None
        parts: Any = None
        if not self.scan:
            # Unrolled, each layer knows its index (layers of their own shape differ by it).
            layers = nnx.List(
                [
                    make(rngs, k.moe, k.mixer, i if causal else None)
                    for i, k in enumerate(layer_kinds)
                ]
            )
        elif len(self.plan) == 1 and len(self.plan[0].unit) == 1:
            layers = scanned(lambda r: make(r, *layer_kinds[0]), rngs, num_layers)
        else:

            def unit(unit_kinds: tuple[LayerKind, ...]) -> Callable[[nnx.Rngs], Unit]:
                return lambda r: Unit([make(r, k.moe, k.mixer) for k in unit_kinds])

            parts = nnx.List([scanned(unit(seg.unit), rngs, seg.repeats) for seg in self.plan])
        self.layers = layers
        self.segments = parts
        # Each layer's part of the cache, and the layer whose keys/values it reads (kv sharing).
        shapes = config.layer_shapes(num_layers) if causal and not cross else None
        self.groups = cache_groups(self.mixers, shapes, (config.head_dim, config.num_kv_heads))
        self.sources = tuple(
            config.kv_source(i) if causal and not cross else None for i in range(num_layers)
        )
        # T5: one relative-bias table per stack, shared by every layer (so not under the layers
        # axis when scanned); the encoder's is bidirectional, a causal stack's looks back only.
        self.relative_bias = (
            RelativePositionBias(config, rngs=rngs, bidirectional=not causal)
            if config.position.kind == "t5"
            else None
        )

    def __call__(self, x: Array, **kw: Any) -> tuple[Array, dict[str, Array] | None]:
        """`run` without the MoE statistics: ``(x, updated cache or None)``."""
        out, cache, _ = self.run(x, **kw)
        return out, cache

    def run(
        self,
        x: Array,
        *,
        positions: Array | None = None,
        segment_ids: Any = None,
        context: Array | None = None,
        context_segment_ids: Any = None,
        deterministic: bool = True,
        rng: Array | None = None,
        cache: dict[str, Array] | None = None,
        cache_pos: Array | None = None,
        context_kv: dict[str, Array] | None = None,
        lengths: Array | None = None,
        per_layer: Array | None = None,
        extend: bool = False,
    ) -> tuple[Array, dict[str, Array] | None, MoEStats | None]:
        """Run every layer; ``cache`` and ``context_kv`` leaves carry a leading ``layers`` axis.

        ``context_kv`` is ``project_context(context)``: cross-attention keys/values computed once.
        With ``position.kind="t5"`` the relative position bias is computed here once and given to
        every layer's self-attention. ``lengths``: a prefill's real tokens per row (a rolling
        cache keeps each row's last ones). Each layer learns whether its window applies
        (``local``): statically when unrolled or when every layer is alike, as a scanned flag
        otherwise. Returns ``(x, updated cache, stats)``: ``stats`` is the MoE layers'
        `MoEStats` stacked in layer order (one row per MoE layer; the indexer loss's fields one
        per layer that reports it, dense ones too: `join_stats`), None without any.
        ``per_layer``: the per-layer inputs ``[b, s, layers, P]`` (unrolled stacks; the
        ``kv_shared_layers`` get the keys and values of their source layer here too).
        ``extend``: with a cache, the ``s`` tokens continue each row's cached sequence at
        ``cache_pos`` (a decode step of several tokens; see `Attention`), not a prefill.
        ``segment_ids`` and ``context_segment_ids`` (a pair ``(q_ids, kv_ids)``) become the
        layers' `tjx.kernels.AttentionMask` of the self- and cross-attention, built here once.
        """
        inputs = LayerInputs(
            bias=self._relative_bias(x, positions, cache, cache_pos, extend),
            positions=positions,
            mask=AttentionMask(segment_ids=segment_ids),
            context=context,
            context_mask=AttentionMask(segment_ids=context_segment_ids),
            deterministic=deterministic,
            cache_pos=cache_pos,
            lengths=lengths,
            extend=extend,
        )
        kinds = set(self.locals)
        uniform = None if len(kinds) > 1 else kinds.pop()  # every layer alike: a static flag

        def layer_fn(local: Any) -> Any:
            """The layer body with its window switch: a Python bool is bound here, so that it
            stays static under remat; a traced one (scanned mixed pattern) is an argument."""

            def body(block: Block, h: Array, key: Any, layer_cache: Any, ctx_kv: Any,
                     flag: Any, extra: Any = None) -> Any:  # fmt: skip
                switch = flag if local is None else local
                more = {} if extra is None else extra
                out, new, stats = block(
                    h, inputs=inputs, rng=key, cache=layer_cache, context_kv=ctx_kv,
                    local=switch, per_layer_input=more.get("ple"), shared_kv=more.get("shared"),
                )  # fmt: skip
                return out, (new, stats)

            if self.remat != "none":
                body = nnx.remat(body, policy=remat_policy(self.remat))
            return body

        keys = None if rng is None else jax.random.split(rng, self.num_layers)
        flags = None if uniform is not None else jnp.asarray(self.locals)
        if self.segments is not None:
            return self._run_segments(layer_fn(uniform), x, keys, cache, context_kv, flags)
        if self.scan:
            body = layer_fn(uniform)

            @nnx.scan(
                in_axes=(0, nnx.Carry, 0, 0, 0, 0),
                out_axes=(nnx.Carry, 0),
                transform_metadata={nnx.PARTITION_NAME: "layers"},
            )
            def step(
                block: Block, h: Array, key: Any, layer_cache: Any, ctx_kv: Any, flag: Any
            ) -> Any:
                return body(block, h, key, layer_cache, ctx_kv, flag)

            x, (new_cache, stats) = step(self.layers, x, keys, cache, context_kv, flags)
            return x, new_cache, stats
        caches, all_stats = [], []
        kept: dict[int, dict[str, Array]] = {}  # keys/values later layers read (kv sharing)
        for i, block in enumerate(self.layers):
            extra: dict[str, Any] = {}
            if per_layer is not None:
                extra["ple"] = per_layer[:, :, i]
            source = self.sources[i]
            if source is not None:
                extra["shared"] = kept[source]
            probes.layer_begins(i)  # a replay's probe program records each layer (else no-op)
            x, (new, stats) = layer_fn(self.locals[i])(
                block,
                x,
                None if keys is None else keys[i],
                own_cache(cache, self.groups, i),
                _layer(context_kv, i),
                None,
                extra or None,
            )
            probes.layer_ends(x)
            if new is not None and KEPT + "k" in new:
                names = [n for n in new if n.startswith(KEPT)]
                kept[i] = {n.removeprefix(KEPT): new[n] for n in names}
                new = {n: a for n, a in new.items() if n not in names} or None
            caches.append(new)
            if stats is not None:
                all_stats.append(stats)
        new_cache = None if cache is None else restack(caches, self.groups)
        stacked = join_stats(all_stats, jnp.stack) if all_stats else None
        return x, new_cache, stacked

    def _run_segments(
        self, body: Any, x: Array, keys: Array | None, cache: Any, context_kv: Any, flags: Any
    ) -> tuple[Array, Any, MoEStats | None]:
        """Scan each segment's units; per-layer inputs are cut and outputs joined in layer order.

        ``flags``: each layer's window switch (None: ``body`` has it bound, every layer alike)."""
        caches, all_stats = [], []
        for seg, unit in zip(self.plan, self.segments, strict=True):
            u, r = len(seg.unit), seg.repeats
            mixers = tuple(k.mixer for k in seg.unit)

            def cut(tree: Any, seg: Segment = seg, u: int = u, r: int = r) -> Any:
                return jax.tree.map(
                    lambda a: a[seg.start : seg.start + u * r].reshape(r, u, *a.shape[1:]), tree
                )

            seg_cache = segment_cache(cache, self.mixers, seg.start, mixers, r)
            step = _unit_step(body, mixers)
            x, (new, stats) = step(unit, x, cut(keys), seg_cache, cut(context_kv), cut(flags))
            if new is not None:
                caches.append(jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), new))
            if stats is not None:  # [repeats, MoE blocks per unit, ...] in layer order
                all_stats.append(jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), stats))
        new_cache = None if cache is None else concat_layer_caches(caches)
        return x, new_cache, join_stats(all_stats, jnp.concatenate) if all_stats else None

    def update_router_bias(self, expert_tokens: Array, rate: float) -> None:
        """Move each MoE layer's balancing bias (a router that has one) in place: ``bias_e +=
        rate · sign(mean_e' load − load_e)``, DeepSeek-V3's auxiliary-loss-free rule.

        Parameters
        ----------
        expert_tokens : Array
            int ``[moe layers, E]``: a step's ``MoEStats.expert_tokens`` (summed over its
            micro-batches), rows in layer order.
        rate : float
            The update speed (the config's ``router_bias_rate``).
        """
        load = expert_tokens.astype(jnp.float32)
        step = rate * jnp.sign(jnp.mean(load, axis=-1, keepdims=True) - load)  # [moe layers, E]
        row = 0

        def move(block: Any, rows: Array) -> None:
            bias = None if block.moe is None else block.moe.router.bias
            if bias is not None:
                bias.set_value(bias[...] + step[rows].astype(bias.dtype))

        if self.segments is None and self.scan:
            n = self.num_layers if self.layers.moe is not None else 0
            move(self.layers, jnp.arange(n))
            return
        if self.segments is None:
            for block in self.layers:
                if block.moe is not None:
                    move(block, jnp.asarray(row))
                    row += 1
            return
        for seg, unit in zip(self.plan, self.segments, strict=True):
            moe_at = [j for j, kind in enumerate(seg.unit) if kind.moe]
            for j in moe_at:  # rows of layers start + r·period + j among the MoE layers
                move(unit.blocks[j], row + jnp.arange(seg.repeats) * len(moe_at) + moe_at.index(j))
            row += seg.repeats * len(moe_at)

    def _relative_bias(
        self,
        x: Array,
        positions: Array | None,
        cache: dict[str, Array] | None,
        cache_pos: Array | None,
        extend: bool = False,
    ) -> Array | None:
        """The T5 bias ``[b, heads, s, s_kv]`` for this call, or None without
        ``position.kind="t5"``.

        Keys are the queries themselves (training, prefill), except in a decode step (one query
        per row, or ``extend``, and a cache, as ``Attention`` decides): then each query at
        ``positions`` sees every cache slot ``t``, which holds absolute position ``t`` (T5 has
        no window, so no rolling cache). Those rows equal the full-sequence bias's; the slots
        not written yet, or past the query, are masked by the attention.
        """
        if self.relative_bias is None:
            return None
        b, s = x.shape[:2]
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        keys = positions
        if cache is not None and cache_pos is not None and (s == 1 or extend):
            slots = jax.tree.leaves(cache)[0].shape[2]  # leaves are [layers, b, T, ...]
            keys = jnp.broadcast_to(jnp.arange(slots, dtype=jnp.int32), (b, slots))
        return self.relative_bias(positions, keys)  # type: ignore[no-any-return]

    def project_context(self, context: Array) -> dict[str, Array]:
        """Every layer's cross-attention keys and values of ``context`` ``[b, s_ctx, d]``.

        Returns ``{"k", "v"}`` ``[layers, b, s_ctx, kv_heads, head_dim]`` for ``context_kv``:
        an encoder-decoder computes them once per source instead of once per decoded token.
        """

        if self.segments is not None:
            raise ValueError("project_context needs a stack of one kind of layer (no MoE)")

        def project(block: Block, ctx: Array) -> dict[str, Array]:
            if block.cross_attn is None:
                raise ValueError("project_context needs a stack built with cross=True")
            k, v = block.cross_attn.project_context(ctx)
            return {"k": k, "v": v}

        if self.scan:
            return nnx.vmap(  # type: ignore[no-any-return]
                project,
                in_axes=(0, None),
                out_axes=0,
                transform_metadata={nnx.PARTITION_NAME: "layers"},
            )(self.layers, context)
        per_layer = [project(block, context) for block in self.layers]
        return jax.tree.map(lambda *a: jnp.stack(a), *per_layer)  # type: ignore[no-any-return]


def _unit_step(body: Any, mixers: tuple[str, ...]) -> Any:
    """A segment's scan step: one unit of blocks (their mixers ``mixers``) run by ``body`` in
    order, each with its own share of the unit's cache; returns the unit's updated cache (each
    mixer's entries stacked in layer order) and its MoE statistics."""

    @nnx.scan(
        in_axes=(0, nnx.Carry, 0, 0, 0, 0),
        out_axes=(nnx.Carry, 0),
        transform_metadata={nnx.PARTITION_NAME: "layers"},
    )
    def step(unit: Unit, h: Array, key: Any, unit_cache: Any, ctx_kv: Any, flag: Any) -> Any:
        outs = []
        for j, block in enumerate(unit.blocks):
            h, out = body(
                block,
                h,
                _layer(key, j),
                layer_cache(unit_cache, mixers, j),
                _layer(ctx_kv, j),
                _layer(flag, j),
            )
            outs.append(out)
        new = None if unit_cache is None else stack_layer_caches([o[0] for o in outs])
        moe = [o[1] for o in outs if o[1] is not None]
        return h, (new, join_stats(moe, jnp.stack) if moe else None)

    return step


def _layer(tree: Any, i: int) -> Any:
    """Layer ``i`` of a tree with a leading layers axis (None stays None)."""
    return None if tree is None else jax.tree.map(lambda a: a[i], tree)
