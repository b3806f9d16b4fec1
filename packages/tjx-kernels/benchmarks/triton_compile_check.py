"""Compile the Pallas flash-attention kernels to GPU machine code without a GPU.

    pip install triton            # in a throw-away venv beside jax; tjx itself never imports it
    python packages/tjx-kernels/benchmarks/triton_compile_check.py --arch 90 --arch 80
    python packages/tjx-kernels/benchmarks/triton_compile_check.py --quick --json out.json

Why: on a GPU, XLA hands each ``pallas_call`` to its bundled Triton, which lowers the Triton IR to
PTX and runs ``ptxas``. That step can fail (an op Triton cannot lay out, too much shared memory) or
produce slow code (register spills) — and none of it shows on CPU, where the kernels run in
interpret mode. This tool cross-lowers the forward and both backward kernels for CUDA with
``jax.export`` (the same Pallas→Triton lowering a GPU run uses), captures each kernel's Triton IR
and launch parameters, and compiles it with the ``triton`` wheel from PyPI for the chosen compute
capabilities down to a cubin (``ptxas`` ships inside that wheel). It reports, per kernel and
configuration: registers per thread, spill bytes, tensor-core instructions (``wgmma`` is Hopper's
warpgroup MMA, ``mma.sync`` the older per-warp one) and shared memory against the architecture's
per-block limit.

Caveats: the ``triton`` wheel's version differs from the Triton inside jaxlib's CUDA plugin, so a
pass the two disagree on could still differ on a real GPU; and nothing here runs the code, so it
proves neither correctness nor speed (``bench_attention.py`` on a GPU does). Capturing the IR
relies on a private JAX function (``jax._src.pallas.triton.lowering``), pinned by the lockfile.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax import export

from tjx.kernels import AttentionMask, flash_attention, target

#: Usable shared memory per thread block (opt-in maximum), bytes: A100 (sm_80) and H100 (sm_90).
SMEM_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
DTYPES = {"bf16": jnp.bfloat16, "f16": jnp.float16, "f32": jnp.float32}
TRITON_CALL = "__gpu$xla.gpu.triton"


@dataclasses.dataclass
class KernelIR:
    """One kernel's Triton IR and launch parameters, as the GPU lowering produced them."""

    name: str
    ttir: str
    num_warps: int
    num_stages: int


@dataclasses.dataclass
class Result:
    """What compiling one kernel of one configuration gave."""

    kernel: str
    dtype: str
    head_dim: int
    causal: bool
    segments: bool
    groups: int
    arch: int
    num_warps: int
    num_stages: int
    ok: bool
    registers: int | None = None
    spill_bytes: int | None = None
    wgmma: int | None = None
    mma_sync: int | None = None
    shared_kib: float | None = None
    shared_limit_kib: float | None = None
    error: str | None = None


@contextmanager
def capture_triton_ir() -> Iterator[dict[str, str]]:
    """Record the Triton IR text of every pallas_call lowered for CUDA inside the block."""
    from jax._src.pallas.triton import lowering  # private: see the module docstring

    captured: dict[str, str] = {}
    original = lowering.lower_jaxpr_to_triton_module

    def spy(jaxpr: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(jaxpr, *args, **kwargs)
        name = str(result.module.operation.attributes["sym_name"]).strip('"')
        captured[name] = str(result.module.operation.get_asm())
        return result

    lowering.lower_jaxpr_to_triton_module = spy
    try:
        yield captured
    finally:
        lowering.lower_jaxpr_to_triton_module = original


#: The GPU each architecture's kernels are lowered for (the launch defaults depend on it).
GPUS = {80: "NVIDIA A100-SXM4-80GB", 86: "NVIDIA A10", 89: "NVIDIA L4", 90: "NVIDIA H100"}


def lower_kernels(
    dtype: str,
    head_dim: int,
    causal: bool,
    segments: bool,
    groups: int,
    seq: int,
    arch: int = 90,
    softcap: float | None = None,
    window: int | None = None,
) -> list[KernelIR]:
    """Cross-lower flash attention forward + backward for CUDA ``sm_<arch>`` (its launch
    defaults; ``softcap``: Gemma 2's capped logits; a sliding ``window`` if given); return the
    three kernels' IR."""
    kv_heads = 2
    dt = DTYPES[dtype]

    def fwd_bwd(q: jax.Array, k: jax.Array, v: jax.Array, ids: jax.Array) -> Any:
        def loss(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
            segs = ids if segments else None
            out = flash_attention(
                q,
                k,
                v,
                mask=AttentionMask(causal=causal, segment_ids=segs, window=window),
                interpret=False,
                softcap=softcap,
            )
            return out.astype(jnp.float32).sum()

        return jax.grad(loss, (0, 1, 2))(q, k, v)

    args = [
        jax.ShapeDtypeStruct((1, seq, kv_heads * groups, head_dim), dt),
        jax.ShapeDtypeStruct((1, seq, kv_heads, head_dim), dt),
        jax.ShapeDtypeStruct((1, seq, kv_heads, head_dim), dt),
        jax.ShapeDtypeStruct((1, seq), jnp.int32),
    ]
    # jax >= 0.11 no longer assumes sm_90 when no GPU is present: name the target GPU.
    return _export_kernels(fwd_bwd, args, arch)


def lower_qkv_kernels(
    dtype: str,
    head_dim: int,
    causal: bool,
    segments: bool,
    seq: int,
    arch: int = 90,
    heads: int = 4,
    bias: bool = True,
) -> list[KernelIR]:
    """Cross-lower the stacked flash attention (`tjx.kernels.flash_attention_qkv`: one ``qkv``
    ``[b, s, 3, h, d]``, the projection's biases added as it is read) forward + backward for
    CUDA ``sm_<arch>``; return the three kernels' IR."""
    from tjx.kernels import flash_attention_qkv

    dt = DTYPES[dtype]

    def fwd_bwd(qkv: jax.Array, ids: jax.Array, biases: Any) -> Any:
        def loss(qkv: jax.Array, biases: Any) -> jax.Array:
            out = flash_attention_qkv(
                qkv,
                mask=AttentionMask(causal=causal, segment_ids=ids if segments else None),
                interpret=False,
                qkv_bias=biases,
            )
            return out.astype(jnp.float32).sum()

        return jax.grad(loss, (0, 1))(qkv, biases)

    args = [
        jax.ShapeDtypeStruct((1, seq, 3, heads, head_dim), dt),
        jax.ShapeDtypeStruct((1, seq), jnp.int32),
        (jax.ShapeDtypeStruct((heads, head_dim), dt),) * 3 if bias else None,
    ]
    return _export_kernels(fwd_bwd, args, arch)


def lower_ce_kernels(
    dtype: str,
    d_model: int,
    vocab: int,
    tokens: int,
    z_loss: float = 0.0,
    arch: int = 90,
    launch: Any = None,
) -> list[KernelIR]:
    """Cross-lower the fused linear cross-entropy (forward + both backward kernels; the default
    launch unless ``launch``, a ``CELaunch``, names one) for CUDA ``sm_<arch>``; return the three
    kernels' IR."""
    from tjx.kernels.fused_ce import fused_cross_entropy

    dt = DTYPES[dtype]

    def fwd_bwd(h: jax.Array, w: jax.Array, labels: jax.Array) -> Any:
        def loss(h: jax.Array, w: jax.Array) -> jax.Array:
            return fused_cross_entropy(
                h, w, labels, z_loss=z_loss, launch=launch, interpret=False
            ).loss

        return jax.grad(loss, (0, 1))(h, w)

    args = [
        jax.ShapeDtypeStruct((tokens, d_model), dt),
        jax.ShapeDtypeStruct((d_model, vocab), dt),
        jax.ShapeDtypeStruct((tokens,), jnp.int32),
    ]
    return _export_kernels(fwd_bwd, args, arch)


def _export_kernels(fn: Any, args: list[Any], arch: int) -> list[KernelIR]:
    """Export ``fn`` for CUDA ``sm_<arch>`` and return the IR of every Pallas kernel in it."""
    gpu = jax.sharding.AbstractDevice(device_kind=GPUS[arch], num_cores=None, platform="gpu")
    abstract = jax.sharding.AbstractMesh((), (), abstract_device=gpu)
    device = target("gpu", GPUS[arch], (arch // 10, arch % 10))
    with capture_triton_ir() as captured, jax.sharding.use_abstract_mesh(abstract), device:
        exported = export.export(
            jax.jit(fn),
            platforms=["cuda"],
            disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON_CALL)],
        )(*args)
    text = exported.mlir_module()
    kernels = []
    for name, ttir in captured.items():
        # The launch parameters travel in the custom call's backend_config beside the kernel name.
        match = re.search(
            rf'name = "{name}", num_stages = (\d+) : i32, num_warps = (\d+) : i32', text
        )
        if match is None:
            raise RuntimeError(f"launch parameters of {name} not found in the exported module")
        kernels.append(KernelIR(name, ttir, int(match.group(2)), int(match.group(1))))
    return kernels


def ptxas_report(ptx: str, arch: int) -> tuple[int, int]:
    """(registers per thread, spill bytes) that ptxas reports for a PTX module."""
    from triton.backends.nvidia.compiler import get_ptxas  # pants: no-infer-dep

    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        proc = subprocess.run(
            [get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}{suffix}",
             str(path), "-o", str(Path(tmp) / "kernel.cubin")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    log = proc.stderr + proc.stdout
    registers = re.search(r"Used (\d+) registers", log)
    stores = re.search(r"(\d+) bytes spill stores", log)
    loads = re.search(r"(\d+) bytes spill loads", log)
    spills = sum(int(m.group(1)) for m in (stores, loads) if m is not None)
    return (int(registers.group(1)) if registers else -1), spills


def compile_kernel(kernel: KernelIR, arch: int) -> dict[str, Any]:
    """Compile one kernel's Triton IR for ``sm_<arch>``; registers, spills and shared memory."""
    # XLA's Triton fuses multiply-adds; say so explicitly (Triton 3.9 warns when it is unset).
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    import triton  # pants: no-infer-dep
    from triton.backends.compiler import GPUTarget  # pants: no-infer-dep

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{kernel.name}.ttir"
        path.write_text(kernel.ttir)
        compiled = triton.compile(
            str(path),
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": kernel.num_warps, "num_stages": kernel.num_stages},
        )
    ptx = compiled.asm["ptx"]
    registers, spills = ptxas_report(ptx, arch)
    return {
        "registers": registers,
        "spill_bytes": spills,
        # Hopper's warpgroup tensor-core instruction vs the older per-warp one (sm_80's only).
        "wgmma": len(re.findall(r"^\s*wgmma\.mma_async", ptx, re.MULTILINE)),
        "mma_sync": len(re.findall(r"^\s*mma\.sync", ptx, re.MULTILINE)),
        "shared_kib": compiled.metadata.shared / 1024,
    }


def sweep(quick: bool) -> Iterator[tuple[str, int, bool, bool, int]]:
    """Configurations to check: (dtype, head_dim, causal, segments, groups)."""
    if quick:
        yield from [("bf16", 64, True, True, 4), ("f32", 128, False, False, 1)]
        return
    for dtype, head_dim in itertools.product(DTYPES, (32, 64, 80, 128, 256)):
        yield dtype, head_dim, True, True, 4  # every masking feature + GQA
        yield dtype, head_dim, False, False, 1  # the plainest kernel


def main(argv: list[str] | None = None) -> int:
    """Run the sweep, print a markdown table, optionally write JSON; exit 1 on any failure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 90")
    parser.add_argument("--seq", type=int, default=1024, help="sequence length to lower at")
    parser.add_argument("--quick", action="store_true", help="two configurations only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--softcap", type=float, help="soft-cap the logits (Gemma 2: 50)")
    parser.add_argument(
        "--ce", action="store_true", help="the fused cross-entropy kernels instead (CE_CASES)"
    )
    args = parser.parse_args(argv)
    archs = args.arch or [90]
    for arch in archs:
        if arch not in SMEM_LIMIT:
            parser.error(f"--arch {arch} is not one of {sorted(SMEM_LIMIT)}")

    if args.ce:
        return ce_main(archs)
    results: list[Result] = []
    print("| kernel | dtype | head_dim | causal+segs+GQA4 | sm | warps/stages | regs | spill B "
          "| wgmma | mma.sync | smem KiB (limit) | ok |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for dtype, head_dim, causal, segments, groups in sweep(args.quick):
        for arch in archs:
            lowered = lower_kernels(
                dtype, head_dim, causal, segments, groups, args.seq, arch, args.softcap
            )
            for kernel in lowered:
                row = Result(kernel.name, dtype, head_dim, causal, segments, groups, arch,
                             kernel.num_warps, kernel.num_stages, ok=False,
                             shared_limit_kib=SMEM_LIMIT[arch] / 1024)  # fmt: skip
                try:
                    for key, value in compile_kernel(kernel, arch).items():
                        setattr(row, key, value)
                    row.ok = (
                        row.shared_kib is not None and row.shared_kib * 1024 <= SMEM_LIMIT[arch]
                    )
                except Exception as error:  # - report every failure, keep going
                    row.error = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                results.append(row)
                print(f"| {row.kernel} | {dtype} | {head_dim} | {'yes' if causal else 'no'} "
                      f"| {arch} | {row.num_warps}/{row.num_stages} | {row.registers} "
                      f"| {row.spill_bytes} | {row.wgmma} | {row.mma_sync} "
                      f"| {row.shared_kib and round(row.shared_kib, 1)} "
                      f"({row.shared_limit_kib:.0f}) | {'yes' if row.ok else row.error or 'no'} |",
                      flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    failed = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} kernel builds fit and compiled "
          f"(triton {__import__('triton').__version__}, jax {jax.__version__})")  # fmt: skip
    return 1 if failed else 0


#: Fused cross-entropy shapes checked: (dtype, d_model, vocab, tokens) — GPT-2 small's head and
#: a float32 one (TF32 products).
CE_CASES = [("bf16", 768, 50304, 4096), ("bf16", 1024, 50304, 4096), ("f32", 256, 8192, 1024)]


def ce_main(archs: list[int]) -> int:
    """Compile the fused cross-entropy kernels of `CE_CASES`; a table, exit 1 on a failure."""
    print("| kernel | dtype | d_model | sm | warps/stages | regs | spill B | wgmma | mma.sync "
          "| smem KiB (limit) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = 0
    for (dtype, d, vocab, tokens), arch in itertools.product(CE_CASES, archs):
        for kernel in lower_ce_kernels(dtype, d, vocab, tokens, arch=arch):
            built = compile_kernel(kernel, arch)
            failed += built["shared_kib"] * 1024 > SMEM_LIMIT[arch]
            print(f"| {kernel.name} | {dtype} | {d} | {arch} | {kernel.num_warps}/"
                  f"{kernel.num_stages} | {built['registers']} | {built['spill_bytes']} "
                  f"| {built['wgmma']} | {built['mma_sync']} | {built['shared_kib']:.1f} "
                  f"({SMEM_LIMIT[arch] / 1024:.0f}) |", flush=True)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
