"""Multi-head attention with GQA/MQA (``num_kv_heads``), cross-attention, RoPE/ALiBi, an
optional MLA-style low-rank key/value path (DeepSeek's with ``qk_rope_head_dim``:
:mod:`tjx.nn.mla`), a sliding window, and KV-cache prefill/decode; q/k norms, Gemma's query
scale and soft-capped logits, gpt-oss's attention sinks, GLM's partial RoPE, Qwen3.5's output
gate, attention chunks, NoPE layers, the weightless q/k norm and temperature (see
``family_config``).

A windowed layer (``attention.sliding_window``; ``attention.window_pattern`` says which layers)
passes the window to the kernel; when decoding, its cache may be a rolling one of the window's
size (slot ``p mod T`` holds position ``p``, see :func:`slot_positions`). Under
``sequence_parallel`` (a sequence split across devices) self-attention runs through the split's
own attention (:mod:`tjx.nn.sequence`).

The score/softmax/value step is ``tjx.kernels.attention`` (layout ``[batch, seq, heads,
head_dim]``), so the kernel is a config switch (``attention_impl``), resolved once before the
model is built (``tjx.nn.resolve_attention``, through ``tjx.kernels.resolve_attention``: an
`AttentionKernel` the calls run; the blocks of a split sequence take the name,
``tjx.kernels.block_kernel``). Its output is tagged
``checkpoint_name(..., "attention_output")`` for the ``save_attention_output`` remat policy.

The layer's modules, by idea:

* `tjx.nn.attention.layer`: `Attention`, its parameters and its call;
* `tjx.nn.attention.positions`: how a layer applies positions (`LayerPositions`);
* `tjx.nn.attention.projections`: the q/k norms, stacked q/k/v products, the output step;
* `tjx.nn.attention.decode`: the KV cache's prefill and decode steps, a shared layer's call.
"""

from __future__ import annotations

from tjx.nn.attention.layer import Attention
from tjx.nn.attention.positions import Local

__all__ = ["Attention", "Local"]
