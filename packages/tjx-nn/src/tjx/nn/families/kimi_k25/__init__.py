"""Kimi-K2 and Kimi-K2.5's text model (``kimi_k2``, and the image-text ``kimi_k25`` read as its
text model): both are DeepSeek-V3 (:mod:`tjx.nn.hf.deepseek`, its MLA and sigmoid-routed experts);
this folder holds only what the published folders add.

Modules: ``family`` (`FAMILY`: what the shared code looks up), ``hf`` (config.json and the stored
tensor names ↔ the DeepSeek-V3 text model's).
"""
