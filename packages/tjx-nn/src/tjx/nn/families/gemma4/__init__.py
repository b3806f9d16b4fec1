"""Gemma 4 (``gemma4_text``, and the image-text ``gemma4`` read as its text model).

Modules: ``family`` (`FAMILY`: what the shared code looks up), ``options`` (`Gemma4Options`, its
switches: the model config's section ``gemma4``, and their checks), ``hf`` (config.json and
tensors ↔ tjx: what maps to what), ``hf_read`` and ``hf_write`` (config.json → config and back),
``hf_tensors`` (the tensors), ``hf_image_text`` (the image-text folders), ``layers`` (its
per-layer embeddings, built through :mod:`tjx.nn.families.parts`).

The rest of Gemma 4 is the shared decoder with its switches on, read there as the options of a
layer's parts (:mod:`tjx.nn.family_config`'s ``layer_shape``): the global layers' own head width
and key/value heads, values from the keys, proportional RoPE (``attention``, ``kv_cache``'s
``global_k``/``global_v``), the value norm and layer scale (``attention``, ``block``), layers
reading an earlier layer's keys and values (``stack``, ``kv_cache``), and the MoE block beside
the MLP with its router's input norm and expert scales (the ``moe`` section: ``block``,
``moe.layer``); ``flops`` counts its layers one by one.
"""

from tjx.nn.families.gemma4.options import Gemma4Options

__all__ = ["Gemma4Options"]
