"""The fused cross-entropy kernels' prices follow their own launches (costs.py's formulas)."""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import pytest

from tjx.kernels import custom_call_cost, fused_cross_entropy
from tjx.kernels.ce_launch import DEFAULT_CE_LAUNCH

_ITEM = {"bf16": 2, "f32": 4}
_HLO = {jnp.dtype(jnp.bfloat16): "bf16", jnp.dtype(jnp.float32): "f32", jnp.dtype(jnp.int32): "s32"}


def _launches(tokens: int, d: int, vocab: int, dtype: str) -> list[tuple[str, tuple, list]]:
    """(kernel name, grid, operand shapes) of every pallas_call in the traced fwd + bwd."""
    dt = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    h = jax.ShapeDtypeStruct((tokens, d), dt)
    w = jax.ShapeDtypeStruct((d, vocab), dt)
    lab = jax.ShapeDtypeStruct((tokens,), jnp.int32)
    loss = lambda h, w, y: fused_cross_entropy(h, w, y, z_loss=1e-4, interpret=True).loss
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(h, w, lab).jaxpr
    found: list[tuple[str, tuple, list]] = []

    def walk(j: jax.extend.core.Jaxpr) -> None:
        for e in j.eqns:
            if e.primitive.name == "pallas_call":
                shapes = [(_HLO[jnp.dtype(v.aval.dtype)], v.aval.shape) for v in e.invars]
                found.append((str(e.params["name"]), tuple(e.params["grid_mapping"].grid), shapes))
            for sub in jax.extend.core.jaxprs_in_params(e.params):
                walk(sub)

    walk(jaxpr)
    return found


def _loads(name: str, grid: tuple, t: int, d: int, v: int, item: int) -> int:
    """Bytes one launch loads, counted by walking its programs and loops as the kernel does."""
    launch = DEFAULT_CE_LAUNCH.fitted(d)
    bv, bk = launch.block_v, launch.block_k
    total = 0
    if name == "tjx_ce_fwd":
        bt = t // grid[0]
        for _ in range(grid[0]):
            total += 4 * bt  # labels
            for _ in range(v // bv):
                for _ in range(d // bk):
                    total += (bt * bk + bk * bv) * item
    elif name == "tjx_ce_dx":
        bt, bd = t // grid[0], d // grid[1]
        for _ in range(grid[0] * grid[1]):
            total += 8 * bt  # labels, lse
            for _ in range(v // bv):
                total += 8  # g_ce, g_z
                for _ in range(d // bk):
                    total += (bt * bk + bk * bv) * item
                total += bd * bv * item  # its rows of the unembedding
    else:
        bd, bv = d // grid[0], v // grid[1]
        bt = launch.block_t
        for _ in range(grid[0] * grid[1]):
            for _ in range(t // bt):
                total += 8 * bt + 8  # lse, labels, g
                for _ in range(d // bk):
                    total += (bt * bk + bk * bv) * item
                total += bt * bd * item  # its columns of the hidden tile
    return total


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_each_kernel_is_priced_by_the_loads_of_its_own_launch(dtype: str):
    t, d, vocab = 256, 128, 1000  # vocab padded to 1024 by the wrapper
    launches = _launches(t, d, vocab, dtype)
    assert sorted(n for n, _, _ in launches) == ["tjx_ce_dw", "tjx_ce_dx", "tjx_ce_fwd"]
    item = _ITEM[dtype]
    v = -(-vocab // DEFAULT_CE_LAUNCH.block_v) * DEFAULT_CE_LAUNCH.block_v
    for name, grid, operands in launches:
        flops, read, written = custom_call_cost(name, grid, operands, [])  # type: ignore[misc]
        assert read == _loads(name, grid, t, d, v, item), name
        recompute = 1 if name == "tjx_ce_fwd" else d // DEFAULT_CE_LAUNCH.block_d + 1
        assert flops == {dtype: 2.0 * t * d * v * recompute}, name
        assert written == {"tjx_ce_fwd": 12 * t, "tjx_ce_dx": t * d * item}.get(
            name, d * v * item
        ), name


def test_the_unembedding_is_read_once_per_token_tile_not_once():
    """GPT-2 small's head at 16 × 1024 tokens: the forward alone reads the unembedding
    T / B_t times (256 × 77 MB); that is what the estimate charges it, L2 or not."""
    t, d, v = 16384, 768, 50304
    bt = DEFAULT_CE_LAUNCH.block_t
    _, read, _ = custom_call_cost(  # type: ignore[misc]
        "tjx_ce_fwd", (t // bt,), [("bf16", (t, d)), ("bf16", (d, v)), ("s32", (t,))], []
    )
    unembedding = d * v * 2
    assert read > (t // bt) * unembedding > 200 * unembedding
