"""Matmul FLOPs of single HLO operations the roofline prices: a convolution (a TPU's matrix
products), cuDNN's fused attention and a cuBLAS GEMM custom call."""

from __future__ import annotations

import math
import re

from tjx.metrics.hlo import Array, Instruction, json_config

__all__ = ["convolution_flops", "cudnn_flops", "gemm_flops"]


def convolution_flops(ins: Instruction, lhs: Array, rhs: Array) -> float:
    """2 × the multiply-adds a convolution does: per output element, the kernel's input features
    times the window taps that land inside the (padded, dilated) input. A TPU writes most of its
    matrix products as convolutions, some with a window over padding (a head-batched product
    is a 1×h window padded h−1 on each side, of which one tap per output is real)."""
    labels = ins.attrs.get("dim_labels", "")
    match = re.fullmatch(r"(\w+)_(\w+)->(\w+)", labels)
    if match is None:
        return 0.0
    lhs_labels, rhs_labels, out_labels = match.groups()
    out = ins.shape[0]
    window = ins.attrs.get("window", "")

    def field(name: str, count: int, default: str) -> list[str]:
        found = re.search(rf"\b{name}=([^ }}]+)", window)
        return found.group(1).split("x") if found else [default] * count

    spatial = sorted(c for c in out_labels if c.isdigit())
    sizes = [int(x) for x in field("size", len(spatial), "1")]
    pads = [p.split("_") for p in field("pad", len(spatial), "0_0")]
    strides = [int(x) for x in field("stride", len(spatial), "1")]
    lhs_dilate = [int(x) for x in field("lhs_dilate", len(spatial), "1")]
    rhs_dilate = [int(x) for x in field("rhs_dilate", len(spatial), "1")]
    per_output_taps = 1.0
    for i, d in enumerate(spatial):
        n = lhs.dims[lhs_labels.index(d)]
        o = out.dims[out_labels.index(d)]
        lo, top = int(pads[i][0]), (n - 1) * lhs_dilate[i]
        taps = 0
        for t in range(sizes[i]):
            offset = t * rhs_dilate[i] - lo
            taps += sum(
                1
                for j in range(o)
                if 0 <= j * strides[i] + offset <= top
                and (j * strides[i] + offset) % lhs_dilate[i] == 0
            )
        per_output_taps *= taps / o
    features = rhs.dims[rhs_labels.index("i")]
    return 2.0 * out.elements * features * per_output_taps


def cudnn_flops(config: str, operands: tuple[Array, ...]) -> dict[str, float]:
    """cuDNN flash attention: 2 products forward, 5 backward, each 2·b·h·s_q·s_k·d; causal
    halves them (masked tiles are skipped)."""
    fmha = json_config(config).get("cudnn_fmha_backend_config", {})
    shape = [int(d) for d in fmha.get("intermediate_tensor_shape", {}).get("dimensions", [])]
    if len(shape) != 4 or not operands:
        return {}
    head_dim = operands[0].dims[-1]
    products = 5 if "bmm1_grad_gemm1_dot_dimension_numbers" in fmha else 2
    flops = products * 2.0 * math.prod(shape) * head_dim
    if "CAUSAL" in str(fmha.get("mask_type", "")):
        flops /= 2
    return {operands[0].dtype: flops}


def gemm_flops(
    config: str, operands: tuple[Array, ...], results: tuple[Array, ...]
) -> dict[str, float]:
    gemm = json_config(config).get("gemm_backend_config", {})
    dims = gemm.get("dot_dimension_numbers", {}).get("lhs_contracting_dimensions", [])
    if not operands or not results:
        return {}
    inner = math.prod(operands[0].dims[int(d)] for d in dims)
    return {operands[0].dtype: 2.0 * results[0].elements * inner}
