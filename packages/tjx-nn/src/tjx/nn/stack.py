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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.block import Block
from tjx.nn.configs import REMAT_POLICIES, TransformerConfig
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
    """``num_layers`` ``Block``s applied in sequence (decoder, encoder or enc-dec decoder)."""

    def __init__(
        self,
        config: TransformerConfig,
        *,
        rngs: nnx.Rngs,
        num_layers: int,
        causal: bool,
        cross: bool = False,
        residual_layers: int | None = None,
    ) -> None:
        self.num_layers = num_layers
        self.scan = config.scan_layers
        self.remat = config.remat
        # Each layer's sliding window (None: full attention), as the config's pattern says.
        self.windows = tuple(config.layer_windows(num_layers))
        depth = residual_layers or num_layers

        def make(r: nnx.Rngs) -> Block:
            return Block(config, rngs=r, num_layers=depth, causal=causal, cross=cross)

        if self.scan:
            layer_rngs = nnx.Rngs(params=rngs.params())

            @nnx.split_rngs(splits=num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def create(r: nnx.Rngs) -> Block:
                return make(r)

            self.layers: Any = create(layer_rngs)
        else:
            self.layers = nnx.List([make(rngs) for _ in range(num_layers)])
        # T5: one relative-bias table per stack, shared by every layer (so not under the layers
        # axis when scanned); the encoder's is bidirectional, a causal stack's looks back only.
        self.relative_bias = (
            RelativePositionBias(config, rngs=rngs, bidirectional=not causal)
            if config.position == "t5"
            else None
        )

    def __call__(
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
    ) -> tuple[Array, dict[str, Array] | None]:
        """Run every layer; ``cache`` and ``context_kv`` leaves carry a leading ``layers`` axis.

        ``context_kv`` is ``project_context(context)``: cross-attention keys/values computed once.
        With ``position="t5"`` the relative position bias is computed here once and given to
        every layer's self-attention. ``lengths``: a prefill's real tokens per row (a rolling
        cache keeps each row's last ones). Each layer learns whether its window applies
        (``local``): statically when unrolled or when every layer is alike, as a scanned flag
        otherwise.
        """
        kw: dict[str, Any] = dict(
            bias=self._relative_bias(x, positions, cache, cache_pos),
            positions=positions,
            segment_ids=segment_ids,
            context=context,
            context_segment_ids=context_segment_ids,
            deterministic=deterministic,
            cache_pos=cache_pos,
            lengths=lengths,
        )
        kinds = {w is not None for w in self.windows}
        uniform = None if len(kinds) > 1 else kinds.pop()  # every layer alike: a static flag

        def layer_fn(local: Any) -> Any:
            """The layer body with its window switch: a Python bool is bound here, so that it
            stays static under remat; a traced one (scanned mixed pattern) is an argument."""

            def body(block: Block, h: Array, key: Any, layer_cache: Any, ctx_kv: Any,
                     flag: Any) -> Any:  # fmt: skip
                switch = flag if local is None else local
                return block(h, rng=key, cache=layer_cache, context_kv=ctx_kv, local=switch, **kw)

            if self.remat != "none":
                body = nnx.remat(body, policy=remat_policy(self.remat))
            return body

        keys = None if rng is None else jax.random.split(rng, self.num_layers)
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

            flags = None
            if uniform is None:
                flags = jnp.asarray([w is not None for w in self.windows])
            return step(self.layers, x, keys, cache, context_kv, flags)
        outs = []
        for i, block in enumerate(self.layers):
            x, new = layer_fn(self.windows[i] is not None)(
                block,
                x,
                None if keys is None else keys[i],
                _layer(cache, i),
                _layer(context_kv, i),
                None,
            )
            outs.append(new)
        new_cache = None if cache is None else jax.tree.map(lambda *a: jnp.stack(a), *outs)
        return x, new_cache

    def _relative_bias(
        self,
        x: Array,
        positions: Array | None,
        cache: dict[str, Array] | None,
        cache_pos: Array | None,
    ) -> Array | None:
        """The T5 bias ``[b, heads, s, s_kv]`` for this call, or None without ``position="t5"``.

        Keys are the queries themselves (training, prefill), except in a decode step (one query
        per row and a cache, as ``Attention`` decides): then the query at ``positions`` sees
        every cache slot ``t``, which holds absolute position ``t``. That row equals the row of
        the full-sequence bias; the slots not written yet are masked by the attention.
        """
        if self.relative_bias is None:
            return None
        b, s = x.shape[:2]
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        keys = positions
        if cache is not None and cache_pos is not None and s == 1:
            slots = jax.tree.leaves(cache)[0].shape[2]  # leaves are [layers, b, T, ...]
            keys = jnp.broadcast_to(jnp.arange(slots, dtype=jnp.int32), (b, slots))
        return self.relative_bias(positions, keys)  # type: ignore[no-any-return]

    def project_context(self, context: Array) -> dict[str, Array]:
        """Every layer's cross-attention keys and values of ``context`` ``[b, s_ctx, d]``.

        Returns ``{"k", "v"}`` ``[layers, b, s_ctx, kv_heads, head_dim]`` for ``context_kv``:
        an encoder-decoder computes them once per source instead of once per decoded token.
        """

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


def _layer(tree: dict[str, Array] | None, i: int) -> dict[str, Array] | None:
    """Layer ``i`` of a tree with a leading layers axis (None stays None)."""
    return None if tree is None else jax.tree.map(lambda a: a[i], tree)
