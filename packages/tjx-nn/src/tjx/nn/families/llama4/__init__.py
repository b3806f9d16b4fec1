"""Llama 4 (``llama4_text``, and the image-text ``llama4`` read as its text model).

Modules: ``hf`` (config.json and tensors ↔ tjx).
"""
