"""The matmul floor: its FLOP accounting against XLA's and against tjx-nn's model count."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import pytest

from experiments.nanogpt.side_by_side import Shape
from tjx import nn
from tjx_tools.nanogpt.floor import Product, measure_floor, step_products

TINY = Shape("t", "tiny", (), 61, 16, 2, 32, 2, 4, 128)


def _xla_flops(product: Product) -> float:
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in product.shapes]
    compiled = jax.jit(lambda a, b: jnp.einsum(product.spec, a, b)).lower(*args).compile()
    cost: Any = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


@pytest.mark.parametrize("index", range(21))
def test_each_product_counts_the_flops_xla_counts(index: int) -> None:
    product = step_products(TINY)[index]
    assert product.flops == pytest.approx(_xla_flops(product), rel=1e-6)


def test_the_step_has_three_times_the_forward_matmul_flops_of_tjx_nn_s_count() -> None:
    """6N per token plus attention's 12·L·s·d (tjx-nn's PaLM count, training = 3 x forward):
    the step's products compute the whole causal score matrix, as PaLM counts it."""
    config = nn.GPT2Config(
        vocab_size=TINY.vocab,
        max_seq_len=TINY.seq,
        d_model=TINY.d,
        num_layers=TINY.layers,
        num_heads=TINY.heads,
        mlp=nn.MLPConfig(dim=TINY.mlp),
    )
    tokens = TINY.batch * TINY.seq
    total = sum(p.count * p.flops for p in step_products(TINY))
    palm = nn.flops_per_token(config, TINY.seq, causal_half=False)
    assert total == pytest.approx(palm * tokens, rel=1e-9)


def test_measure_floor_adds_count_times_seconds() -> None:
    out = measure_floor(TINY, repeats=2)
    assert len(out["products"]) == len(step_products(TINY))
    expected = sum(r["count"] * r["seconds"] for r in out["products"])
    assert out["floor_s"] == pytest.approx(expected)
    assert all(r["seconds"] > 0 and r["gflop_per_s"] > 0 for r in out["products"])
