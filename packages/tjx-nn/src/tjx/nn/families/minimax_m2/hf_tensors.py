"""MiniMax-M2's tensors ↔ tjx's (what maps to what: :mod:`tjx.nn.families.minimax_m2.hf`).

transformers 5.24 saves MiniMax-M2 in the released folders' layout, which is Mixtral's
(``block_sparse_moe.gate``, one ``experts.<e>.{w1,w3,w2}`` per expert: `tjx.nn.hf.llama`'s
``mixtral`` tables) plus the router's ``block_sparse_moe.e_score_correction_bias`` (tjx's sigmoid
router ``bias``) and q/k norms over the whole projection (``[heads·head_dim]``).
"""

from __future__ import annotations

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.llama import llama_mapping
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.tables import Tables


def minimax_m2_mapping(c: LlamaConfig) -> HFMapping:
    """The HF ↔ tjx correspondence of a MiniMax-M2 ``c`` (its tensor names: the module doc).

    Parameters
    ----------
    c : LlamaConfig
        A config `minimax_m2_config_from_hf` reads (every layer MoE, whole-projection q/k norms).

    Returns
    -------
    HFMapping
    """
    assert c.head_dim is not None and c.num_kv_heads is not None
    h, hk, hd, e = c.num_heads, c.num_kv_heads, c.head_dim, c.moe.num_experts
    # Llama's attention and Mixtral's experts; the q/k norms added below at their whole width.
    plain = c.replace(**{"attention.qk_norm": False, "attention.qk_norm_scope": "head"})
    assert isinstance(plain, LlamaConfig)
    base = llama_mapping(plain, "mixtral")
    tables = Tables.of(base)
    for i in range(c.num_layers):
        p, t = f"model.layers.{i}.", f"stack.layers.{i}."
        tables.same(p + "self_attn.q_norm.weight", t + "attn.q_norm.scale", (h * hd,))
        tables.same(p + "self_attn.k_norm.weight", t + "attn.k_norm.scale", (hk * hd,))
        tables.same(p + "block_sparse_moe.e_score_correction_bias", t + "moe.router.bias", (e,))
    return tables.mapping(base.ignored)
