"""Which cross-entropy ``auto`` takes: measured first, else the one that moves fewer bytes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import (
    DotProducts,
    ce_auto_order,
    ce_implementation,
    chunked_cross_entropy,
    linear_cross_entropy,
)
from tjx.kernels.ce_choice import chunked_ce_bytes, fused_ce_bytes
from tjx.kernels.choice import Target
from tjx.kernels.launch import clear_launch_cache

from ._ref import measured_table, rel_err

H100 = Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
GPT2 = (16384, 768, 50304)  # gpt2_small's head: tokens, d_model, vocab


def test_auto_is_xla_off_cuda_and_for_gpt2_without_a_measurement():
    assert ce_auto_order(jnp.bfloat16, *GPT2, Target("cpu")).order == ("xla",)
    assert ce_auto_order(jnp.bfloat16, *GPT2, Target("tpu", "TPU v5 lite")).order == ("xla",)
    choice = ce_auto_order(jnp.bfloat16, *GPT2, H100)
    # every token tile of the fused kernels re-reads the 77 MB unembedding: ~25x the bytes
    fused, xla = fused_ce_bytes(*GPT2, jnp.bfloat16), chunked_ce_bytes(*GPT2, 2)
    assert fused > 20 * xla
    assert choice.order == ("xla",) and "no measurement on NVIDIA H100" in choice.reason
    assert f"{fused / 1e9:.3g} GB (fused) vs {xla / 1e9:.3g} GB (chunked XLA)" in choice.reason


def test_without_a_measurement_the_fused_kernel_wins_only_on_fewer_bytes():
    # one token tile and one vocabulary tile: the kernels load every operand about once, while
    # the chunked program still writes and re-reads float32 logits
    tiny = (64, 64, 128)
    assert fused_ce_bytes(*tiny, jnp.bfloat16) < chunked_ce_bytes(*tiny, 2)
    assert ce_auto_order(jnp.bfloat16, *tiny, H100).order == ("pallas", "xla")
    assert ce_auto_order(jnp.float64, *tiny, H100).order == ("xla",)  # no fused float64


def test_a_measurement_on_the_device_kind_ranks_first(monkeypatch, tmp_path):
    measured_table(monkeypatch, tmp_path, {"ce-bf16": {"pallas": 3.0, "xla": 4.5}})
    choice = ce_auto_order(jnp.bfloat16, *GPT2, H100)
    assert choice.order == ("pallas", "xla") and "pallas 3 ms, xla 4.5 ms" in choice.reason
    other = Target("gpu", "NVIDIA A100-SXM4-40GB", (8, 0))
    assert ce_auto_order(jnp.bfloat16, *GPT2, other).order == ("xla",)  # H100 figures only
    measured_table(monkeypatch, tmp_path, {"ce-bf16": {"xla": 4.5}})
    assert ce_auto_order(jnp.bfloat16, *GPT2, H100).order == ("xla",)
    clear_launch_cache()


def test_timing_buckets_are_checked(monkeypatch, tmp_path):
    from tjx.kernels.launch import load_launch_tables

    measured_table(monkeypatch, tmp_path, {"ce-int8": {"pallas": 1.0}})
    with pytest.raises(ValueError, match="'ce-<bf16|fp16|fp32>' \\(cross-entropy\\)"):
        load_launch_tables()
    clear_launch_cache()


def test_an_explicit_implementation_is_taken_and_a_bad_one_named():
    h, w = jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((8, 16), jnp.bfloat16)
    assert ce_implementation("pallas", h, w, Target("cpu")) == "pallas"
    assert ce_implementation("xla", h, w, H100) == "xla"
    with pytest.raises(
        ValueError, match="must be one of auto, xla, pallas, pallas_rows; got 'fused'"
    ):
        ce_implementation("fused", h, w)


def test_linear_cross_entropy_runs_either_implementation_with_one_result():
    rng = np.random.default_rng(3)
    h = jnp.asarray(rng.standard_normal((2, 9, 16)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((16, 40)) * 0.5, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 40, (2, 9)), jnp.int32)
    xla = linear_cross_entropy(h, w, labels, implementation="auto", z_loss=1e-3)  # CPU: chunked
    ref = chunked_cross_entropy(h, w, labels, z_loss=1e-3)
    assert float(xla.loss) == float(ref.loss)
    fused = linear_cross_entropy(h, w, labels, implementation="pallas", z_loss=1e-3)
    assert rel_err(fused.loss, ref.loss) <= 1e-5 and int(fused.num_correct) == int(ref.num_correct)


def test_a_soft_capped_head_never_takes_the_fused_kernel():
    """The fused kernel does not cap its logits: ``auto`` takes XLA even where a measurement
    ranks Pallas first, and an explicit ``pallas`` with a cap is refused in one line."""
    h, w = jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((8, 16), jnp.bfloat16)
    assert ce_implementation("auto", h, w, H100, softcap=30.0) == "xla"
    assert ce_implementation("xla", h, w, H100, softcap=30.0) == "xla"
    with pytest.raises(ValueError, match="does not soft-cap logits.*cross_entropy_impl: xla"):
        ce_implementation("pallas", h, w, Target("cpu"), softcap=30.0)
    rng = np.random.default_rng(5)
    hf = jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    wf = jnp.asarray(rng.standard_normal((16, 24)) * 3.0, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 24, (2, 5)), jnp.int32)
    got = linear_cross_entropy(hf, wf, labels, softcap=2.0)
    want = chunked_cross_entropy(hf, wf, labels, softcap=2.0)
    assert float(got.loss) == float(want.loss)
    assert float(got.loss) != float(chunked_cross_entropy(hf, wf, labels).loss)
    with pytest.raises(ValueError, match="does not soft-cap logits"):
        linear_cross_entropy(hf, wf, labels, implementation="pallas", softcap=2.0)


def test_auto_with_a_cap_ignores_a_measurement_that_ranks_the_fused_kernel_first(
    monkeypatch, tmp_path
):
    measured_table(monkeypatch, tmp_path, {"ce-bf16": {"pallas": 1.0, "xla": 9.0}})
    h, w = jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((8, 16), jnp.bfloat16)
    try:
        assert ce_implementation("auto", h, w, H100) == "pallas"  # the measurement counts...
        assert ce_implementation("auto", h, w, H100, softcap=30.0) == "xla"  # ...but not capped
    finally:
        clear_launch_cache()


def test_a_head_with_its_own_products_takes_the_chunked_loss_and_dot_products_are_the_default(
    monkeypatch, tmp_path
):
    """A ``products`` (a float8 head's) is the chunked loss's only: ``auto`` takes XLA even
    where a measurement ranks Pallas first, an explicit ``pallas`` is refused in one line, and
    the default `DotProducts` given by name changes no bit of the loss."""
    measured_table(monkeypatch, tmp_path, {"ce-bf16": {"pallas": 1.0, "xla": 9.0}})
    h, w = jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((8, 16), jnp.bfloat16)
    try:
        assert ce_implementation("auto", h, w, H100) == "pallas"
        assert ce_implementation("auto", h, w, H100, products=DotProducts()) == "xla"
        with pytest.raises(ValueError, match="no float8 path.*cross_entropy_impl: xla"):
            ce_implementation("pallas", h, w, H100, products=DotProducts())
    finally:
        clear_launch_cache()
    rng = np.random.default_rng(11)
    hf = jnp.asarray(rng.standard_normal((2, 6, 16)), jnp.bfloat16)
    wf = jnp.asarray(rng.standard_normal((16, 24)), jnp.bfloat16)
    labels = jnp.asarray(rng.integers(0, 24, (2, 6)), jnp.int32)
    got = linear_cross_entropy(hf, wf, labels, products=DotProducts(), chunk_size=4)
    want = chunked_cross_entropy(hf, wf, labels, chunk_size=4)
    assert float(got.loss) == float(want.loss)
