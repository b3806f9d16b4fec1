"""DeepSeek-V3.2 (``deepseek_v32``): DeepSeek-V3's MLA and MoE (:mod:`tjx.nn.hf.deepseek`,
:mod:`tjx.nn.mla`) with DeepSeek Sparse Attention, a lightning indexer per attention layer that
keeps each query's top ``index_topk`` keys.

Modules: ``family`` (`FAMILY`: what the shared code looks up), ``hf`` (config.json and tensors ↔
tjx: what is read, written and refused), ``indexer`` (`Indexer`, the layer the shared attention
builds through :mod:`tjx.nn.families.parts`). Its settings are the ``mla`` section's
``index_topk``, ``index_n_heads`` and ``index_head_dim`` (:mod:`tjx.nn.mla_config`).
"""
