"""MiniMax-M2 (``minimax_m2``: MiniMax-M2, M2.1, M2.5).

Modules: ``family`` (`FAMILY`: what the shared code looks up), ``hf`` (config.json and tensors ↔
tjx: what maps to what), ``hf_read`` and ``hf_write`` (config.json → config and back),
``hf_tensors`` (the tensors).

MiniMax-M2 is the shared decoder with parts other families brought: every layer MoE with the
sigmoid router and its correction bias (``routers``, DeepSeek-V3's, one group, no scaling),
q/k RMSNorms over the whole projection (``attention.qk_norm_scope`` ``"projection"``, OLMo 2's)
and RoPE on part of each head (``position.rope_fraction``, GLM-4.5's). It adds no layer and no
config field of its own.
"""
