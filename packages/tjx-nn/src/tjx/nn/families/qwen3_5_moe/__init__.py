"""Qwen3.5-MoE (``qwen3_5_moe_text``, and the image-text ``qwen3_5_moe`` read as its text model).

Modules: ``family`` (`FAMILY`: what the shared code looks up), ``hf`` (config.json and tensors ↔
tjx: what maps to what, what is refused).

Qwen3.5-MoE is Qwen3.5's hybrid decoder (`tjx.nn.hf.qwen3_5`: Gated DeltaNet layers between
gated attention ones) with Qwen3-Next's sparse block in every layer (`tjx.nn.hf.qwen3_next`):
the shared code's switches, no layer of its own.
"""
