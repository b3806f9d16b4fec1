"""Gemma 4 (``gemma4_text``, and the image-text ``gemma4`` read as its text model).

Modules: ``hf`` (config.json and tensors ↔ tjx).
"""
