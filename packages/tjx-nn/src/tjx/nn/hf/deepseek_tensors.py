"""Tensor names and layouts of DeepSeek-V2/V3 checkpoints ↔ tjx ``Llama`` with DeepSeek's MLA.

Embeddings, norms, the dense layers' MLPs, the routed experts (one ``[out, in]`` tensor per
expert and projection), the router (``mlp.gate``) and the shared experts (``mlp.shared_experts``,
one MLP) are the Llama/MoE mapping's (``llama``); V3's router adds ``e_score_correction_bias``
(tjx's sigmoid router's ``bias``). The attention is DeepSeek's (:mod:`tjx.nn.mla`):

=============================================  ==============================================
HF (``[out, in]``)                             tjx
=============================================  ==============================================
``q_proj`` ``[h·(n+ρ), d]``, or ``q_a_proj``   ``query`` ``[d | q_rank, h, n+ρ]``,
``[q_rank, d]``, ``q_a_layernorm``,            ``query_down``, ``query_latent_norm``
``q_b_proj`` ``[h·(n+ρ), q_rank]``
``kv_a_proj_with_mqa`` ``[r + ρ, d]``          ``kv_down`` ``[d, r]`` and ``key_rope`` ``[d, ρ]``
``kv_a_layernorm`` ``[r]``                     ``kv_latent_norm``
``kv_b_proj`` ``[h·(n+v), r]``                 ``key`` ``[r, h, n]`` and ``value`` ``[r, h, v]``
``o_proj`` ``[d, h·v]``                        ``out`` ``[h, v, d]``
=============================================  ==============================================

DeepSeek rotates interleaved pairs (V2 always, V3 with ``rope_interleave``); tjx rotates halves.
The rotated rows (each query head's last ``ρ``, and ``kv_a_proj_with_mqa``'s last ``ρ``) are put
in even-then-odd order on load and back on export: q·k is a sum over dims, the same in either
order when q and k are ordered alike, so the logits are unchanged.
"""

from __future__ import annotations

import numpy as np

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.llama import llama_mapping
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.mtp_tensors import mtp_mapping
from tjx.nn.hf.tables import Convert, Tables
from tjx.nn.mla import value_dim
from tjx.nn.moe.config import moe_layers


def _order(width: int, rope: int, interleaved: bool) -> np.ndarray:
    """tjx row ``j`` of a head of ``width`` dims whose last ``rope`` rotate is HF row
    ``order[j]``: the rotated rows even-then-odd when HF interleaves them."""
    nope = np.arange(width - rope)
    tail = np.arange(rope)
    if interleaved:
        tail = np.concatenate([tail[0::2], tail[1::2]])
    return np.concatenate([nope, width - rope + tail])


def _heads_in(hf: str, heads: int, order: np.ndarray) -> Convert:
    """HF ``[heads·w, in]`` → tjx ``[in, heads, w]``, each head's rows in ``order``."""
    return lambda read: read(hf).reshape(heads, len(order), -1)[:, order].transpose(2, 0, 1)


def _heads_out(tjx: str, order: np.ndarray) -> Convert:
    """tjx ``[in, heads, w]`` → HF ``[heads·w, in]`` (``order`` undone)."""
    back = np.argsort(order)
    return lambda read: read(tjx).transpose(1, 2, 0)[:, back].reshape(-1, read(tjx).shape[0])


def deepseek_mapping(
    c: LlamaConfig, model_type: str, *, interleaved: bool = True, mtp: int | None = None
) -> HFMapping:
    """The HF ↔ tjx correspondence of a DeepSeek ``c`` saved as ``model_type`` (``interleaved``:
    its rotated rows in pairs, V3's ``rope_interleave``), with its ``mtp.depths``
    multi-token-prediction layers (`tjx.nn.hf.mtp_tensors`); ``mtp``: the checkpoint's
    ``num_nextn_predict_layers`` on load (those past ``mtp.depths`` skipped in one printed line),
    None on export."""

    def layers(cc: LlamaConfig) -> HFMapping:
        return _deepseek_layers(cc, model_type, interleaved)

    return mtp_mapping(c, layers, mtp, "num_nextn_predict_layers")


def _deepseek_layers(c: LlamaConfig, model_type: str, interleaved: bool) -> HFMapping:
    """`deepseek_mapping` of the causal LM's ``c.num_layers`` layers."""
    assert c.head_dim is not None and c.mla.qk_rope_head_dim is not None
    assert c.mla.kv_latent_dim is not None
    base = llama_mapping(c, model_type)  # everything but the attention, replaced below
    tables = Tables.of(base)
    layers = range(c.num_layers)
    tables.drop(
        tuple(f"model.layers.{i}.self_attn." for i in layers),
        tuple(f"stack.layers.{i}.attn." for i in layers),
    )
    shapes, to_tjx, to_hf, same = tables.shapes, tables.to_tjx, tables.to_hf, tables.same
    d, h, hd = c.d_model, c.num_heads, c.head_dim
    rope, r = c.mla.qk_rope_head_dim, c.mla.kv_latent_dim
    nope, v = hd - rope, value_dim(c)
    q_order = _order(hd, rope, interleaved)
    rope_order = _order(rope, rope, interleaved)
    back = np.argsort(rope_order)

    def kv_a(hf: str, t: str) -> None:
        shapes[hf] = (r + rope, d)
        to_tjx[t + "kv_down.kernel"] = lambda read: read(hf)[:r].T
        to_tjx[t + "key_rope.kernel"] = lambda read: read(hf)[r:][rope_order].T
        to_hf[hf] = lambda read: np.concatenate(
            [read(t + "kv_down.kernel").T, read(t + "key_rope.kernel").T[back]]
        )

    def kv_b(hf: str, t: str) -> None:
        shapes[hf] = (h * (nope + v), r)
        to_tjx[t + "key.kernel"] = lambda read: (
            read(hf).reshape(h, nope + v, r)[:, :nope].transpose(2, 0, 1)
        )
        to_tjx[t + "value.kernel"] = lambda read: (
            read(hf).reshape(h, nope + v, r)[:, nope:].transpose(2, 0, 1)
        )
        to_hf[hf] = lambda read: np.concatenate(
            [
                read(t + "key.kernel").transpose(1, 2, 0),
                read(t + "value.kernel").transpose(1, 2, 0),
            ],
            axis=1,
        ).reshape(-1, r)

    kinds = moe_layers(c)
    for i in range(c.num_layers):
        p, t = f"model.layers.{i}.self_attn.", f"stack.layers.{i}.attn."
        q_in = c.mla.q_lora_rank or d
        if c.mla.q_lora_rank:
            tables.linear(p + "q_a_proj", t + "query_down", (d,), (q_in,))
            same(p + "q_a_layernorm.weight", t + "query_latent_norm.scale", (q_in,))
        q_name = p + ("q_b_proj" if c.mla.q_lora_rank else "q_proj") + ".weight"
        shapes[q_name] = (h * hd, q_in)
        to_tjx[t + "query.kernel"] = _heads_in(q_name, h, q_order)
        to_hf[q_name] = _heads_out(t + "query.kernel", q_order)
        kv_a(p + "kv_a_proj_with_mqa.weight", t)
        same(p + "kv_a_layernorm.weight", t + "kv_latent_norm.scale", (r,))
        kv_b(p + "kv_b_proj.weight", t)
        tables.linear(p + "o_proj", t + "out", (h, v), (d,))
        if kinds[i] and c.moe.router == "sigmoid":
            same(
                f"model.layers.{i}.mlp.gate.e_score_correction_bias",
                f"stack.layers.{i}.moe.router.bias",
                (c.moe.num_experts,),
            )
    return tables.mapping(base.ignored)
