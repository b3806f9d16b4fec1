"""A decoder mixing Gated DeltaNet and attention layers (``mixer_pattern``, Qwen3.5's layout):
its settings checked by name, the gated attention output, its cache (the attention layers' keys
and values beside the delta layers' fixed-size states) and generation through it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.attention import Attention

F32 = tnn.Precision(jnp.float32, jnp.float32)
DELTA = tnn.DeltaConfig(key_heads=2, value_heads=4, key_dim=8, value_dim=6)
BASE = dict(
    vocab_size=50, max_seq_len=32, d_model=32, num_layers=4, num_heads=4, num_kv_heads=2,
    head_dim=8, precision=F32,
)  # fmt: skip


def _config(**kw):
    return tnn.LlamaConfig(
        **{**BASE, **kw},
        mixer_pattern=["delta", "delta", "attention"],
        delta=DELTA,
        attention=tnn.AttentionConfig(output_gate=True, qk_norm=True),
        norm=tnn.NormConfig(plus_one=True),
        position=tnn.PositionConfig(rope_fraction=0.25),
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(delta=dict(key_heads=2)), "delta.key_heads: only delta layers read it"),
        (dict(mixer_pattern=["delta"]), "delta.key_heads: delta layers need it"),
        (dict(mixer_pattern=["mamba"]), "mixer_pattern"),
        (dict(mixer_pattern=[]), "mixer_pattern must be a non-empty list"),
        (dict(mixer_pattern=["delta"], delta=dict(vars(DELTA), value_heads=3)), "multiple of"),
        (dict(mixer_pattern=["delta"], delta=dict(vars(DELTA), conv_kernel=0)), "conv_kernel"),
        (dict(delta=dict(impl="pallas")), "delta.impl: only delta layers read it"),
        (dict(mixer_pattern=["delta"], delta=dict(vars(DELTA), impl="triton")), "impl"),
    ],
)
def test_bad_mixer_settings_are_refused_by_name(changes, message):
    """(``delta`` given as a mapping here: its own checks run as it is built.)"""
    with pytest.raises(ValueError, match=message):
        if "delta" in changes:
            changes = dict(changes, delta=tnn.DeltaConfig(**changes["delta"]))
        tnn.make_config(tnn.LlamaConfig, {**BASE, **changes})


def test_delta_layers_are_refused_outside_a_causal_decoder():
    fields = dict(vocab_size=50, d_model=32, num_layers=2, num_heads=4, max_seq_len=16)
    with pytest.raises(ValueError, match="BertConfig builds bidirectional attention layers"):
        tnn.make_config(tnn.BertConfig, {**fields, "mixer_pattern": ["delta"], "delta": DELTA})
    with pytest.raises(ValueError, match="builds bidirectional, causal, cross attention layers"):
        tnn.make_config(
            tnn.EncoderDecoderConfig, {**fields, "mixer_pattern": ["delta"], "delta": DELTA}
        )


def test_the_layers_mixers_repeat_the_pattern_and_only_attention_layers_hold_keys():
    cfg = _config()
    assert cfg.layer_mixers() == ("delta", "delta", "attention", "delta")
    assert tnn.make_config(tnn.LlamaConfig, BASE).layer_mixers() == ("attention",) * 4
    model = tnn.Llama(cfg, rngs=nnx.Rngs(0))
    layers = model.stack.layers
    assert [b.delta is not None for b in layers] == [True, True, False, True]
    assert all((b.attn is None) == (b.delta is not None) for b in layers)
    cache = model.init_cache(2, 16)
    assert cache["k"].shape == (1, 2, 16, 2, 8) and cache["conv"].shape == (3, 2, 3, 56)
    assert cache["recurrent"].shape == (3, 2, 4, 8, 6) and cache["recurrent"].dtype == jnp.float32
    nbytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(cache))
    assert tnn.kv_cache_bytes(cfg, batch=2, seq_len=16, dtype=jnp.float32) == nbytes


def test_the_gated_output_is_the_heads_output_times_a_sigmoid_of_x():
    """With the gate's weights at zero every gate is one half: the output is half the output of
    the same attention without a gate."""
    seed = int(np.random.default_rng().integers(1 << 20))
    cfg = tnn.make_config(tnn.LlamaConfig, BASE)
    gated = Attention(
        cfg.replace(**{"attention.output_gate": True}), rngs=nnx.Rngs(seed), causal=True
    )
    plain = Attention(cfg, rngs=nnx.Rngs(seed), causal=True)
    assert plain.gate is None and gated.gate is not None
    for name in ("query", "key", "value", "out"):  # the same weights but the gate's
        getattr(gated, name).kernel.set_value(getattr(plain, name).kernel[...])
    x = jnp.asarray(np.random.default_rng(seed).standard_normal((2, 7, 32)), jnp.float32)
    gated.gate.kernel.set_value(jnp.zeros_like(gated.gate.kernel[...]))
    np.testing.assert_allclose(gated(x)[0], 0.5 * plain(x)[0], rtol=1e-5, atol=1e-6)
    # A random gate: per head and dimension, sigmoid(x · W_gate) before the output projection.
    w = np.random.default_rng(seed + 1).standard_normal((32, 4, 8)).astype(np.float32)
    gated.gate.kernel.set_value(jnp.asarray(w))
    out_w = np.asarray(gated.out.kernel[...]).reshape(32, 32)
    # The plain layer with an identity output projection gives the heads' output, [b, s, h·hd].
    plain.out.kernel.set_value(jnp.eye(32, dtype=jnp.float32).reshape(4, 8, 32))
    per_head = np.asarray(plain(x)[0])
    gate = 1 / (1 + np.exp(-np.einsum("bsd,dk->bsk", np.asarray(x), w.reshape(32, 32))))
    np.testing.assert_allclose(gated(x)[0], (per_head * gate) @ out_w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_a_padded_prefill_then_decode_steps_are_the_whole_sequences_logits(scan):
    """Scanned, the 4 layers are a unit (delta, delta, attention) and a delta layer after it:
    each segment's cache holds its delta layers' states and its attention layer's keys."""
    seed = int(np.random.default_rng().integers(1 << 20))
    model = tnn.Llama(_config(scan_layers=scan), rngs=nnx.Rngs(seed))
    forward = nnx.jit(lambda m, t: m(t))
    cached = nnx.jit(lambda m, t, c, p, n=None: m.forward_cached(t, c, p, n))
    tokens = jnp.asarray(np.random.default_rng(seed).integers(0, 50, (2, 12)))
    whole = np.asarray(forward(model, tokens))
    lengths = jnp.asarray([7, 4])
    cache = model.init_cache(2, 16)
    logits, cache = cached(model, tokens[:, :7], cache, jnp.zeros((2,), jnp.int32), lengths)
    np.testing.assert_allclose(logits[0], whole[0, :7], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[1, :4], whole[1, :4], rtol=1e-5, atol=1e-5)
    pos = lengths
    for _ in range(5):  # each row on from its own length
        rows = jnp.arange(2)
        step, cache = cached(model, tokens[rows, pos][:, None], cache, pos)
        np.testing.assert_allclose(step[:, 0], whole[rows, pos], rtol=1e-5, atol=1e-5)
        pos = pos + 1
    # generate: each greedy token is the argmax of the whole sequence's logits before it.
    out = jnp.asarray(tnn.generate(model, tokens[:1, :4], max_new_tokens=5, temperature=0))
    best = np.argmax(np.asarray(forward(model, out))[0], axis=-1)
    np.testing.assert_array_equal(np.asarray(out)[0, 4:], best[3:8])


def test_a_scanned_hybrid_trains_as_the_unrolled_one_with_the_same_names():
    """6 layers: one scan over two units of (delta, delta, attention) (several segments: the
    4-layer stack of the decode test); the same parameters by their canonical names give the
    same loss and gradients (one compile each)."""
    cfg = _config(num_layers=6)
    unrolled = tnn.Llama(cfg, rngs=nnx.Rngs(0))
    scanned = tnn.Llama(cfg.replace(scan_layers=True), rngs=nnx.Rngs(5))
    flat = tnn.get_flat_params(unrolled)
    assert set(flat) == set(tnn.get_flat_params(scanned))
    assert {"stack.layers.4.delta.a_log", "stack.layers.5.attn.gate.kernel"} <= set(flat)
    tnn.set_flat_params(scanned, flat)
    tokens = jax.random.randint(jax.random.key(int(np.random.default_rng().integers(99))), (2, 10),
                                0, 50)  # fmt: skip
    batch = {"inputs": tokens, "targets": jnp.roll(tokens, -1, axis=1)}

    def loss(model, batch):
        return tnn.objective_loss(model, batch).loss

    losses, grads = [], []
    for model in (unrolled, scanned):
        # The batch is an argument, not a closed-over constant: the program is then the same on
        # every run and the persistent compilation cache serves it.
        value, grad = nnx.jit(nnx.value_and_grad(loss))(model, batch)
        losses.append(value)
        nnx.update(model, grad)
        grads.append(tnn.get_flat_params(model))
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
    for name in grads[0]:
        np.testing.assert_allclose(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)  # fmt: skip


def test_delta_impl_reaches_the_rule_and_pallas_gives_the_scans_loss_and_gradients():
    """``delta.impl`` is the delta layers' `gated_delta_rule(implementation=)`: the Pallas
    kernels (interpreted on a CPU) give the XLA scan's loss and gradients (float32, 1e-5)."""
    cfg = _config(num_layers=1)  # one delta layer: the interpreted kernels are slow
    model = tnn.Llama(cfg.replace(**{"delta.impl": "xla"}), rngs=nnx.Rngs(0))
    pallas = tnn.Llama(cfg.replace(**{"delta.impl": "pallas"}), rngs=nnx.Rngs(1))
    assert {b.delta.implementation for b in pallas.stack.layers if b.delta} == {"pallas"}
    tnn.set_flat_params(pallas, tnn.get_flat_params(model))
    tokens = jax.random.randint(jax.random.key(int(np.random.default_rng().integers(99))), (1, 8),
                                0, 50)  # fmt: skip
    batch = {"inputs": tokens, "targets": jnp.roll(tokens, -1, axis=1)}
    results = []
    for m in (model, pallas):
        # The batch as an argument (not a constant): the same program on every run, cached.
        value, grad = nnx.jit(nnx.value_and_grad(lambda m, b: tnn.objective_loss(m, b).loss))(
            m, batch
        )
        nnx.update(m, grad)
        results.append((value, tnn.get_flat_params(m)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for name, want in results[0][1].items():
        np.testing.assert_allclose(results[1][1][name], want, rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_delta_rules_implementation_is_said_beside_attentions(monkeypatch, tmp_path):
    """#68: ``delta.impl: auto`` is XLA's scan until a GPU measured the kernels faster (tjx-kernels'
    launch table), on Hopper too; the choice is one line, said before attention's."""
    import json

    from tjx import kernels
    from tjx.kernels import launch

    h100 = ("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
    empty = tmp_path / "none.json"
    empty.write_text(json.dumps({"schema": 1, "devices": {}}))
    monkeypatch.setenv(launch.ENV_VAR, str(empty))
    launch.clear_launch_cache()
    bf16 = _config(precision=tnn.Precision(jnp.float32, jnp.bfloat16))
    said: list[str] = []
    with kernels.target(*h100):
        tnn.resolve_attention(bf16.replace(attention_impl="xla"), build=lambda k: None,
                              say=said.append, say_xla=True)  # fmt: skip
        named = tnn.delta_kernel_line(bf16.replace(**{"delta.impl": "pallas"}))
    assert said[0].startswith("delta rule: xla (auto: no tjx measurement of the gated delta")
    assert "NVIDIA H100 80GB HBM3" in said[0] and said[1] == "attention: xla (model.attention_impl)"
    assert named == "delta rule: pallas (model.delta.impl)"
    assert tnn.delta_kernel_line(tnn.make_config(tnn.LlamaConfig, BASE)) is None  # no delta layer
    measured = tmp_path / "measured.json"
    table = {"source": "t", "entries": {}, "timings": {"gdelta-bf16": {"pallas": 2.0, "xla": 3.0}}}
    measured.write_text(json.dumps({"schema": 1, "devices": {h100[1]: table}}))
    monkeypatch.setenv(launch.ENV_VAR, str(measured))
    launch.clear_launch_cache()
    with kernels.target(*h100):
        line = tnn.delta_kernel_line(bf16)
    assert line == ("delta rule: pallas (auto: fastest measured on NVIDIA H100 80GB HBM3 for "
                    "gdelta-bf16: pallas 2 ms, xla 3 ms)")  # fmt: skip
    launch.clear_launch_cache()
