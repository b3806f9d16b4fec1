"""Decoder-only language models: ``DecoderLM`` and its presets ``GPT2`` and ``Llama``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx.kernels import CrossEntropyOutput, linear_cross_entropy, soft_cap
from tjx.nn.block import model_norm
from tjx.nn.configs import GPT2Config, LlamaConfig, TransformerConfig
from tjx.nn.cross_checks import check_index_loss, model_config
from tjx.nn.embeddings import (
    Embed,
    add_positions,
    learned_positions,
    sinusoid_amplitude,
)
from tjx.nn.families.parts import per_layer_embed
from tjx.nn.fp8 import Fp8HeadProducts, Fp8Policy
from tjx.nn.kernel_choice import ModelAttention
from tjx.nn.kv_cache import init_cache
from tjx.nn.linear import Dense, dropout, dropout_key, dropout_stream, split_key
from tjx.nn.losses import logits_cross_entropy
from tjx.nn.moe.layer import MoEStats
from tjx.nn.mtp import MTP
from tjx.nn.params import normal
from tjx.nn.precision import Precision
from tjx.nn.sequence import current_sequence_parallel
from tjx.nn.stack import Stack

Array = jax.Array


def check_length(seq_len: int, max_seq_len: int) -> None:
    """Raise a clear ``ValueError`` when a sequence exceeds the model's maximum."""
    if seq_len > max_seq_len:
        raise ValueError(f"sequence length {seq_len} exceeds the model's max_seq_len={max_seq_len}")


def output_head(c: Any, *, rngs: nnx.Rngs) -> Dense | None:
    """The untied ``[d_model, vocab]`` output projection, or None when the embedding is tied.

    ``c`` is any LM config with ``d_model``, ``vocab_size``, ``tie_embeddings``, ``init`` and
    ``precision`` (decoders and the encoder-decoder share it).
    """
    if c.tie_embeddings:
        return None
    # The head's product is the loss's (`head_cross_entropy`, `head_logits`), never this Dense's
    # call: it keeps no float8 state, and multiplies in float8 only with precision.fp8_lm_head
    # (the chunked loss's `Fp8HeadProducts`).
    return Dense(
        (c.d_model,),
        (c.vocab_size,),
        ("embed",),
        ("vocab",),
        rngs=rngs,
        use_bias=False,
        init=normal(c.init.std),
        precision=c.precision.without_fp8(),
    )


def head_unembedding(embed: Embed, head: Dense | None) -> Array:
    """``[d_model, vocab]``: the tied table transposed (``head`` None), else the head kernel."""
    return embed.unembedding() if head is None else head.kernel[...]


def head_logits(
    embed: Embed,
    head: Dense | None,
    hidden: Array,
    precision: Precision,
    softcap: float | None = None,
) -> Array:
    """Float32 logits ``[..., vocab]`` through the tied table or the untied ``head``, soft-capped
    to ``(-softcap, softcap)`` when given (Gemma 2's ``final_logit_softcap``)."""
    if head is None:
        return soft_cap(embed.attend(hidden), softcap)
    dt = precision.compute_dtype
    logits = jnp.einsum(
        "...d,dv->...v",
        hidden.astype(dt),
        head.kernel[...].astype(dt),
        preferred_element_type=jnp.promote_types(dt, jnp.float32),
    )
    return soft_cap(logits, softcap)


def head_cross_entropy(
    embed: Embed,
    head: Dense | None,
    hidden: Array,
    labels: Array,
    precision: Precision,
    *,
    chunked: bool = True,
    chunk_size: int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    implementation: str = "auto",
) -> CrossEntropyOutput:
    """Cross-entropy of the LM head (tied ``embed`` or untied ``head``) on final hidden states.

    A function of the head's own modules, not of a model, so a pipeline's last stage (which holds
    only these) computes the loss exactly as the whole model does.

    Parameters
    ----------
    embed, head : Embed, Dense or None
        The model's token table and untied head (None when tied).
    hidden : Array
        Final (normed) hidden states ``[..., d_model]``.
    labels : Array
        int ``[...]``; ``-100`` is unscored.
    precision : Precision
        The model's policy (the untied head's matmul dtype; ``fp8_lm_head``: its products in
        float8, `tjx.nn.fp8.Fp8HeadProducts`, chunked only).
    chunked : bool
        ``tjx.kernels.linear_cross_entropy`` (no ``[..., vocab]`` logits in memory), else the
        float32 logits and ``logits_cross_entropy``.
    chunk_size : int, optional
        Tokens per chunk (None: ``tjx.kernels.auto_chunk_size``); chunked only.
    z_loss : float
        PaLM's z-loss coefficient (in ``loss``, not in ``sum_loss``).
    softcap : float, optional
        The model's ``final_logit_softcap``: the loss is that of the capped logits.
    implementation : {"auto", "xla", "pallas"}
        The chunked (XLA) or fused (Pallas) loss, ``auto``: ``tjx.kernels.ce_choice``'s rule
        (the model's ``cross_entropy_impl``); chunked only. A capped head is always XLA.

    Returns
    -------
    CrossEntropyOutput
        ``loss`` (mean, z-loss included), ``sum_loss``, ``num_tokens``, ``num_correct``.

    Under ``sequence_parallel`` each device's share of a ``[b, s]`` sequence becomes rows of
    their own (``[b, shards, s / shards]``): the chunked loss walks the sequence, which would
    otherwise gather it onto every device.
    """
    split = current_sequence_parallel()
    if split is not None and split.shards > 1 and labels.ndim == 2:
        b, s = labels.shape
        labels = labels.reshape(b, split.shards, s // split.shards)
        hidden = hidden.reshape(b, split.shards, s // split.shards, hidden.shape[-1])
    if precision.fp8_lm_head and not chunked:
        raise ValueError(
            "precision.fp8_lm_head: the float8 head is the chunked loss's; score with "
            "chunked=True (the trainer's train.chunked_ce) or set fp8_lm_head=False"
        )
    if chunked:
        # The products in the compute dtype (the kernel accumulates in float32), as the unchunked
        # path: a raw float32 table would make them float32 (TF32 on a GPU) at twice the bytes.
        dt = precision.compute_dtype
        # A tied table as stored, [vocab, d_model] (the loss reads it transposed where its
        # products run): the lookup's cast of it too (`take_rows`), no transposed copy.
        tied = head is None
        w = embed.embedding[...].astype(dt) if tied else head_unembedding(embed, head).astype(dt)
        products = (
            Fp8HeadProducts(Fp8Policy(precision.fp8_scaling)) if precision.fp8_lm_head else None
        )
        return linear_cross_entropy(  # type: ignore[no-any-return]
            hidden.astype(dt),
            w,
            labels,
            implementation=implementation,
            chunk_size=chunk_size,
            z_loss=z_loss,
            softcap=softcap,
            logits_dtype=precision.logits_dtype,
            products=products,
            vocab_major=tied,
        )
    logits = head_logits(embed, head, hidden, precision, softcap)
    return logits_cross_entropy(logits, labels, z_loss=z_loss)


class DecoderLM(nnx.Module):
    """A causal language model built from a ``TransformerConfig``.

    With ``dropout`` or ``attention.dropout`` > 0 the model keeps an ``nnx.Rngs`` (stream
    ``dropout``) in its state for training calls; pass ``rngs=`` to ``__call__`` to override.
    Each training call draws one new key from it and splits it per layer and per use (see
    ``linear.dropout_stream`` for ``jax.jit`` over ``nnx.split``/``nnx.merge``).
    ``attention``: the kernels its attention layers run (`tjx.nn.resolve_attention` of
    ``config``); None: resolved as it is built.
    """

    config_type: type[TransformerConfig] = TransformerConfig

    def __init__(
        self,
        config: TransformerConfig,
        *,
        rngs: nnx.Rngs,
        attention: ModelAttention | None = None,
    ) -> None:
        c = self.config = model_config(self, config, self.config_type)
        check_index_loss(c, type(c).__name__)  # the indexer's loss: what it needs
        self.embed = Embed(
            c.vocab_size, c.d_model, rngs=rngs, init_std=c.init.std, precision=c.precision
        )
        self.pos_embed = learned_positions(
            c.position.kind,
            c.max_seq_len,
            c.d_model,
            rngs=rngs,
            init_std=0.01 if isinstance(c, GPT2Config) else c.init.std,
            precision=c.precision,
        )
        self.stack = Stack(c, rngs=rngs, num_layers=c.num_layers, causal=True, attention=attention)
        # Per-layer embeddings (``per_layer_input_dim``), into every layer.
        self.per_layer = per_layer_embed(c, rngs=rngs)
        self.final_norm = (
            model_norm(c, rngs=rngs)
            if c.norm.position != "post"  # pre, sandwich and output end with a norm
            else None
        )
        self.head = output_head(c, rngs=rngs)
        # Multi-token prediction (DeepSeek-V3): depths after the stack sharing embed and head.
        self.mtp = MTP(c, rngs=rngs) if c.mtp.depths else None
        self.dropout_rngs = dropout_stream(rngs, c.dropout > 0 or c.attention.dropout > 0)

    # -- pieces --------------------------------------------------------------------------------
    def embed_tokens(self, tokens: Array, positions: Array) -> Array:
        """Token (+ absolute position) embeddings ``[b, s, d_model]`` (times ``sqrt(d_model)``
        with ``scale_embeddings``, the factor in float32 then the compute dtype, as Gemma's)."""
        x = self.embed(tokens)
        if self.config.scale_embeddings:
            x = x * jnp.asarray(np.float32(math.sqrt(self.config.d_model)), x.dtype)
        return add_positions(
            x,
            positions,
            self.pos_embed,
            self.config.position.kind,
            amplitude=sinusoid_amplitude(self.config.init.std),
        )

    def unembedding(self) -> Array:
        """The output projection ``[d_model, vocab]`` (tied table transposed, or head kernel);
        ``final_logit_softcap`` is not in it (``logits`` and the loss apply it)."""
        return head_unembedding(self.embed, self.head)

    def logits(self, hidden: Array) -> Array:
        """Float32 logits ``[..., vocab]`` from final hidden states (soft-capped when
        ``final_logit_softcap`` is set)."""
        c = self.config
        return head_logits(self.embed, self.head, hidden, c.precision, c.final_logit_softcap)

    def dropout_key(self, deterministic: bool, rngs: nnx.Rngs | None = None) -> Array | None:
        """One new dropout key from ``rngs`` (default the model's own stream); None when
        ``deterministic`` or the model has no dropout. Each call draws anew (`forward` one key,
        multi-token prediction its own)."""
        return dropout_key(self.dropout_rngs, deterministic, rngs)

    # -- forward -------------------------------------------------------------------------------
    def __call__(
        self,
        tokens: Array,
        *,
        positions: Array | None = None,
        segment_ids: Array | None = None,
        deterministic: bool = True,
        return_hidden: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Logits ``[b, s, vocab]`` float32, or final hidden ``[b, s, d]`` if ``return_hidden``.

        Parameters
        ----------
        tokens : Array
            int32 ``[b, s]`` with ``s <= max_seq_len``.
        positions : Array, optional
            int32 ``[b, s]`` (restarting per packed document); default ``0..s-1`` (under
            ``sequence_parallel``, the split's order of them).
        segment_ids : Array, optional
            int32 ``[b, s]`` packed-document ids (0 = padding); attention stays in a segment.
        deterministic : bool
            Disable dropout.
        return_hidden : bool
            Return the final (normed) hidden states instead of logits.
        rngs : nnx.Rngs, optional
            Dropout keys (default: the model's own ``dropout`` stream). One key is drawn per
            call, so ``nnx.Rngs(dropout=k)`` with the same ``k`` repeats the same masks: derive
            ``k`` per step (``jax.random.fold_in(key, step)``).
        """
        out, _ = self.forward(
            tokens,
            positions=positions,
            segment_ids=segment_ids,
            deterministic=deterministic,
            return_hidden=return_hidden,
            rngs=rngs,
        )
        return out

    def on_batch(
        self, batch: Mapping[str, Array], *, deterministic: bool = True, return_hidden: bool = False
    ) -> Array:
        """``__call__`` on a packed batch: its ``inputs``, and its ``positions`` and
        ``segment_ids`` where it has them (``targets`` and any other key are not read)."""
        return self(
            batch["inputs"],
            positions=batch.get("positions"),
            segment_ids=batch.get("segment_ids"),
            deterministic=deterministic,
            return_hidden=return_hidden,
        )

    def forward(
        self,
        tokens: Array,
        *,
        positions: Array | None = None,
        segment_ids: Array | None = None,
        deterministic: bool = True,
        return_hidden: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[Array, MoEStats | None]:
        """``__call__``'s output with the MoE layers' router statistics (None without MoE).

        The statistics are ``moe.MoEStats`` stacked over the MoE layers in layer order;
        ``moe.router_penalty(stats, config)`` is what their losses add to the training loss.
        """
        x, stats = self.trunk(
            tokens,
            positions=positions,
            segment_ids=segment_ids,
            deterministic=deterministic,
            rngs=rngs,
        )
        x = self.normed(x)
        return (x if return_hidden else self.logits(x)), stats

    def normed(self, x: Array) -> Array:
        """The final norm of the stack's output (none after a post-LN stack)."""
        return x if self.final_norm is None else self.final_norm(x)

    def trunk(
        self,
        tokens: Array,
        *,
        positions: Array | None = None,
        segment_ids: Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[Array, MoEStats | None]:
        """The stack's output ``[b, s, d]`` before the final norm (`forward`'s arguments), what
        multi-token prediction starts from, and the MoE statistics."""
        b, s = tokens.shape
        check_length(s, self.config.max_seq_len)
        split = current_sequence_parallel()
        if split is not None:
            split.check(s)
        if positions is None:
            positions = (
                jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
                if split is None
                else split.positions(b, s)
            )
        key = self.dropout_key(deterministic, rngs)
        k_embed, k_stack = split_key(key, 2)
        x = self.embed_tokens(tokens, positions)
        per_layer = None if self.per_layer is None else self.per_layer(tokens, x)
        x = dropout(x, self.config.dropout, k_embed, deterministic=deterministic)
        x, _, stats = self.stack.run(
            x,
            per_layer=per_layer,
            positions=positions,
            segment_ids=segment_ids,
            deterministic=deterministic,
            rng=k_stack,
        )
        return x, stats

    def update_router_bias(self, expert_tokens: Array) -> None:
        """After an optimizer step: move the MoE layers' balancing biases (``router="sigmoid"``)
        by the step's expert loads, in place (``Stack.update_router_bias`` with the config's
        ``router_bias_rate``); a model without them is left as it is.

        The bias gets no gradient (it only steers the top-k choice), so the optimizer leaves it
        alone; a train step calls this with the summed ``ObjectiveLoss.moe.expert_tokens``::

            model = nnx.merge(graphdef, params, rest)
            model.update_router_bias(moe_sums.expert_tokens)
            params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        """
        if self.config.moe.num_experts:
            self.stack.update_router_bias(expert_tokens, self.config.moe.router_bias_rate)

    # -- incremental decoding --------------------------------------------------------------------
    def init_cache(self, batch: int, max_len: int, dtype: Any = None) -> dict[str, Array]:
        """A zeros KV cache for ``batch`` rows of up to ``max_len`` tokens (see ``kv_cache``)."""
        return init_cache(self.config, batch, max_len, dtype)

    def forward_cached(
        self,
        tokens: Array,
        cache: dict[str, Array],
        cache_pos: Array,
        lengths: Array | None = None,
        *,
        extend: bool = False,
    ) -> tuple[Array, dict[str, Array]]:
        """Prefill (``s > 1``, ``cache_pos`` all 0) or a decode step (``s == 1``, or ``extend``).

        Token ``i`` of row ``r`` sits at absolute position ``cache_pos[r] + i``, which is also its
        cache slot (modulo the slots of a rolling cache, see ``kv_cache``). ``lengths``: a
        right-padded prefill's real tokens per row (a rolling cache keeps each row's last ones).
        ``extend``: the ``s`` tokens continue each row's cached sequence, a decode step of
        several tokens (one pass over the weights for all of them: a speculative draft's
        verification). Each attends causally to the cache's positions before it and to the
        step's earlier tokens, and gives the logits ``s`` one-token steps give (up to float
        rounding); a row's cache holds its positions up to the step's last, so calling again
        from an earlier ``cache_pos`` rolls it back (the rows past are hidden by position and
        overwritten; a rolling cache's rows a rejected token overwrote had left the window; a
        delta layer's state cannot roll back). Refused in one line: a length-dependent RoPE
        scaling (dynamic, longrope).
        Returns float32 logits ``[b, s, vocab]`` and the updated cache.
        """
        x, new_cache = self.cached_trunk(tokens, cache, cache_pos, lengths, extend=extend)
        return self.logits(self.normed(x)), new_cache

    def cached_trunk(
        self,
        tokens: Array,
        cache: dict[str, Array],
        cache_pos: Array,
        lengths: Array | None = None,
        *,
        extend: bool = False,
    ) -> tuple[Array, dict[str, Array]]:
        """`forward_cached`'s stack output before the final norm, and the updated cache."""
        _, s = tokens.shape
        check_length(s, self.config.max_seq_len)
        positions = cache_pos[:, None].astype(jnp.int32) + jnp.arange(s, dtype=jnp.int32)
        x = self.embed_tokens(tokens, positions)
        per_layer = None if self.per_layer is None else self.per_layer(tokens, x)
        x, new_cache, _ = self.stack.run(
            x,
            positions=positions,
            cache=cache,
            cache_pos=cache_pos,
            lengths=lengths,
            per_layer=per_layer,
            extend=extend,
        )
        assert new_cache is not None
        return x, new_cache


class GPT2(DecoderLM):
    """GPT-2 (see ``gpt2_config`` for the small/medium/large/xl presets)."""

    config_type = GPT2Config


class Llama(DecoderLM):
    """LLaMA-style decoder (RMSNorm, SwiGLU, RoPE, GQA; optional MLA cache and top-k decode)."""

    config_type = LlamaConfig
