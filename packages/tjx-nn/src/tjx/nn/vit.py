"""Vision Transformer: patch embedding, class token, pre-LN encoder, classifier on [CLS]."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from tjx.nn.block import model_norm
from tjx.nn.cross_checks import model_config
from tjx.nn.embeddings import add_positions, learned_positions
from tjx.nn.encoder_configs import ViTConfig
from tjx.nn.kernel_choice import ModelAttention
from tjx.nn.linear import Dense, dropout, dropout_key, dropout_stream, split_key
from tjx.nn.params import make_param, normal, zeros
from tjx.nn.stack import Stack

Array = jax.Array


class ViT(nnx.Module):
    """ViT classifier over images ``[b, h, w, c]`` (channels last); ``attention``: its layers'
    kernels (`tjx.nn.resolve_attention`; None: resolved here)."""

    def __init__(
        self, config: ViTConfig, *, rngs: nnx.Rngs, attention: ModelAttention | None = None
    ) -> None:
        c = self.config = model_config(self, config, ViTConfig)
        p = c.precision
        patch_dim = c.patch_size * c.patch_size * c.num_channels
        self.patch_embed = Dense(
            (patch_dim,),
            (c.d_model,),
            (None,),
            ("embed",),
            rngs=rngs,
            init=normal(c.init.std),
            precision=p,
        )
        self.cls_token = make_param(
            rngs, zeros(), (1, 1, c.d_model), (None, None, "embed"), p.param_dtype
        )
        self.pos_embed = learned_positions(
            c.position.kind, c.max_seq_len, c.d_model, rngs=rngs, init_std=c.init.std, precision=p
        )
        self.stack = Stack(c, rngs=rngs, num_layers=c.num_layers, causal=False, attention=attention)
        self.final_norm = model_norm(c, rngs=rngs) if c.norm.position == "pre" else None
        self.head = Dense(
            (c.d_model,),
            (c.num_classes,),
            ("embed",),
            ("classes",),
            rngs=rngs,
            init=normal(c.init.std),
            precision=p,
        )
        self.dropout_rngs = dropout_stream(rngs, c.dropout > 0 or c.attention.dropout > 0)

    def __call__(
        self,
        images: Array,
        *,
        deterministic: bool = True,
        return_hidden: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Class logits ``[b, num_classes]`` (float32), or hidden ``[b, patches+1, d]``."""
        c = self.config
        expected = (c.image_size, c.image_size, c.num_channels)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must be [batch, {', '.join(map(str, expected))}]; got " f"{images.shape}"
            )
        key = dropout_key(self.dropout_rngs, deterministic, rngs)
        k_embed, k_stack = split_key(key, 2)
        patches = rearrange(
            images, "b (h p) (w q) c -> b (h w) (p q c)", p=c.patch_size, q=c.patch_size
        )
        x = self.patch_embed(patches)
        b = x.shape[0]
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (b, 1, c.d_model))
        x = jnp.concatenate([cls, x], axis=1)
        positions = jnp.broadcast_to(jnp.arange(x.shape[1], dtype=jnp.int32), x.shape[:2])
        x = add_positions(x, positions, self.pos_embed, c.position.kind)
        x = dropout(x, c.dropout, k_embed, deterministic=deterministic)
        x, _ = self.stack(x, positions=positions, deterministic=deterministic, rng=k_stack)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if return_hidden:
            return x
        return self.head(x[:, 0]).astype(jnp.float32)
