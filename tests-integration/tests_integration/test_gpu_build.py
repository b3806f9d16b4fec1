"""The flash-attention and fused cross-entropy kernels compile to GPU machine code, without a GPU.

CI has no GPU, and in Pallas interpret mode the kernels never meet Triton's compiler: a change that
Triton cannot lay out, a tile that overflows shared memory or a launch that spills registers would
only show on a GPU. This test cross-lowers forward + backward for CUDA with ``jax.export`` and
compiles each kernel's Triton IR with the pinned ``triton`` wheel (installed by uv into a scratch
folder; tjx never depends on it) down to a cubin for sm_90 (H100) and sm_80 (A100), using the
default tiles and warps of every (dtype class, head_dim bucket) in ``tjx.kernels.flash``.

Asserted: every kernel compiles; it fits the architecture's shared memory per block; on sm_90,
the target, it needs no register spills and its 16-bit products are all Hopper wgmma (no
mma.sync); float32 kernels ask for TF32 products, as the kernels README states. (On sm_80 the 16-bit
head_dim-128 forward spills ~0.2 KB; allowed, reported by ``benchmarks/triton_compile_check.py``.)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from uv import find_uv_bin

# The wheel's version pins the Triton passes (and ptxas) the register/shared-memory figures
# depend on; jaxlib's own Triton is a different build, so these are a close proxy, not the same.
TRITON = "triton==3.9.0"
CASES = [  # (dtype, head_dim): one per default-launch bucket; 80 checks the padded head_dim path
    ("bf16", 64),
    ("bf16", 80),
    ("f16", 128),
    ("bf16", 256),
    ("f32", 64),
    ("f32", 128),
    ("f32", 256),
]


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    target = tmp_path_factory.mktemp("triton")
    result = subprocess.run(
        [find_uv_bin(), "pip", "install", "--quiet", "--python", sys.executable,
         "--target", str(target), TRITON],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"installing {TRITON} failed:\n{result.stderr}"
    sys.path.insert(0, str(target))
    try:
        import triton_compile_check

        yield triton_compile_check
    finally:
        sys.path.remove(str(target))


@pytest.mark.parametrize("dtype,head_dim", CASES)
def test_default_kernels_compile_fit_and_do_not_spill(check: object, dtype: str, head_dim: int):
    for arch in (90, 80):  # the launch defaults depend on the architecture
        kernels = check.lower_kernels(  # type: ignore[attr-defined]
            dtype, head_dim, causal=True, segments=True, groups=4, seq=512, arch=arch
        )
        assert sorted(k.name for k in kernels) == [
            "tjx_flash_bwd_dkdv",
            "tjx_flash_bwd_dq",
            "tjx_flash_fwd",
        ]
        for kernel in kernels:
            built = check.compile_kernel(kernel, arch)  # type: ignore[attr-defined]
            limit_kib = check.SMEM_LIMIT[arch] / 1024  # type: ignore[attr-defined]
            where = f"{kernel.name} {dtype} head_dim={head_dim} sm_{arch} warps={kernel.num_warps}"
            assert 0 < built["shared_kib"] <= limit_kib, f"{where}: {built}"
            assert 0 < built["registers"] <= 255, f"{where}: {built}"
            if arch == 90:
                assert built["spill_bytes"] == 0, f"{where} spills registers: {built}"
                # 16-bit products on Hopper's tensor cores: wgmma only (head_dim 256's backward
                # through its head split, kernels README).
                if dtype != "f32":
                    assert built["wgmma"] > 0 and built["mma_sync"] == 0, f"{where}: {built}"
            if dtype == "f32":  # TF32 products, as the kernels README states (IEEE spills)
                assert "inputPrecision = tf32" in kernel.ttir, f"{where}: not TF32"


@pytest.mark.parametrize("dtype,head_dim", [("bf16", 64), ("f16", 128), ("bf16", 256)])
def test_stacked_qkv_kernels_compile_fit_and_keep_wgmma(check: object, dtype: str, head_dim: int):
    """The stacked kernels (`tjx.kernels.flash_attention_qkv`, #68: one qkv operand, the
    projection's biases added in the kernels at 16-bit head_dim <= 64, `biases_in_kernel`)
    compile for sm_90, fit its shared memory and run their 16-bit products on wgmma. No spills,
    but for one kernel: at head_dim 64 the dK/dV kernel, at the 255-register ceiling as the
    separate one is (0 spilled), spills 32 B in its query loop with the biases (48 B without);
    bounded here, in the kernels README, for a GPU to weigh against the launches it saves."""
    bias = head_dim <= 64
    kernels = check.lower_qkv_kernels(  # type: ignore[attr-defined]
        dtype, head_dim, causal=True, segments=True, seq=512, arch=90, heads=8, bias=bias
    )
    assert sorted(k.name for k in kernels) == [
        "tjx_flash_qkv_bwd_dkdv",
        "tjx_flash_qkv_bwd_dq",
        "tjx_flash_qkv_fwd",
    ]
    for kernel in kernels:
        built = check.compile_kernel(kernel, 90)  # type: ignore[attr-defined]
        where = f"{kernel.name} {dtype} head_dim={head_dim} sm_90 biases={bias}: {built}"
        assert 0 < built["shared_kib"] <= 227 and 0 < built["registers"] <= 255, where
        assert built["wgmma"] > 0 and built["mma_sync"] == 0, where
        known = kernel.name == "tjx_flash_qkv_bwd_dkdv" and head_dim == 64
        assert built["spill_bytes"] <= (32 if known else 0), where


def test_windowed_kernels_compile_to_wgmma_without_spills(check: object):
    """With a sliding window each kernel walks the blocks from the first one the window reaches
    (its two masked edges in one loop, so that the dK/dV kernel keeps its registers: as two
    loops it spilled 136 B on sm_90). The walk's bounds depend on the window, so each window is
    its own program; that blocks outside it are never loaded is shown on CPU, where the same
    kernels run interpreted (test_window.py's poisoned blocks)."""
    lower = check.lower_kernels  # type: ignore[attr-defined]
    plain = lower("bf16", 128, causal=True, segments=True, groups=4, seq=1024)
    windowed = lower("bf16", 128, causal=True, segments=True, groups=4, seq=1024, window=256)
    other = lower("bf16", 128, causal=True, segments=True, groups=4, seq=1024, window=384)
    for a, b, c in zip(plain, windowed, other, strict=True):
        assert a.name == b.name == c.name and a.ttir != b.ttir != c.ttir, a.name
    for kernel in windowed:
        built = check.compile_kernel(kernel, 90)  # type: ignore[attr-defined]
        where = f"{kernel.name} window=256 sm_90"
        assert built["spill_bytes"] == 0 and 0 < built["shared_kib"] <= 227, f"{where}: {built}"
        assert built["wgmma"] > 0 and built["mma_sync"] == 0, f"{where}: {built}"


def test_a_spilling_launch_is_reported(check: object):
    """Control: the check can fail — 128x128 tiles under 4 warps spill (the old default)."""
    [fwd] = [
        k
        for k in check.lower_kernels("bf16", 64, causal=True, segments=True, groups=4, seq=512)  # type: ignore[attr-defined]
        if k.name == "tjx_flash_fwd"
    ]
    assert fwd.num_warps == 8
    fwd.num_warps = 4
    assert check.compile_kernel(fwd, 90)["spill_bytes"] > 0  # type: ignore[attr-defined]


def test_script_runs_end_to_end(check: object, tmp_path: Path):
    argv = ["--quick", "--arch", "90", "--seq", "256", "--json", str(tmp_path / "r.json")]
    assert check.main(argv) == 0  # type: ignore[attr-defined]
    assert (tmp_path / "r.json").read_text().count('"ok": true') == 6


@pytest.mark.parametrize("dtype,d_model", [("bf16", 768), ("f32", 256)])
def test_the_fused_cross_entropy_kernels_compile_without_spills_on_sm_90(
    check: object, dtype: str, d_model: int
):
    """Its default launch (`tjx.kernels.CELaunch`): the three kernels compile, fit, need no
    register spills on sm_90 and run their products on wgmma (bf16 and TF32)."""
    kernels = check.lower_ce_kernels(  # type: ignore[attr-defined]
        dtype, d_model, vocab=50304 if dtype == "bf16" else 8192, tokens=1024, z_loss=1e-4, arch=90
    )
    assert sorted(k.name for k in kernels) == ["tjx_ce_dw", "tjx_ce_dx", "tjx_ce_fwd"]
    for kernel in kernels:
        built = check.compile_kernel(kernel, 90)  # type: ignore[attr-defined]
        where = f"{kernel.name} {dtype} d_model={d_model} warps={kernel.num_warps}"
        assert 0 < built["shared_kib"] <= check.SMEM_LIMIT[90] / 1024, f"{where}: {built}"  # type: ignore[attr-defined]
        assert built["spill_bytes"] == 0, f"{where} spills registers: {built}"
        assert built["wgmma"] > 0 and built["mma_sync"] == 0, f"{where}: {built}"
