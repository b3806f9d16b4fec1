"""DeepSeek-V3.2 (``deepseek_v32``): DeepSeek-V3's MLA and MoE (:mod:`tjx.nn.hf.deepseek`,
:mod:`tjx.nn.mla`) with DeepSeek Sparse Attention, a lightning indexer per attention layer that
keeps each query's top ``index_topk`` keys.

Modules: ``family`` (`FAMILY`: what the shared code looks up), ``hf`` (config.json and tensors ↔
tjx: what is read, written and refused), ``indexer`` (`Indexer`, the key selection the shared
attention builds and calls through :mod:`tjx.nn.families.parts`' ``KeySelector``), ``options``
(`IndexerSettings`: the ``mla`` section's ``index_*`` settings, their checks and the cache entry
of the indexer's keys, which :mod:`tjx.nn.mla_config` inherits).
"""
