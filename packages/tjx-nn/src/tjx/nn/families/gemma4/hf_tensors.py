"""Gemma 4's tensors ↔ tjx's (what maps to what: :mod:`tjx.nn.families.gemma4.hf`): each layer
at its own geometry, the per-layer embeddings, the layer scalars, and the MoE block's fused
experts split on load and fused again on export."""

from __future__ import annotations

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.family_tensors import NORMS
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.tables import Tables
from tjx.nn.moe.config import expert_mlp_dim


def gemma4_mapping(c: LlamaConfig) -> HFMapping:
    """The HF ↔ tjx correspondence of a Gemma 4 ``c`` (see ``HFMapping``): each layer at its
    own geometry (`layer_shape`), the PLE tensors and the layer scalars."""
    assert c.head_dim is not None and c.mlp.dim is not None
    d, h, v, p = c.d_model, c.num_heads, c.vocab_size, c.gemma4.per_layer_input_dim
    tables = Tables()
    same, linear = tables.same, tables.linear
    same("model.embed_tokens.weight", "embed.embedding", (v, d))
    reads_other: set[str] = set()
    for i in range(c.num_layers):
        shape = c.layer_shape(i)
        hd, hk, m = shape.head_dim, shape.kv_heads, shape.mlp_dim
        pre, t = f"model.layers.{i}.", f"stack.layers.{i}."
        linear(pre + "self_attn.q_proj", t + "attn.query", (d,), (h, hd))
        linear(pre + "self_attn.o_proj", t + "attn.out", (h, hd), (d,))
        same(pre + "self_attn.q_norm.weight", t + "attn.q_norm.scale", (hd,))
        if shape.kv_source is None:
            linear(pre + "self_attn.k_proj", t + "attn.key", (d,), (hk, hd))
            same(pre + "self_attn.k_norm.weight", t + "attn.k_norm.scale", (hd,))
            if not shape.values_from_keys:
                linear(pre + "self_attn.v_proj", t + "attn.value", (d,), (hk, hd))
        else:  # transformers skips these names in a checkpoint (its shared layers have none)
            reads_other |= {pre + f"self_attn.{n}." for n in ("k_proj", "v_proj", "k_norm")}
        tables.swiglu(pre + "mlp.", t + "mlp.", d, m)
        for hf_norm, tjx_norm in NORMS["sandwich"].items():  # Gemma 2 and 3's names
            same(f"{pre}{hf_norm}.weight", f"{t}{tjx_norm}.scale", (d,))
        if c.moe.num_experts:
            _moe_tensors(tables, c, pre, t)
        if p:
            linear(pre + "per_layer_input_gate", t + "per_layer.gate", (d,), (p,))
            linear(pre + "per_layer_projection", t + "per_layer.proj", (p,), (d,))
            same(pre + "post_per_layer_input_norm.weight", t + "per_layer.norm.scale", (d,))
        same(pre + "layer_scalar", t + "scale", (1,))
    same("model.norm.weight", "final_norm.scale", (d,))
    if p:
        rows, width = c.gemma4.per_layer_vocab_size or v, c.num_layers * p
        same("model.embed_tokens_per_layer.weight", "per_layer.table.embedding", (rows, width))
        linear("model.per_layer_model_projection", "per_layer.proj", (d,), (width,))
        same("model.per_layer_projection_norm.weight", "per_layer.norm.scale", (p,))
    if not c.tie_embeddings:
        linear("lm_head", "head", (d,), (v,))

    def ignored(name: str) -> bool:
        # RoPE buffers; a tied head saved as a copy; a shared layer's unused key/value tensors.
        return (
            "rotary_emb." in name
            or (c.tie_embeddings and name == "lm_head.weight")
            or any(name.startswith(prefix) for prefix in reads_other)
        )

    return tables.mapping(ignored)


def _moe_tensors(tables: Tables, c: LlamaConfig, pre: str, t: str) -> None:
    """Layer ``pre``'s (tjx ``t``'s) MoE block beside its MLP: the router (its projection,
    input scale and per-expert scale), the fused experts and the block's three extra norms."""
    d, e, f = c.d_model, c.moe.num_experts, expert_mlp_dim(c)
    tables.linear(pre + "router.proj", t + "moe.router", (d,), (e,))
    tables.same(pre + "router.scale", t + "moe.router.input_scale", (d,))
    tables.same(pre + "router.per_expert_scale", t + "moe.router.expert_scale", (e,))
    tables.fused_experts(pre + "experts.", t + "moe.experts.", e, d, f)
    for hf_norm, tjx_norm in (
        ("post_feedforward_layernorm_1", "mlp_mid_norm"),
        ("pre_feedforward_layernorm_2", "moe_norm"),
        ("post_feedforward_layernorm_2", "moe_post_norm"),
    ):
        tables.same(f"{pre}{hf_norm}.weight", f"{t}{tjx_norm}.scale", (d,))
