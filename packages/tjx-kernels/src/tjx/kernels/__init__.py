"""tjx.kernels: fused kernels for transformer training.

Pallas flash attention (forward and backward), chunked cross-entropy, a plain-XLA reference and one
``attention`` entry point that picks XLA, cuDNN or Pallas per call.
"""

from tjx.kernels.cross_entropy import CrossEntropyOutput, auto_chunk_size, chunked_cross_entropy
from tjx.kernels.dispatch import IMPLEMENTATIONS, attention, select_implementation
from tjx.kernels.flash import flash_attention
from tjx.kernels.launch import LaunchDefaults, default_launch
from tjx.kernels.reference import attention_mask, attention_weights, reference_attention

__version__ = "0.2.0"

__all__ = [
    "IMPLEMENTATIONS",
    "CrossEntropyOutput",
    "LaunchDefaults",
    "__version__",
    "attention",
    "attention_mask",
    "attention_weights",
    "auto_chunk_size",
    "chunked_cross_entropy",
    "default_launch",
    "flash_attention",
    "reference_attention",
    "select_implementation",
]
