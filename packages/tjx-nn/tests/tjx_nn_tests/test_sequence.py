"""The ``sequence_parallel`` hook, with a split that does its attention on one device (the real
one, tjx.parallel.ContextParallel, is tested across devices in tests-integration)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx import kernels
from tjx import nn as tnn

from ._helpers import build, gpt2_tiny, llama_tiny


class OneDeviceSplit:
    """A split in name only: the same order, attention through the given block halves."""

    shards = 2

    def __init__(self):
        self.calls = []

    def check(self, seq_len, name="sequence length"):
        if seq_len % 4:
            raise ValueError(f"{name}: {seq_len} must be divisible by 4")

    def positions(self, batch, seq_len):
        self.calls.append("positions")
        return jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32), (batch, seq_len))

    def attention(self, q, k, v, *, forward, backward, causal, segment_ids, scale, window):
        self.calls.append(("attention", causal, window))
        ids = None if segment_ids is None else (segment_ids, segment_ids)
        out, _ = forward(q, k, v, causal=causal, segment_ids=ids, scale=scale, window=window)
        del backward
        return out


def _toks(s=8):
    return jnp.asarray(np.random.default_rng(1).integers(0, 64, (2, s)), jnp.int32)


def test_a_split_model_runs_its_attention_positions_and_loss_through_the_split():
    model = build(llama_tiny(attention=tnn.AttentionConfig(sliding_window=3)))
    toks = _toks()
    batch = {"inputs": toks, "targets": jnp.roll(toks, -1, 1)}
    want_logits, want_loss = model(toks), tnn.objective_loss(model, batch)
    split = OneDeviceSplit()
    with tnn.sequence_parallel(split):
        logits = model(toks)
        loss = tnn.objective_loss(model, batch)
        assert tnn.current_sequence_parallel() is split
    assert tnn.current_sequence_parallel() is None
    np.testing.assert_allclose(logits, want_logits, rtol=1e-6, atol=1e-6)
    # every part of the loss (the MoE router's summed statistics are None for a dense model)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), loss, want_loss)
    assert ("attention", True, 3) in split.calls and "positions" in split.calls
    with tnn.sequence_parallel(None):  # no split: a no-op
        np.testing.assert_allclose(model(toks), want_logits, rtol=1e-6, atol=1e-6)


def test_a_sequence_the_split_cannot_divide_is_refused_by_its_words():
    with tnn.sequence_parallel(OneDeviceSplit()), pytest.raises(ValueError, match="by 4"):
        build(llama_tiny())(_toks(6))


@pytest.mark.parametrize(
    "cfg,match",
    [
        (
            llama_tiny(attention_impl="cudnn", precision="bf16"),
            "attention_impl 'cudnn' cannot run context-parallel",
        ),
        (
            llama_tiny(attention_impl="pallas", attention=tnn.AttentionConfig(sliding_window=3)),
            "'pallas' cannot apply slid",
        ),
        (gpt2_tiny(position=tnn.PositionConfig(kind="alibi")), "no additive attention bias"),
    ],
)
def test_what_a_split_cannot_run_is_refused_naming_the_setting(cfg, match):
    # Built for an H100 (where cuDNN is a kernel the model may hold: a CPU refuses it as the
    # model is built), refused by the split when called.
    with kernels.target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)):
        model = build(cfg)
    with tnn.sequence_parallel(OneDeviceSplit()), pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda t: model(t), _toks())


def test_a_split_refuses_the_tokamax_kernel(monkeypatch):
    """tokamax's attention runs whole (no forward and backward halves for the blocks): a model
    built for an H100 with it (tokamax taken as installed: nothing of it runs) is refused by
    the split, naming the setting."""
    from tjx.kernels import choice

    monkeypatch.setattr(choice, "installed", lambda: True)
    with kernels.target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)):
        model = build(llama_tiny(attention_impl="tokamax", precision="bf16"))
    match = "attention_impl 'tokamax' cannot run context-parallel"
    with tnn.sequence_parallel(OneDeviceSplit()), pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda t: model(t), _toks())
