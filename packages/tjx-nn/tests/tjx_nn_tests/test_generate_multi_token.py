"""A decode step of several tokens (``forward_cached(..., extend=True)``, what a speculative
draft's verification runs) against the one-token decode path it generalizes: for each attention
flavour ``generate`` decodes, T one-token steps and one T-token step give the same logits and
the same cache contents, on fresh random weights and tokens (float64; rtol 1e-10 with an absolute
floor of 1e-10 of the largest value). The rows stand at different positions, one of them rolled
back over a rejected token (the speculative case), and rows past a row's length hold large
garbage that no query may see."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.families.gemma4 import Gemma4Options
from tjx.nn.kv_cache import DELTA_ENTRIES, write_step

F32 = tnn.Precision(jnp.float32, jnp.float32)
# The comparison runs in float64 (under ``jax.enable_x64``): in float32 the two paths sum in
# different orders, and a random norm of a near-zero vector can blow that rounding up past any
# tolerance tight enough to catch a misplaced token.
F64 = tnn.Precision(jnp.float64, jnp.float64)
BASE = dict(
    vocab_size=32, max_seq_len=16, d_model=16, num_layers=2, num_heads=4, num_kv_heads=2,
    head_dim=4, mlp=tnn.MLPConfig(dim=24), precision=F32,
)  # fmt: skip
MLA = dict(
    num_kv_heads=4, head_dim=8, **{"attention.type": "mla"},
    mla=tnn.MLAConfig(kv_latent_dim=8, qk_rope_head_dim=4, v_head_dim=6),
)  # fmt: skip
# gpt-oss: sinks, biases, a window on every other layer; Gemma 2's soft cap.
SINKS = dict(
    **{"attention.sinks": True},
    use_bias=True,
    **{"attention.sliding_window": 4},
    **{"attention.window_pattern": ("local", "global")},
    **{"attention.logit_softcap": 2.0},
)
# Llama 4: chunked RoPE layers, a NoPE global layer with its temperature, an MoE layer.
LLAMA4 = dict(
    num_layers=4,
    **{"attention.chunk": 3},
    **{"attention.window_pattern": ("local",) * 3 + ("global",)},
    **{"llama4.global_nope": True},
    qk_l2_norm=True,
    **{"llama4.nope_temperature_floor": 2.0},
    **{"llama4.nope_temperature_scale": 0.5},
    moe=tnn.MoEConfig(
        num_experts=4,
        experts_per_token=1,
        expert_mlp_dim=4,
        layer_step=2,
        router="sigmoid_plain",
        router_norm_topk=False,
        router_scales_input=True,
    ),
)
# DeepSeek-V3: absorbed MLA, yarn, MoE with a capacity (which a decode step must not apply).
DEEPSEEK = dict(
    MLA, mla=tnn.MLAConfig(kv_latent_dim=8, qk_rope_head_dim=4, v_head_dim=6, q_lora_rank=10),
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=8, num_shared_experts=1,
                      first_dense=1, capacity_factor=0.5),
    position=tnn.PositionConfig(rope_scaling=dict(
        type="yarn", factor=4.0, original_max_position_embeddings=8, mscale=1.0,
        mscale_all_dim=1.0)),
)  # fmt: skip
# Gemma 4: shared-KV layers reading their sources, global layers of their own geometry.
GEMMA4 = dict(
    num_layers=4, head_dim=8, **{"attention.sliding_window": 3},
    **{"attention.window_pattern": ("local", "global")}, **{"attention.qk_norm": True},
    position=tnn.PositionConfig(rope_local_theta=100.0),
    gemma4=Gemma4Options(global_head_dim=16, global_kv_heads=1, global_values_from_keys=True,
                         global_rope_proportion=0.25, value_norm=True, kv_shared_layers=2,
                         per_layer_input_dim=4, per_layer_vocab_size=32),
)  # fmt: skip
HYBRID = dict(
    num_layers=3, mixer_pattern=["delta", "delta", "attention"], head_dim=8,
    delta=tnn.DeltaConfig(key_heads=2, value_heads=4, key_dim=8, value_dim=6),
    **{"attention.output_gate": True},
)  # fmt: skip
#: Each flavour of the cached path: its config fields (Llama's unless ``gpt2``).
FLAVOURS = {
    "gqa-scanned": dict(scan_layers=True),
    "gpt2-alibi": dict(gpt2=True, position=tnn.PositionConfig(kind="alibi")),
    "t5-bias": dict(position=tnn.PositionConfig(kind="t5")),
    # Every layer windowed: a rolling cache of the window's 3 slots, which the 3-token step fills.
    "rolling-window": dict(**{"attention.sliding_window": 3}),
    "sinks-softcap-window": SINKS,
    "llama4-chunks": LLAMA4,
    "mla-latent": dict(**{"attention.type": "mla"}, mla=tnn.MLAConfig(kv_latent_dim=8)),
    "deepseek-moe": DEEPSEEK,
    # DeepSeek's MLA with biases on the up-projections: every cached latent up-projected again.
    "deepseek-unabsorbed": dict(**MLA, **{"attention.qkv_bias": True}),
    "decode-topk": dict(**{"attention.decode_topk": 3}),
    "gemma4-shared-kv": GEMMA4,
    "delta-hybrid": HYBRID,
}
#: Whether a row may roll back: a delta layer's recurrent state cannot (it read the token).
ROLLBACK = {name: name != "delta-hybrid" for name in FLAVOURS}


def _model(name: str, seed: int):
    fields = dict(BASE, precision=F64, **FLAVOURS[name])
    if fields.pop("gpt2", False):
        fields = {k: v for k, v in fields.items() if k not in ("num_kv_heads", "head_dim")}
        config = tnn.make_config(tnn.GPT2Config, fields)
    else:
        config = tnn.make_config(tnn.LlamaConfig, fields)
    model = tnn.build_model(config, rngs=nnx.Rngs(seed))
    # Random norms, biases, sinks and gates (init leaves them 0 or 1), so a misread one shows.
    rs = np.random.default_rng(seed)
    flat = tnn.get_flat_params(model)
    tnn.set_flat_params(model, {k: v + 0.2 * rs.standard_normal(v.shape) for k, v in flat.items()})
    return model


def _close(got, want, what):
    want = np.asarray(want)
    floor = 1e-10 * max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=floor, err_msg=what)


@pytest.mark.parametrize("name", list(FLAVOURS))
def test_one_step_of_several_tokens_is_several_one_token_steps(name):
    with jax.enable_x64(True):
        _one_step_of_several_tokens(name)


def _one_step_of_several_tokens(name: str) -> None:
    seed = int(np.random.default_rng().integers(1 << 20))
    model = _model(name, seed)
    one = nnx.jit(lambda m, t, c, p: m.forward_cached(t, c, p))
    many = nnx.jit(lambda m, t, c, p: m.forward_cached(t, c, p, extend=True))
    width, c, b = 3, 5, 2  # a 3-token step after 5 positions
    total = c + width
    rs = np.random.default_rng(seed)
    tokens = jnp.asarray(rs.integers(0, 32, (b, total)), jnp.int32)
    empty = model.init_cache(b, 10)
    slots = {n: a.shape[2] for n, a in empty.items() if n not in DELTA_ENTRIES}
    # The reference: one token per step; the cache after each position.
    cache, logits, after = empty, [], []
    for p in range(total):
        step, cache = one(model, tokens[:, p : p + 1], cache, jnp.full((b,), p, jnp.int32))
        logits.append(np.asarray(step[:, 0]))
        after.append(cache)
    # Row 0 goes on at position c; row 1 (where it may) wrote a rejected token at c - 1 and
    # goes back to it, as a rejected draft's row does.
    back = 1 if ROLLBACK[name] else 0
    starts = np.array([c, c - back])
    wrong = tokens.at[1, c - 1].set((tokens[1, c - 1] + 1) % 32) if back else tokens
    cache = empty
    for p in range(c):
        _, cache = one(model, wrong[:, p : p + 1], cache, jnp.full((b,), p, jnp.int32))
    # Rows past each row's last position (where a cache does not roll) hold garbage.
    last = starts + width - 1
    garbage = {}
    for n, a in cache.items():
        if n in slots and slots[n] > total:
            past = np.arange(slots[n])[None, :] > last[:, None]  # [b, T]
            noise = 1e3 * rs.standard_normal(a.shape).astype(np.float64)
            garbage[n] = past.reshape(1, b, -1, *(1,) * (a.ndim - 3))
            cache[n] = jnp.where(garbage[n], noise, a)
    rows = np.arange(b)[:, None]
    ids = tokens[rows, starts[:, None] + np.arange(width)]
    got, cache = many(model, ids, cache, jnp.asarray(starts, jnp.int32))
    for r in range(b):
        want = np.stack([logits[p][r] for p in range(starts[r], starts[r] + width)])
        _close(got[r], want, f"row {r}'s logits")
        for n, a in cache.items():
            ref = np.asarray(after[last[r]][n])[:, r]
            mine = np.asarray(a)[:, r]
            if n in garbage:  # the garbage past the row's length stays and is never read
                keep = ~garbage[n][0, r]
                mine, ref = mine * keep, ref * keep
            _close(mine, ref, f"row {r}'s cache entry {n!r}")


def test_a_step_of_more_tokens_than_slots_is_refused_in_one_line():
    cache = {"k": jnp.zeros((1, 3, 1, 2)), "v": jnp.zeros((1, 3, 1, 2))}
    new = {"k": jnp.ones((1, 4, 1, 2)), "v": jnp.ones((1, 4, 1, 2))}
    with pytest.raises(ValueError, match="a decode step of 4 tokens does not fit a cache of 3"):
        write_step(cache, new, jnp.zeros((1,), jnp.int32), rolling=True)


def test_a_length_dependent_rope_scaling_is_refused_for_several_tokens():
    scaling = dict(type="dynamic", factor=2.0, original_max_position_embeddings=8)
    model = tnn.Llama(
        tnn.make_config(tnn.LlamaConfig, {**BASE, "position.rope_scaling": scaling}),
        rngs=nnx.Rngs(0),
    )
    cache = model.init_cache(1, 8)
    tokens = jnp.zeros((1, 2), jnp.int32)
    # Jitted, the model an argument (eagerly, each of its ops was compiled on its own): the
    # refusal comes as the step is traced.
    many = nnx.jit(lambda m, t, c, p: m.forward_cached(t, c, p, extend=True))
    with pytest.raises(ValueError, match="rope_scaling \\(dynamic or longrope\\) turns"):
        many(model, tokens, cache, jnp.zeros((1,), jnp.int32))
    # One token per step stays served (the path generate takes).
    one = nnx.jit(lambda m, t, c, p: m.forward_cached(t, c, p))
    logits, _ = one(model, tokens[:, :1], cache, jnp.zeros((1,), jnp.int32))
    assert logits.shape == (1, 1, 32)
