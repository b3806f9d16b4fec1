"""Tensor names and layouts of the HF LLaMA family (llama, mistral, qwen2) ↔ tjx ``Llama``.

HF stores ``nn.Linear`` weights ``[out, in]``; tjx's ``Dense`` kernels are ``[in..., out...]``
with heads split out (``query.kernel`` is ``[d_model, heads, head_dim]``), so each projection is
transposed and reshaped. HF's rotary layout (rotate-half, dimension ``i`` with ``i + head_dim/2``)
is tjx's, so q/k need no permutation. Mistral and Qwen2 share Llama's names; Qwen2 adds biases on
q/k/v (tjx's ``qkv_bias``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf_io import HFMapping, Read, take

Convert = Callable[[Read], np.ndarray]


def _linear_in(hf: str, shape: tuple[int, ...]) -> Convert:
    """HF ``[out, in]`` → tjx ``[in, *shape_out]`` (``shape`` is tjx's kernel shape)."""
    return lambda read: read(hf).T.reshape(shape)


def _linear_out(tjx: str, out_features: int) -> Convert:
    """tjx ``[*in, *out]`` kernel → HF ``[out, in]``."""
    return lambda read: read(tjx).reshape(-1, out_features).T


def llama_mapping(c: LlamaConfig) -> HFMapping:
    """The HF ↔ tjx correspondence for a ``LlamaConfig`` (see ``HFMapping``)."""
    assert c.head_dim is not None and c.num_kv_heads is not None and c.mlp_dim is not None
    d, h, hk, hd = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim
    m, v = c.mlp_dim, c.vocab_size
    shapes: dict[str, tuple[int, ...]] = {}
    to_tjx: dict[str, Convert] = {}
    to_hf: dict[str, Convert] = {}

    def same(hf: str, tjx: str, shape: tuple[int, ...]) -> None:
        shapes[hf] = shape
        to_tjx[tjx] = take(hf)
        to_hf[hf] = take(tjx)

    def linear(hf: str, tjx: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
        shapes[hf + ".weight"] = (n_out, n_in)
        to_tjx[tjx + ".kernel"] = _linear_in(hf + ".weight", (*in_shape, *out_shape))
        to_hf[hf + ".weight"] = _linear_out(tjx + ".kernel", n_out)

    def bias(hf: str, tjx: str, out_shape: tuple[int, ...]) -> None:
        n_out = int(np.prod(out_shape))
        shapes[hf + ".bias"] = (n_out,)
        to_tjx[tjx + ".bias"] = take(hf + ".bias", out_shape)
        to_hf[hf + ".bias"] = take(tjx + ".bias", (n_out,))

    same("model.embed_tokens.weight", "embed.embedding", (v, d))
    for i in range(c.num_layers):
        p, t = f"model.layers.{i}.", f"stack.layers.{i}."
        projections = (
            ("self_attn.q_proj", "attn.query", (d,), (h, hd), True),
            ("self_attn.k_proj", "attn.key", (d,), (hk, hd), True),
            ("self_attn.v_proj", "attn.value", (d,), (hk, hd), True),
            ("self_attn.o_proj", "attn.out", (h, hd), (d,), False),
            ("mlp.gate_proj", "mlp.fc_gate", (d,), (m,), False),
            ("mlp.up_proj", "mlp.fc_in", (d,), (m,), False),
            ("mlp.down_proj", "mlp.fc_out", (m,), (d,), False),
        )
        for hf, tjx, in_shape, out_shape, is_qkv in projections:
            linear(p + hf, t + tjx, in_shape, out_shape)
            if c.use_bias or (is_qkv and c.qkv_bias):
                bias(p + hf, t + tjx, out_shape)
        same(p + "input_layernorm.weight", t + "attn_norm.scale", (d,))
        same(p + "post_attention_layernorm.weight", t + "mlp_norm.scale", (d,))
    same("model.norm.weight", "final_norm.scale", (d,))
    if not c.tie_embeddings:
        linear("lm_head", "head", (d,), (v,))

    def ignored(name: str) -> bool:
        # Old checkpoints saved RoPE's frequency buffer; a tied head may be stored as a copy.
        return name.endswith("rotary_emb.inv_freq") or (
            c.tie_embeddings and name == "lm_head.weight"
        )

    return HFMapping(shapes, to_tjx, to_hf, ignored)
