"""Tensor names and layouts of the HF LLaMA family (llama, mistral, qwen2) ↔ tjx ``Llama``.

HF stores ``nn.Linear`` weights ``[out, in]``; tjx's ``Dense`` kernels are ``[in..., out...]``
with heads split out (``query.kernel`` is ``[d_model, heads, head_dim]``), so each projection is
transposed and reshaped. HF's rotary layout (rotate-half, dimension ``i`` with ``i + head_dim/2``)
is tjx's, so q/k need no permutation. Mistral and Qwen2 share Llama's names; Qwen2 adds biases on
q/k/v (tjx's ``qkv_bias``). The MoE types (``moe``) replace a layer's MLP by a router
(``gate``, ``[E, d]``), one ``[out, in]`` tensor per expert and projection (stacked into tjx's
``[experts, in, out]`` kernels) and Qwen2-MoE's shared expert and its ``[1, d]`` gate; Qwen3-MoE
adds ``q_norm``/``k_norm`` (tjx's ``qk_norm``).
"""

from __future__ import annotations

import numpy as np

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.moe import NAMES
from tjx.nn.hf.tables import Convert, Tables, llama_sizes
from tjx.nn.moe.config import expert_mlp_dim, moe_layers, shared_mlp_dim


def _stacked_in(names: list[str], shape: tuple[int, ...]) -> Convert:
    """Per-expert HF ``[out, in]`` tensors → tjx's ``[experts, in, out]`` kernel."""
    return lambda read: np.stack([read(n).T for n in names]).reshape(shape)


def _one_expert(tjx: str, e: int) -> Convert:
    """tjx ``[experts, in, out]`` kernel → expert ``e``'s HF ``[out, in]``."""
    return lambda read: read(tjx)[e].T


def experts(tables: Tables, c: LlamaConfig, moe_type: str, p: str, t: str) -> None:
    """Layer ``p``'s (tjx ``t``'s) routed experts, router and shared expert, named as
    ``moe_type`` names them (`moe.NAMES`), into ``tables``."""
    block, router, (gate, up, down), shared = NAMES[moe_type]
    d, e, f = c.d_model, c.moe.num_experts, expert_mlp_dim(c)
    # The router is an nn.Linear(d, E) without bias: a [d, E] kernel transposed.
    tables.linear(f"{p}{block}.{router}", t + "moe.router", (d,), (e,))
    for hf, tjx, shape in ((gate, "fc_gate", (d, f)), (up, "fc_in", (d, f)),
                           (down, "fc_out", (f, d))):  # fmt: skip
        names = [f"{p}{block}.experts.{k}.{hf}.weight" for k in range(e)]
        tables.to_tjx[f"{t}moe.experts.{tjx}.kernel"] = _stacked_in(names, (e, *shape))
        for k, name in enumerate(names):
            tables.shapes[name] = shape[::-1]
            tables.to_hf[name] = _one_expert(f"{t}moe.experts.{tjx}.kernel", k)
    if shared is not None:
        tables.swiglu(f"{p}{block}.{shared}.", t + "moe.shared.", d, shared_mlp_dim(c))
        if c.moe.shared_expert_gate:  # Qwen2-MoE's (DeepSeek's shared experts have none)
            tables.linear(f"{p}{block}.{shared}_gate", f"{t}moe.shared_gate", (d,), (1,))


def llama_mapping(c: LlamaConfig, moe_type: str | None = None) -> HFMapping:
    """The HF ↔ tjx correspondence for a ``LlamaConfig`` (see ``HFMapping``); ``moe_type``
    (``mixtral``, ``qwen2_moe``, ``qwen3_moe``) names the MoE layers' tensors."""
    d, h, hk, hd, m, v = llama_sizes(c)
    tables = Tables()
    same, linear = tables.same, tables.linear

    same("model.embed_tokens.weight", "embed.embedding", (v, d))
    kinds = moe_layers(c)
    for i in range(c.num_layers):
        p, t = f"model.layers.{i}.", f"stack.layers.{i}."
        projections = [
            ("self_attn.q_proj", "attn.query", (d,), (h, hd), True),
            ("self_attn.k_proj", "attn.key", (d,), (hk, hd), True),
            ("self_attn.v_proj", "attn.value", (d,), (hk, hd), True),
            ("self_attn.o_proj", "attn.out", (h, hd), (d,), False),
        ]
        if not kinds[i]:
            projections += [
                ("mlp.gate_proj", "mlp.fc_gate", (d,), (m,), False),
                ("mlp.up_proj", "mlp.fc_in", (d,), (m,), False),
                ("mlp.down_proj", "mlp.fc_out", (m,), (d,), False),
            ]
        for hf, tjx, in_shape, out_shape, is_qkv in projections:
            biased = c.use_bias or (is_qkv and c.attention.qkv_bias)
            linear(p + hf, t + tjx, in_shape, out_shape, bias=biased)
        if kinds[i]:
            assert moe_type is not None
            experts(tables, c, moe_type, p, t)
        if c.attention.qk_norm:
            same(p + "self_attn.q_norm.weight", t + "attn.q_norm.scale", (hd,))
            same(p + "self_attn.k_norm.weight", t + "attn.k_norm.scale", (hd,))
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

    return tables.mapping(ignored)
