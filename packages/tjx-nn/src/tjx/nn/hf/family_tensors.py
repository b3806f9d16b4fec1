"""Tensor names and layouts of Qwen3, OLMo 2, Phi-3 and Gemma 2/3 ↔ tjx ``Llama``.

The projections are Llama's (``llama``: HF ``[out, in]`` transposed into ``[in, *out]``
kernels, rotate-half RoPE on both sides). What differs:

* the norms: HF's names mean different places per family (``post_attention_layernorm`` is the
  MLP's input norm in Llama, Qwen3 and Phi-3, but the attention output's norm in OLMo 2 and
  Gemma); ``NORMS`` maps each ``norm.position`` to tjx's modules. Gemma's ``1 + weight`` norms
  store the weight itself on both sides.
* q/k norms (``self_attn.q_norm``/``k_norm``): a ``head_dim`` scale (Qwen3, Gemma 3) or one over
  the whole projection (OLMo 2).
* Phi-3 fuses q, k and v into ``qkv_proj`` (rows: the query's ``heads × head_dim``, then the
  keys', then the values') and the MLP's gate and up into ``gate_up_proj`` (gate rows first):
  split on load, fused again on export.
"""

from __future__ import annotations

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.tables import Tables, llama_sizes

#: norm.position → {HF layer norm: tjx module of the block}.
NORMS = {
    "pre": {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm"},
    "output": {
        "post_attention_layernorm": "attn_post_norm",
        "post_feedforward_layernorm": "mlp_post_norm",
    },
    "sandwich": {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "attn_post_norm",
        "pre_feedforward_layernorm": "mlp_norm",
        "post_feedforward_layernorm": "mlp_post_norm",
    },
}


def family_mapping(c: LlamaConfig, model_type: str) -> HFMapping:
    """The HF ↔ tjx correspondence of ``c`` saved as ``model_type`` (see ``HFMapping``)."""
    d, h, hk, hd, m, v = llama_sizes(c)
    tables = Tables()
    same, linear = tables.same, tables.linear

    same("model.embed_tokens.weight", "embed.embedding", (v, d))
    whole = c.attention.qk_norm_scope == "projection"
    for i in range(c.num_layers):
        p, t = f"model.layers.{i}.", f"stack.layers.{i}."
        if model_type == "phi3":
            qkv = [
                (t + "attn.query", (h, hd)),
                (t + "attn.key", (hk, hd)),
                (t + "attn.value", (hk, hd)),
            ]
            tables.fused(p + "self_attn.qkv_proj", qkv, d)
            gate_up = [(t + "mlp.fc_gate", (m,)), (t + "mlp.fc_in", (m,))]
            tables.fused(p + "mlp.gate_up_proj", gate_up, d)
        else:
            linear(p + "self_attn.q_proj", t + "attn.query", (d,), (h, hd))
            linear(p + "self_attn.k_proj", t + "attn.key", (d,), (hk, hd))
            linear(p + "self_attn.v_proj", t + "attn.value", (d,), (hk, hd))
            linear(p + "mlp.gate_proj", t + "mlp.fc_gate", (d,), (m,))
            linear(p + "mlp.up_proj", t + "mlp.fc_in", (d,), (m,))
        linear(p + "self_attn.o_proj", t + "attn.out", (h, hd), (d,))
        linear(p + "mlp.down_proj", t + "mlp.fc_out", (m,), (d,))
        if c.attention.qk_norm:
            same(p + "self_attn.q_norm.weight", t + "attn.q_norm.scale", (h * hd if whole else hd,))
            same(
                p + "self_attn.k_norm.weight", t + "attn.k_norm.scale", (hk * hd if whole else hd,)
            )
        for hf_norm, tjx_norm in NORMS[str(c.norm.position)].items():
            same(f"{p}{hf_norm}.weight", f"{t}{tjx_norm}.scale", (d,))
    same("model.norm.weight", "final_norm.scale", (d,))
    if not c.tie_embeddings:
        linear("lm_head", "head", (d,), (v,))

    def ignored(name: str) -> bool:
        # RoPE frequency buffers of old checkpoints; a tied head saved as a copy.
        return "rotary_emb." in name or (c.tie_embeddings and name == "lm_head.weight")

    return tables.mapping(ignored)
