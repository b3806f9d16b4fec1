"""tjx.nn.probes: per-layer norms, per-token losses and each layer's largest activation and
attention logit, each against a float64 NumPy reference on fresh random inputs; and the proof
that a model traced outside a recording is the same program as without the hooks."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tjx.kernels
from tjx import nn as tnn
from tjx.nn import Block, probes
from tjx.nn.params_io import get_flat_params
from tjx_nn_tests._helpers import build, gpt2_tiny, llama_tiny


def _reference_norms(flat: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-layer L2 norms, float64, from the unrolled parameter names."""
    sums: dict[str, float] = {}
    for name, value in flat.items():
        parts = name.split(".")
        group = f"layer {parts[2]}" if parts[:2] == ["stack", "layers"] else parts[0]
        sums[group] = sums.get(group, 0.0) + float(np.sum(np.square(value.astype(np.float64))))
    return {k: float(np.sqrt(v)) for k, v in sums.items()}


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_layer_norms_cut_a_scanned_stack_per_layer(scan):
    seed = int(np.random.default_rng().integers(1 << 30))
    model = build(llama_tiny(num_layers=3, scan_layers=scan), seed=seed)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    got = {k: float(v) for k, v in probes.layer_norms(params).items()}
    want = _reference_norms(get_flat_params(model))
    assert set(got) == set(want) == {"embed", "layer 0", "layer 1", "layer 2", "final_norm", "head"}
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-6), name


def test_token_losses_match_a_float64_log_softmax():
    rng = np.random.default_rng()
    logits = rng.normal(0, 3, (3, 5, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (3, 5))
    targets[1, 2] = targets[2, 0] = -100
    got = np.asarray(probes.token_losses(jnp.asarray(logits), jnp.asarray(targets)))
    wide = logits.astype(np.float64)
    logz = np.log(np.exp(wide - wide.max(-1, keepdims=True)).sum(-1)) + wide.max(-1)
    picked = np.take_along_axis(wide, np.maximum(targets, 0)[..., None], -1)[..., 0]
    want = np.where(targets == -100, 0.0, logz - picked)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "config",
    [gpt2_tiny(), llama_tiny(attention=tnn.AttentionConfig(sliding_window=5))],
    ids=["gpt2", "llama-gqa-window"],
)
def test_a_recording_holds_each_layers_largest_activation_and_logit(monkeypatch, config):
    """Each layer's recorded maxima against the block outputs and the kernel's own q and k
    (captured by wrapping them), the logits taken in float64 over the pairs the mask lets a
    query see (causal, its segment, its window): rtol 1e-5."""
    rng = np.random.default_rng()
    model = build(config, seed=int(rng.integers(1 << 30)))
    tokens = jnp.asarray(rng.integers(0, 64, (2, 12)), jnp.int32)
    segments = jnp.asarray(np.repeat([[1] * 7 + [2] * 5], 2, axis=0), jnp.int32)
    positions = jnp.asarray(np.repeat([list(range(7)) + list(range(5))], 2, axis=0), jnp.int32)
    outputs, calls = [], []
    block_call, attention = Block.__call__, tjx.kernels.attention

    def seen_block(self, x, **kw):
        out = block_call(self, x, **kw)
        outputs.append(np.asarray(out[0], np.float64))
        return out

    def seen_attention(q, k, v, **kw):
        calls.append((np.asarray(q, np.float64), np.asarray(k, np.float64), kw))
        return attention(q, k, v, **kw)

    monkeypatch.setattr(Block, "__call__", seen_block)
    monkeypatch.setattr(tjx.kernels, "attention", seen_attention)
    with probes.recording() as rec:
        model(tokens, positions=positions, segment_ids=segments)
    values = {k: np.asarray(v) for k, v in rec.stacked().items()}
    assert rec.layers == ["layer 0", "layer 1"] and len(outputs) == len(calls) == 2
    for i, (out, (q, k, kw)) in enumerate(zip(outputs, calls, strict=True)):
        assert values["activation_max"][i] == pytest.approx(np.abs(out).max(), rel=1e-6)
        k = np.repeat(k, q.shape[2] // k.shape[2], axis=2)
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) * kw["scale"]
        rows, cols = np.arange(12)[:, None], np.arange(12)[None, :]
        seen = cols <= rows
        if kw["mask"].window is not None:
            seen &= rows - cols < kw["mask"].window
        same = np.asarray(segments)[:, :, None] == np.asarray(segments)[:, None, :]
        want = np.where(seen[None, None] & same[:, None], logits, -np.inf).max()
        assert values["attention_logit_max"][i] == pytest.approx(want, rel=1e-5)
    if config.attention.sliding_window:
        assert all(kw["mask"].window == 5 for _, _, kw in calls)


def test_a_model_traced_outside_a_recording_is_the_same_program(monkeypatch):
    """The hooks add nothing to a program traced outside `recording` (a run's own step): its
    jaxpr is the one traced with the hooks removed."""
    model = build(gpt2_tiny())
    graphdef, params = nnx.split(model)
    tokens = jnp.zeros((2, 8), jnp.int32)

    def forward(p):
        return nnx.merge(graphdef, p)(tokens)

    with_hooks = str(jax.make_jaxpr(forward)(params))
    for name in ("layer_begins", "layer_ends", "attention_logits"):
        monkeypatch.setattr(probes, name, lambda *a, **k: None)
    assert str(jax.make_jaxpr(forward)(params)) == with_hooks
    assert dataclasses.asdict(probes.Recording())["layers"] == []
    assert tnn.probes is probes
