"""Llama 4 (``llama4_text``, and the image-text ``llama4`` read as its text model).

Modules: ``family`` (`FAMILY`: what the shared code looks up), ``hf`` (config.json and tensors ↔
tjx: what maps to what), ``hf_read`` and ``hf_write`` (config.json → config and back),
``hf_tensors`` (the tensors), ``hf_image_text`` (the image-text folders), ``options``
(`Llama4Options`, its section ``llama4``).

Llama 4 is the shared decoder with its switches on (:mod:`tjx.nn.family_config`'s
``LLAMA4_SWITCHES``): the local layers' attention chunks (``attention.chunk``: ``attention``,
``kv_cache``, ``flops``), NoPE global layers with their query temperature and the weightless q/k
norm (``attention``), and MoE layers with the ``sigmoid_plain`` router (``routers``) whose weights
scale each expert's input (``router_scales_input``: ``moe.dispatch``).
"""
