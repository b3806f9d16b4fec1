"""The flash kernels' prices follow their own grids and loop bounds (costs.py's formulas)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import custom_call_cost
from tjx.kernels.costs import _walked
from tjx.kernels.flash_fwd import KernelConfig, kv_block_range, q_block_range
from tjx.kernels.launch import generic_launch

H100 = "NVIDIA H100 80GB HBM3"


def _config(s: int, causal: bool) -> KernelConfig:
    return KernelConfig(
        scale=1.0, causal=causal, has_segments=False, q_len=s, kv_len=s, kv_valid=s, groups=1,
        block_q=16, block_k=16, block_q_bwd=16, block_k_bwd=16, num_warps=4, num_warps_bwd=4,
        num_stages=2, num_stages_bwd=2, interpret=True,
    )  # fmt: skip


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("s,own,walked", [(256, 64, 32), (256, 32, 64), (512, 128, 128)])
def test_visited_rows_are_the_kernels_own_loop_bounds(s: int, own: int, walked: int, causal):
    cfg = _config(s, causal)
    # Forward / dQ: query block i walks key blocks [lo, hi) (lo = 0 without a window).
    by_kernel = sum(int(kv_block_range(cfg, jnp.int32(i), own, walked)[3]) * walked
                    for i in range(s // own))  # fmt: skip
    assert _walked(own, walked, s, s, causal, after=False) == by_kernel
    # dK/dV: key block j walks query blocks [first, n_q) (all of them without causality).
    firsts = [int(q_block_range(cfg, jnp.int32(j), walked, own)[0]) for j in range(s // own)]
    assert _walked(own, walked, s, s, causal, after=True) == sum((s - f * walked) for f in firsts)


def test_a_full_forward_reads_the_keys_once_per_query_block():
    b, s, h, d = 2, 512, 4, 64
    q = ("bf16", (b, s, h, d))
    launch = generic_launch(d, np.dtype("bfloat16"), hopper=True)
    blocks = s // launch.block_q
    flops, read, written = custom_call_cost(  # type: ignore[misc]
        "tjx_flash_fwd", (blocks, b, h), [q, q, q], [q, ("f32", (b, h, s))], causal=False,
        device_kind=H100,
    )  # fmt: skip
    qkv = b * s * h * d * 2
    assert flops == {"bf16": 4.0 * b * h * s * s * d}
    assert read == qkv + 2 * qkv * blocks  # K and V once per query block, not once
    assert written == qkv + b * h * s * 4


def test_causal_kernels_do_a_little_over_half_and_the_backward_matches_its_products():
    b, s, h, d = 1, 1024, 2, 128
    q, rows = ("bf16", (b, s, h, d)), ("f32", (b, h, s))
    launch = generic_launch(d, np.dtype("bfloat16"), hopper=True)
    fwd_grid = (s // launch.block_q, b, h)
    full, _, _ = custom_call_cost("tjx_flash_fwd", fwd_grid, [q] * 3, [q, rows], causal=False,
                                  device_kind=H100)  # type: ignore[misc]  # fmt: skip
    half, _, _ = custom_call_cost("tjx_flash_fwd", fwd_grid, [q] * 3, [q, rows],
                                  device_kind=H100)  # type: ignore[misc]  # fmt: skip
    assert 0.5 < half["bf16"] / full["bf16"] < 0.6  # the diagonal tiles are computed whole
    bwd_in = [q, q, q, q, rows, rows]
    square = b * h * s * s * d
    dq, _, _ = custom_call_cost("tjx_flash_bwd_dq", (s // launch.block_q_bwd, b, h), bwd_in, [q],
                                causal=False, device_kind=H100)  # type: ignore[misc]  # fmt: skip
    dkdv, _, w = custom_call_cost("tjx_flash_bwd_dkdv", (s // launch.block_k_bwd, b, h), bwd_in,
                                  [q, q], causal=False, device_kind=H100)  # type: ignore[misc]  # fmt: skip
    assert dq == {"bf16": 6.0 * square}  # QKᵀ again, dO·Vᵀ, dS·K
    assert dkdv == {"bf16": 8.0 * square}  # QKᵀ again, dV, dO·Vᵀ, dK
    assert w == 2 * b * s * h * d * 2


def test_a_head_split_backward_recomputes_the_scores_in_each_program():
    b, s, h, d = 1, 512, 2, 256  # 16-bit head_dim 256 on Hopper: backward head split 2
    launch = generic_launch(d, np.dtype("bfloat16"), hopper=True)
    assert launch.head_split_bwd == 2
    q, rows = ("bf16", (b, s, h, d)), ("f32", (b, h, s))
    bwd_in = [q, q, q, q, rows, rows]
    square = b * h * s * s * d
    dq, _, _ = custom_call_cost("tjx_flash_bwd_dq", (s // launch.block_k_bwd * 2, b, h), bwd_in,
                                [q], causal=False, device_kind=H100)  # type: ignore[misc]  # fmt: skip
    dkdv, _, _ = custom_call_cost("tjx_flash_bwd_dkdv", (s // launch.block_k_bwd * 2, b, h),
                                  bwd_in, [q, q], causal=False, device_kind=H100)  # type: ignore[misc]  # fmt: skip
    assert dq == {"bf16": 10.0 * square}  # 1.67x the 6 products (kernels README)
    assert dkdv == {"bf16": 12.0 * square}  # 1.5x the 8


def test_other_kernels_are_not_priced_here():
    q = ("bf16", (1, 16, 1, 16))
    assert custom_call_cost("someone_elses_kernel", (1, 1, 1), [q] * 3, [q]) is None


def test_a_roofline_prices_tjx_calls_and_leaves_others_to_it():
    from types import SimpleNamespace

    from tjx.kernels import roofline_costs

    def arr(dtype: str, *dims: int) -> SimpleNamespace:
        return SimpleNamespace(dtype=dtype, dims=dims)

    q, out = arr("bf16", 2, 256, 4, 64), arr("bf16", 2, 256, 4, 64)
    call = SimpleNamespace(
        kernel="tjx_flash_fwd", grid=(4, 2, 4), operands=[q, q, q], results=[out]
    )
    for capability, hopper in [((9, 0), True), ((8, 0), False), (None, False)]:
        cost = roofline_costs(causal=True, device_kind=H100, compute_capability=capability)
        assert cost(call) == custom_call_cost(
            "tjx_flash_fwd", (4, 2, 4), [("bf16", q.dims)] * 3, [("bf16", out.dims)],
            causal=True, device_kind=H100, hopper=hopper,
        )  # fmt: skip
    assert cost(SimpleNamespace(kernel=None)) is None  # a custom call that is no kernel
