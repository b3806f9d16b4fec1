"""Encoder-decoder transformer (Vaswani / T5 style) with embeddings shared by both sides."""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.block import model_norm
from tjx.nn.cross_checks import model_config
from tjx.nn.decoder import check_length, head_logits, head_unembedding, output_head
from tjx.nn.embeddings import Embed, add_positions, learned_positions, sinusoid_amplitude
from tjx.nn.encoder_configs import EncoderDecoderConfig
from tjx.nn.kernel_choice import ModelAttention
from tjx.nn.kv_cache import init_cache
from tjx.nn.linear import dropout, dropout_key, dropout_stream, split_key
from tjx.nn.stack import Stack

Array = jax.Array


def window_halves(seq_len: int) -> tuple[int, int]:
    """How ``EncoderDecoder.continue_halves`` splits a window of ``seq_len`` next-token pairs.

    Parameters
    ----------
    seq_len : int
        Tokens per window (``inputs.shape[1]``, >= 2).

    Returns
    -------
    (int, int)
        The source length ``h = seq_len // 2`` (the encoder reads ``t[:h]``) and the decoder's
        length ``seq_len - h + 1`` (it reads ``t[h-1:seq_len]``, predicting ``t[h:]``): the
        labels scored per window.
    """
    half = seq_len // 2
    return half, seq_len - half + 1


class EncoderDecoder(nnx.Module):
    """Encoder (bidirectional) + decoder (causal self-attention and cross-attention);
    ``attention``: both stacks' kernels (`tjx.nn.resolve_attention`; None: resolved here)."""

    def __init__(
        self,
        config: EncoderDecoderConfig,
        *,
        rngs: nnx.Rngs,
        attention: ModelAttention | None = None,
    ) -> None:
        c = self.config = model_config(self, config, EncoderDecoderConfig)
        p = c.precision
        assert c.num_encoder_layers is not None and c.num_decoder_layers is not None
        self.embed = Embed(c.vocab_size, c.d_model, rngs=rngs, init_std=c.init.std, precision=p)
        self.pos_embed = learned_positions(
            c.position.kind, c.max_seq_len, c.d_model, rngs=rngs, init_std=c.init.std, precision=p
        )
        self.encoder = Stack(
            c, rngs=rngs, num_layers=c.num_encoder_layers, causal=False, attention=attention
        )
        self.decoder = Stack(
            c,
            rngs=rngs,
            num_layers=c.num_decoder_layers,
            causal=True,
            cross=True,
            attention=attention,
        )
        pre = c.norm.position == "pre"
        self.encoder_norm = model_norm(c, rngs=rngs) if pre else None
        self.decoder_norm = model_norm(c, rngs=rngs) if pre else None
        self.head = output_head(c, rngs=rngs)
        self.dropout_rngs = dropout_stream(rngs, c.dropout > 0 or c.attention.dropout > 0)

    def _embed(
        self,
        tokens: Array,
        key: Array | None,
        deterministic: bool,
        start: Array | None = None,
    ) -> tuple[Array, Array]:
        """Embedded tokens and their positions (``start[r] + i``; ``start`` defaults to 0)."""
        b, s = tokens.shape
        check_length(s, self.config.max_seq_len)
        positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        if start is not None:
            positions = start[:, None].astype(jnp.int32) + positions
        x = add_positions(
            self.embed(tokens),
            positions,
            self.pos_embed,
            self.config.position.kind,
            amplitude=sinusoid_amplitude(self.config.init.std),
        )
        return dropout(x, self.config.dropout, key, deterministic=deterministic), positions

    def encode(
        self,
        src: Array,
        *,
        src_segment_ids: Array | None = None,
        deterministic: bool = True,
        rng: Array | None = None,
    ) -> Array:
        """Encoder output ``[b, s_src, d]`` (``src_segment_ids``: 0 marks padding)."""
        k1, k2 = split_key(rng, 2)
        x, positions = self._embed(src, k1, deterministic)
        x, _ = self.encoder(
            x, positions=positions, segment_ids=src_segment_ids, deterministic=deterministic, rng=k2
        )
        return x if self.encoder_norm is None else self.encoder_norm(x)

    def decode(
        self,
        tgt: Array,
        memory: Array,
        *,
        src_segment_ids: Array | None = None,
        tgt_segment_ids: Array | None = None,
        deterministic: bool = True,
        rng: Array | None = None,
    ) -> Array:
        """Decoder hidden states ``[b, s_tgt, d]`` attending to encoder ``memory``."""
        k1, k2 = split_key(rng, 2)
        x, positions = self._embed(tgt, k1, deterministic)
        cross_ids = None
        if src_segment_ids is not None or tgt_segment_ids is not None:
            q_ids = jnp.ones(tgt.shape, jnp.int32) if tgt_segment_ids is None else tgt_segment_ids
            kv_ids = (
                jnp.ones(memory.shape[:2], jnp.int32)
                if src_segment_ids is None
                else src_segment_ids
            )
            cross_ids = (q_ids, kv_ids)
        x, _ = self.decoder(
            x,
            positions=positions,
            segment_ids=tgt_segment_ids,
            context=memory,
            context_segment_ids=cross_ids,
            deterministic=deterministic,
            rng=k2,
        )
        return x if self.decoder_norm is None else self.decoder_norm(x)

    def __call__(
        self,
        src: Array,
        tgt: Array,
        *,
        src_segment_ids: Array | None = None,
        tgt_segment_ids: Array | None = None,
        deterministic: bool = True,
        return_hidden: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Logits ``[b, s_tgt, vocab]`` (float32) or decoder hidden states if ``return_hidden``.

        Segment ids are ``[b, s]`` ints with 0 for padding (1 everywhere else when unpacked).
        """
        key = dropout_key(self.dropout_rngs, deterministic, rngs)
        k_enc, k_dec = split_key(key, 2)
        memory = self.encode(
            src, src_segment_ids=src_segment_ids, deterministic=deterministic, rng=k_enc
        )
        h = self.decode(
            tgt,
            memory,
            src_segment_ids=src_segment_ids,
            tgt_segment_ids=tgt_segment_ids,
            deterministic=deterministic,
            rng=k_dec,
        )
        return h if return_hidden else self.logits(h)

    def continue_halves(
        self,
        inputs: Array,
        targets: Array,
        *,
        segment_ids: Array | None = None,
        deterministic: bool = True,
        return_hidden: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[Array, Array]:
        """Seq2seq on plain text: the encoder reads each window's first half, the decoder
        continues it (teacher-forced). Training and evaluation both call this, so they agree.

        From a packed window ``t`` of ``s + 1`` tokens (``inputs = t[:s]``, ``targets = t[1:]``)
        and ``h = s // 2``: the source is ``t[:h]``, the decoder reads ``t[h-1:s]`` (the last
        source token starts it, so no start id is needed) and predicts ``t[h:]``.

        Parameters
        ----------
        inputs, targets : Array
            int ``[b, s]`` (``s >= 2``), the next-token pairs of a packed batch.
        segment_ids : Array, optional
            int ``[b, s]`` of ``inputs``; 0 = padding. The decoder attends to the encoder states
            of its own document only.
        deterministic, return_hidden, rngs
            As for ``__call__``.

        Returns
        -------
        (Array, Array)
            Logits ``[b, s - h + 1, vocab]`` (or decoder hidden states) and their labels
            ``targets[:, h-1:]`` (``[b, s - h + 1]``, padding marked by the caller's convention).
        """
        chex.assert_rank([inputs, targets], 2)
        chex.assert_equal_shape([inputs, targets])
        if inputs.shape[1] < 2:
            raise ValueError(f"continue_halves needs windows of >= 2 tokens, got {inputs.shape[1]}")
        half, _ = window_halves(inputs.shape[1])
        out = self(
            inputs[:, :half],
            inputs[:, half - 1 :],
            src_segment_ids=None if segment_ids is None else segment_ids[:, :half],
            tgt_segment_ids=None if segment_ids is None else segment_ids[:, half - 1 :],
            deterministic=deterministic,
            return_hidden=return_hidden,
            rngs=rngs,
        )
        return out, targets[:, half - 1 :]

    def logits(self, hidden: Array) -> Array:
        """Float32 logits from decoder hidden states."""
        return head_logits(self.embed, self.head, hidden, self.config.precision)

    def unembedding(self) -> Array:
        """The output projection ``[d_model, vocab]``."""
        return head_unembedding(self.embed, self.head)

    # -- incremental decoding (see ``generate_seq2seq``) ----------------------------------------
    def init_cache(self, batch: int, max_len: int, dtype: Any = None) -> dict[str, Array]:
        """A zeros decoder self-attention KV cache (``[num_decoder_layers, b, T, ...]``)."""
        return init_cache(
            self.config, batch, max_len, dtype, num_layers=self.config.num_decoder_layers
        )

    def start_cache(
        self, src: Array, cache: dict[str, Array], *, src_segment_ids: Array | None = None
    ) -> dict[str, Any]:
        """Encode ``src`` once and return the decoding state for ``forward_cached``.

        The state holds the decoder's self-attention ``cache`` (from ``init_cache``), every
        decoder layer's cross-attention keys/values of the encoder output (computed here, once,
        instead of at every decoded token) and the source segment ids (0 = padding).

        Parameters
        ----------
        src : Array
            int ``[b, s_src]`` source tokens.
        cache : dict
            ``init_cache(b, T)``.
        src_segment_ids : Array, optional
            int ``[b, s_src]``; 0 marks padding (default: all real).

        Returns
        -------
        dict
            ``{"self": cache, "cross": {"k", "v"}, "src_segment_ids": [b, s_src]}``.
        """
        if src_segment_ids is None:
            src_segment_ids = jnp.ones(src.shape, jnp.int32)
        memory = self.encode(src, src_segment_ids=src_segment_ids)
        return {
            "self": cache,
            "cross": self.decoder.project_context(memory),
            "src_segment_ids": src_segment_ids.astype(jnp.int32),
        }

    def forward_cached(
        self,
        tokens: Array,
        cache: dict[str, Any],
        cache_pos: Array,
        lengths: Array | None = None,
    ) -> tuple[Array, dict[str, Any]]:
        """Decoder prefill (``s > 1``, ``cache_pos`` all 0) or one decode step (``s == 1``).

        Same contract as ``DecoderLM.forward_cached`` with ``cache`` from ``start_cache``:
        token ``i`` of row ``r`` sits at position and self-attention slot ``cache_pos[r] + i``
        (``lengths``: a prefill's real tokens per row). Returns float32 logits ``[b, s, vocab]``
        and the updated state.
        """
        x, positions = self._embed(tokens, None, True, start=cache_pos)
        q_ids = jnp.ones(tokens.shape, jnp.int32)
        x, new_self = self.decoder(
            x,
            positions=positions,
            context_segment_ids=(q_ids, cache["src_segment_ids"]),
            cache=cache["self"],
            cache_pos=cache_pos,
            context_kv=cache["cross"],
            lengths=lengths,
        )
        assert new_self is not None
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        return self.logits(x), {**cache, "self": new_self}
