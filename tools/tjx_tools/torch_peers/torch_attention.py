"""Causal attention alone through PyTorch's SDPA, by backend and layout: the suite's peer of tjx's
kernels at the same shapes, and the versions of what PyTorch runs (the cuDNN it bundles).

The GPU suite's ``attention_vs_torch`` cell runs this file as a child process of an interpreter
with torch (tools/tjx_tools/gpu_suite/versus_torch.py; nothing in tjx imports it). For each cell of
the spec (batch, heads, seq, head_dim), each backend (``flash``: FlashAttention-2 in PyTorch;
``cudnn``: cuDNN's fused attention; ``math``: the unfused reference, which runs on a CPU) and each
layout: ``bshd`` (q, k, v stored ``[b, s, h, d]`` and passed as the ``transpose(1, 2)`` view, as
nanoGPT and tjx's models hold them) and ``bhsd`` (contiguous ``[b, h, s, d]``, SDPA's own).
Inputs are random normal bf16 (float32 on a CPU); the forward and the forward+backward (with a
random output gradient) are timed by ``_timing.median_s`` (CUDA events, median, after a
warm-up), with TFLOP/s in the FlashAttention convention (forward ``4·b·h·s²·d``, halved when
causal; forward+backward 3.5× the forward), the figures tjx's attention rows use. A backend that
cannot serve a cell is that cell's ``error``.

Prints one JSON object per cell, then one ``{"versions": ...}`` object: torch, its CUDA and cuDNN
(``torch.backends.cudnn.version()``), the GPU, and every installed ``nvidia-*`` wheel's version
(cuBLAS, cuDNN, NCCL ... as PyTorch loads them).

Usage: ``python torch_attention.py '{"cells": [[16, 32, 1024, 64], [4, 16, 4096, 128]],
"backends": ["flash", "cudnn"], "layouts": ["bshd", "bhsd"], "iters": 20, "device": "cuda"}'``.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import torch
from torch.nn import functional as F  # noqa: N812
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_s, pipelined_s  # (beside this file)

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def flops(b: int, h: int, s: int, d: int, causal: bool = True) -> float:
    """Forward FLOPs of attention (QKᵀ and PV), halved when causal (tjx's convention)."""
    f = 4.0 * b * h * s * s * d
    return f / 2 if causal else f


def cell(
    b: int, h: int, s: int, d: int, backend: str, layout: str, iters: int, device: str
) -> dict:
    """One (shape, backend, layout) cell: forward and forward+backward times, or its error."""
    cuda = device == "cuda"
    row: dict = {"batch": b, "heads": h, "seq": s, "head_dim": d, "causal": True,
                 "backend": backend, "layout": layout}  # fmt: skip
    dtype = torch.bfloat16 if cuda else torch.float32
    gen = torch.Generator(device="cpu").manual_seed(0)

    def make() -> torch.Tensor:
        shape = (b, s, h, d) if layout == "bshd" else (b, h, s, d)
        x = torch.randn(shape, generator=gen, dtype=torch.float32).to(device, dtype)
        x = x.transpose(1, 2) if layout == "bshd" else x
        return x.requires_grad_(True)

    try:
        q, k, v = make(), make(), make()
        grad = torch.randn(q.shape, generator=gen).to(device, dtype)
        with sdpa_kernel([BACKENDS[backend]]):

            def fwd() -> torch.Tensor:
                with torch.no_grad():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            def fwd_bwd() -> None:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                torch.autograd.grad(out, (q, k, v), grad)

            fwd_s = median_s(fwd, iters, cuda)
            both_s = median_s(fwd_bwd, iters, cuda)
            both_pipelined_s = pipelined_s(fwd_bwd, max(iters, 10), cuda)
    except Exception as exc:  # a backend that cannot serve the cell is the cell's finding
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return {**row, "error": f"{type(exc).__name__}: {first}"}
    f = flops(b, h, s, d)
    return {**row, "fwd_ms": fwd_s * 1e3, "fwd_tflops": f / fwd_s / 1e12,
            "fwd_bwd_ms": both_s * 1e3, "fwd_bwd_tflops": 3.5 * f / both_s / 1e12,
            "fwd_bwd_pipelined_ms": both_pipelined_s * 1e3}  # fmt: skip


def versions(device: str) -> dict:
    """torch, its CUDA and cuDNN, the GPU and the nvidia wheels (cuBLAS, cuDNN, ...)."""
    wheels = {
        d.metadata["Name"]: d.version
        for d in metadata.distributions()
        if (d.metadata["Name"] or "").lower().startswith("nvidia-")
    }
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_cudnn": cudnn,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "nvidia_wheels": dict(sorted(wheels.items())),
    }


def main() -> int:
    spec = json.loads(sys.argv[1])
    device = spec.get("device", "cuda")
    for b, h, s, d in spec["cells"]:
        for backend in spec["backends"]:
            for layout in spec["layouts"]:
                print(json.dumps(cell(b, h, s, d, backend, layout, spec["iters"], device)),
                      flush=True)  # fmt: skip
    print(json.dumps({"versions": versions(device)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
