"""tjx.kernels: fused kernels for transformer training.

Pallas flash attention (forward and backward), chunked cross-entropy, the gated delta rule
(Gated DeltaNet's linear attention, chunked; across chunks XLA's scan or Pallas kernels), a
plain-XLA reference and one ``attention`` entry point that runs XLA, cuDNN or Pallas: the kernel
a name resolves to once, by evidence (`resolve_attention`, :mod:`tjx.kernels.choice`).
``flash_attention`` (and with it Pallas) is imported on first use.
"""

from tjx.core.lazy import lazy_api
from tjx.kernels.blocks import (
    BLOCK_IMPLEMENTATIONS,
    attention_backward,
    attention_forward,
    block_halves,
    block_kernel,
)
from tjx.kernels.ce_choice import (
    CE_IMPLEMENTATIONS,
    ce_auto_order,
    ce_implementation,
    linear_cross_entropy,
)
from tjx.kernels.ce_launch import CELaunch
from tjx.kernels.choice import (
    AttentionKernel,
    AutoChoice,
    KernelCompileError,
    Target,
    auto_order,
    current_target,
    first_that_compiles,
    kernel_order,
    out_of_memory,
    resolve_attention,
    target,
)
from tjx.kernels.compile_cache import enable_compilation_cache
from tjx.kernels.costs import custom_call_cost, roofline_costs
from tjx.kernels.cross_entropy import (
    CrossEntropyOutput,
    DotProducts,
    HeadProducts,
    VocabMajor,
    auto_chunk_size,
    chunked_cross_entropy,
)
from tjx.kernels.dispatch import IMPLEMENTATIONS, attention, attention_qkv, reads_stacked_qkv
from tjx.kernels.gated_delta import (
    GATED_DELTA_IMPLEMENTATIONS,
    gated_delta_auto,
    gated_delta_recurrent,
    gated_delta_rule,
    gated_delta_step,
)
from tjx.kernels.launch import LaunchDefaults, default_launch
from tjx.kernels.layer_kernels import LAYER_IMPLEMENTATIONS, layer_auto, resolve_glu, resolve_norm
from tjx.kernels.mask import AttentionMask
from tjx.kernels.reference import attention_mask, attention_weights, reference_attention
from tjx.kernels.softcap import soft_cap

# The XLA path never needs Pallas: its import (and Triton's lowering) waits for first use.
with lazy_api(globals()):
    from tjx.kernels.flash import flash_attention
    from tjx.kernels.flash_qkv import flash_attention_qkv
    from tjx.kernels.fused_ce import fused_cross_entropy

__version__ = "0.18.5"

__all__ = [
    "GATED_DELTA_IMPLEMENTATIONS",
    "gated_delta_auto",
    "gated_delta_step",
    "gated_delta_rule",
    "gated_delta_recurrent",
    "BLOCK_IMPLEMENTATIONS",
    "CE_IMPLEMENTATIONS",
    "IMPLEMENTATIONS",
    "LAYER_IMPLEMENTATIONS",
    "AttentionKernel",
    "AttentionMask",
    "AutoChoice",
    "CELaunch",
    "CrossEntropyOutput",
    "DotProducts",
    "HeadProducts",
    "KernelCompileError",
    "LaunchDefaults",
    "Target",
    "VocabMajor",
    "__version__",
    "attention",
    "attention_backward",
    "attention_forward",
    "attention_mask",
    "attention_qkv",
    "attention_weights",
    "auto_chunk_size",
    "auto_order",
    "block_halves",
    "block_kernel",
    "ce_auto_order",
    "ce_implementation",
    "chunked_cross_entropy",
    "current_target",
    "custom_call_cost",
    "default_launch",
    "enable_compilation_cache",
    "first_that_compiles",
    "flash_attention",
    "flash_attention_qkv",
    "fused_cross_entropy",
    "kernel_order",
    "layer_auto",
    "linear_cross_entropy",
    "out_of_memory",
    "reads_stacked_qkv",
    "reference_attention",
    "resolve_attention",
    "resolve_glu",
    "resolve_norm",
    "roofline_costs",
    "soft_cap",
    "target",
]
