"""BERT: token + position + token-type embeddings, a post-LN encoder, a masked-LM head and an
optional sequence classifier (on the [CLS] position through a tanh pooler)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.block import model_norm
from tjx.nn.cross_checks import model_config
from tjx.nn.decoder import check_length
from tjx.nn.embeddings import Embed, lookup_table
from tjx.nn.encoder_configs import BertConfig
from tjx.nn.kernel_choice import ModelAttention
from tjx.nn.linear import Dense, dropout, dropout_key, dropout_stream, split_key
from tjx.nn.losses import mlm_mask
from tjx.nn.mlp import activation
from tjx.nn.params import make_param, normal, zeros
from tjx.nn.stack import Stack

Array = jax.Array


class BERT(nnx.Module):
    """BERT encoder with an MLM head tied to the token embedding (plus an output bias);
    ``attention``: its layers' kernels (`tjx.nn.resolve_attention`; None: resolved here)."""

    def __init__(
        self, config: BertConfig, *, rngs: nnx.Rngs, attention: ModelAttention | None = None
    ) -> None:
        c = self.config = model_config(self, config, BertConfig)
        p = c.precision
        self.embed = Embed(c.vocab_size, c.d_model, rngs=rngs, init_std=c.init.std, precision=p)
        # BERT always has learned positions and token types.
        std = c.init.std
        self.pos_embed = lookup_table(
            c.max_seq_len, c.d_model, rngs=rngs, init_std=std, precision=p
        )
        self.type_embed = lookup_table(
            c.type_vocab_size, c.d_model, rngs=rngs, init_std=std, precision=p
        )
        self.embed_norm = model_norm(c, rngs=rngs)
        self.stack = Stack(c, rngs=rngs, num_layers=c.num_layers, causal=False, attention=attention)
        self.final_norm = model_norm(c, rngs=rngs) if c.norm.position == "pre" else None

        def head(d_in: int, d_out: int, axes: tuple[str, str]) -> Dense:
            # The heads' dense layers: one init and precision, their own axes.
            return Dense(
                (d_in,),
                (d_out,),
                (axes[0],),
                (axes[1],),
                rngs=rngs,
                init=normal(c.init.std),
                precision=p,
            )

        self.mlm_dense = head(c.d_model, c.d_model, ("embed", "mlp"))
        self.mlm_norm = model_norm(c, rngs=rngs)
        self.mlm_bias = make_param(rngs, zeros(), (c.vocab_size,), ("vocab",), p.param_dtype)
        if c.num_labels is not None:
            self.pooler: Dense | None = head(c.d_model, c.d_model, ("embed", "mlp"))
            self.classifier: Dense | None = head(c.d_model, c.num_labels, ("mlp", "classes"))
        else:
            self.pooler = self.classifier = None
        assert c.mlp.activation is not None  # the config filled it (its family's)
        self.act = activation(c.mlp.activation)
        self.dropout_rngs = dropout_stream(rngs, c.dropout > 0 or c.attention.dropout > 0)

    def encode(
        self,
        tokens: Array,
        *,
        token_types: Array | None = None,
        attention_mask: Array | None = None,
        positions: Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Final hidden states ``[b, s, d]``.

        ``attention_mask`` ``[b, s]`` is 1 for real tokens and 0 for padding (padding is neither
        attended to nor attends). Any positive int acts as a segment id: pass a packed batch's
        ``segment_ids`` (1, 2, … per document, 0 = padding) with per-document ``positions`` and
        every document is encoded as if alone.
        """
        b, s = tokens.shape
        check_length(s, self.config.max_seq_len)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        if token_types is None:
            token_types = jnp.zeros_like(tokens)
        key = dropout_key(self.dropout_rngs, deterministic, rngs)
        k_embed, k_stack = split_key(key, 2)
        x = self.embed(tokens) + self.pos_embed(positions) + self.type_embed(token_types)
        x = dropout(self.embed_norm(x), self.config.dropout, k_embed, deterministic=deterministic)
        seg = None if attention_mask is None else attention_mask.astype(jnp.int32)
        x, _ = self.stack(
            x, positions=positions, segment_ids=seg, deterministic=deterministic, rng=k_stack
        )
        return x if self.final_norm is None else self.final_norm(x)

    def __call__(
        self,
        tokens: Array,
        *,
        token_types: Array | None = None,
        attention_mask: Array | None = None,
        positions: Array | None = None,
        deterministic: bool = True,
        return_hidden: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """MLM logits ``[b, s, vocab]`` (float32), or hidden states if ``return_hidden``."""
        h = self.encode(
            tokens,
            token_types=token_types,
            attention_mask=attention_mask,
            positions=positions,
            deterministic=deterministic,
            rngs=rngs,
        )
        if return_hidden:
            return h
        return self.mlm_logits(h)

    def masked_lm(
        self,
        tokens: Array,
        key: Array,
        *,
        segment_ids: Array,
        positions: Array | None = None,
        mask_prob: float = 0.15,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[Array, Array]:
        """Mask ``mask_prob`` of the real tokens (BERT's 80/10/10) and predict them.

        The [MASK] token is the vocabulary's last id: a model trained on a tokenizer's ids has one
        id more than the tokenizer for it (tjx's trainer builds it so). Training and evaluation
        both call this, so they mask alike.

        Parameters
        ----------
        tokens : Array
            int ``[b, s]`` inputs.
        key : Array
            PRNG key of the masking only (dropout keys come from ``rngs`` or the model's
            stream). A fixed key masks the same positions at every call, as evaluation wants;
            training needs a new key per step (e.g. ``jax.random.fold_in(key, step)``).
        segment_ids : Array
            int ``[b, s]``: 1, 2, … per packed document, 0 = padding (never masked). Documents
            attend only within themselves.
        positions : Array, optional
            Per-document positions ``[b, s]``.
        mask_prob : float
            Fraction of real tokens selected, in (0, 1).
        deterministic, rngs
            Dropout, as in ``__call__``.

        Returns
        -------
        (logits, labels)
            float32 ``[b, s, vocab]`` MLM logits and int32 labels: the original token where
            selected, ``-100`` elsewhere.
        """
        mask_id = self.config.vocab_size - 1
        inputs, labels = mlm_mask(
            tokens,
            key,
            mask_id=mask_id,
            vocab_size=mask_id,
            mask_prob=mask_prob,
            special_mask=segment_ids <= 0,
        )
        hidden = self(
            inputs,
            attention_mask=segment_ids,
            positions=positions,
            deterministic=deterministic,
            return_hidden=True,
            rngs=rngs,
        )
        return self.mlm_logits(hidden).astype(jnp.float32), labels

    def mlm_hidden(self, hidden: Array) -> Array:
        """The MLM transform (dense, activation, norm) before the tied output projection."""
        return self.mlm_norm(self.act(self.mlm_dense(hidden)))

    def mlm_logits(self, hidden: Array) -> Array:
        """Float32 MLM logits from encoder hidden states."""
        return self.embed.attend(self.mlm_hidden(hidden)) + self.mlm_bias[...].astype(jnp.float32)

    def unembedding(self) -> Array:
        """The tied MLM output matrix ``[d_model, vocab]`` (apply to ``mlm_hidden``)."""
        return self.embed.unembedding()

    def classify(self, tokens: Array, **kwargs: object) -> Array:
        """Sequence-classification logits ``[b, num_labels]`` from the first ([CLS]) position."""
        if self.pooler is None or self.classifier is None:
            raise ValueError("BertConfig.num_labels must be set to use classify()")
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise ValueError(
                "classify reads the first ([CLS]) position: tokens must be [batch, length >= 1]; "
                f"got shape {tokens.shape}"
            )
        h = self.encode(tokens, **kwargs)  # type: ignore[arg-type]
        pooled = jnp.tanh(self.pooler(h[:, 0]))
        return self.classifier(pooled).astype(jnp.float32)
