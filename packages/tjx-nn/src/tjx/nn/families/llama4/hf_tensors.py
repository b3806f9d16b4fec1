"""Llama 4's tensors ↔ tjx's (what maps to what: :mod:`tjx.nn.families.llama4.hf`): the dense
and MoE layers, the experts' fused ``gate_up_proj``, and the query and key rows in tjx's RoPE
order.

Llama 4 rotates interleaved pairs (``apply_rotary_emb``: dims ``2i`` and ``2i + 1`` as one
complex number at frequency ``i``); tjx rotates halves (``i`` with ``i + head_dim/2``, the same
frequency). Each head's ``q_proj``/``k_proj`` rows are reordered even-then-odd on load (and back
on export), as transformers' own Llama conversion does: a permutation is exact (no arithmetic),
queries and keys move alike (their products, the weightless q/k norm and the temperature do not
see the order), and tjx's one RoPE kernel serves it.
"""

from __future__ import annotations

import numpy as np

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.tables import Convert, Tables, llama_sizes
from tjx.nn.moe.config import expert_mlp_dim, moe_layers, shared_mlp_dim


def _pairs_last(hd: int) -> np.ndarray:
    """``order[j]``: the HF row within a head that tjx's row ``j`` is: the even rows (each pair's
    first) then the odd ones (`module docstring`)."""
    return np.concatenate([np.arange(0, hd, 2), np.arange(1, hd, 2)])


def _rotary_in(hf: str, heads: int, hd: int, d: int) -> Convert:
    """HF ``[heads·hd, d]`` (pairs interleaved) → tjx ``[d, heads, hd]`` (halves)."""
    order = _pairs_last(hd)
    return lambda read: read(hf).reshape(heads, hd, d)[:, order].transpose(2, 0, 1)


def _rotary_out(tjx: str, heads: int, hd: int, d: int) -> Convert:
    """tjx ``[d, heads, hd]`` → HF ``[heads·hd, d]`` (the pairs interleaved again)."""
    back = np.argsort(_pairs_last(hd))
    return lambda read: read(tjx).transpose(1, 2, 0)[:, back].reshape(heads * hd, d)


def _gate_up_in(hf: str, part: int, f: int) -> Convert:
    """HF ``gate_up_proj`` ``[E, d, 2f]``'s gate (``part`` 0) or up (1) half → ``[E, d, f]``."""
    return lambda read: read(hf)[..., part * f : (part + 1) * f]


def _gate_up_out(gate: str, up: str) -> Convert:
    """tjx's ``fc_gate`` and ``fc_in`` kernels ``[E, d, f]`` → HF ``gate_up_proj``."""
    return lambda read: np.concatenate([read(gate), read(up)], axis=-1)


def llama4_mapping(c: LlamaConfig) -> HFMapping:
    """The HF ↔ tjx correspondence of a Llama 4 ``c`` (its tensor names: the module doc)."""
    d, h, hk, hd, m, v = llama_sizes(c)
    tables = Tables()
    tables.same("model.embed_tokens.weight", "embed.embedding", (v, d))
    kinds = moe_layers(c)
    for i in range(c.num_layers):
        p, t = f"model.layers.{i}.", f"stack.layers.{i}."
        for hf, tjx, heads in (("q_proj", "query", h), ("k_proj", "key", hk)):
            name, kernel = f"{p}self_attn.{hf}.weight", f"{t}attn.{tjx}.kernel"
            tables.shapes[name] = (heads * hd, d)
            tables.to_tjx[kernel] = _rotary_in(name, heads, hd, d)
            tables.to_hf[name] = _rotary_out(kernel, heads, hd, d)
        tables.linear(p + "self_attn.v_proj", t + "attn.value", (d,), (hk, hd))
        tables.linear(p + "self_attn.o_proj", t + "attn.out", (h, hd), (d,))
        tables.same(p + "input_layernorm.weight", t + "attn_norm.scale", (d,))
        tables.same(p + "post_attention_layernorm.weight", t + "mlp_norm.scale", (d,))
        ff = p + "feed_forward."
        if not kinds[i]:
            tables.swiglu(ff, t + "mlp.", d, m)
            continue
        e, f = c.moe.num_experts, expert_mlp_dim(c)
        tables.linear(ff + "router", t + "moe.router", (d,), (e,))
        tables.swiglu(ff + "shared_expert.", t + "moe.shared.", d, shared_mlp_dim(c))
        x = t + "moe.experts."
        gate_up = ff + "experts.gate_up_proj"
        tables.shapes[gate_up] = (e, d, 2 * f)
        tables.to_tjx[x + "fc_gate.kernel"] = _gate_up_in(gate_up, 0, f)
        tables.to_tjx[x + "fc_in.kernel"] = _gate_up_in(gate_up, 1, f)
        tables.to_hf[gate_up] = _gate_up_out(x + "fc_gate.kernel", x + "fc_in.kernel")
        tables.same(ff + "experts.down_proj", x + "fc_out.kernel", (e, f, d))
    tables.same("model.norm.weight", "final_norm.scale", (d,))
    if not c.tie_embeddings:
        tables.linear("lm_head", "head", (d,), (v,))

    def ignored(name: str) -> bool:
        return c.tie_embeddings and name == "lm_head.weight"

    return tables.mapping(ignored)
