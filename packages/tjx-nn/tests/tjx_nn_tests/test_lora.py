"""LoRA adapters: by role, exact at step 0, trainable apart from the base, merged, exported."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn


def llama(scan: bool, **kw: object) -> tnn.Llama:
    config = tnn.LlamaConfig(vocab_size=40, max_seq_len=16, d_model=16, num_layers=2, num_heads=4,
                             num_kv_heads=2, mlp=tnn.MLPConfig(dim=24), scan_layers=scan,
                             **kw)  # fmt: skip
    return tnn.Llama(config, rngs=nnx.Rngs(int(np.random.default_rng().integers(1 << 20))))


def tokens(n: int = 2, s: int = 12) -> jax.Array:
    return jnp.asarray(np.random.default_rng().integers(0, 40, (n, s)), jnp.int32)


def randomize_b(model: nnx.Module, scale: float = 0.3) -> None:
    """Give every adapter a random B (as after training), so it changes the outputs."""
    key = jax.random.key(int(np.random.default_rng().integers(1 << 20)))
    for i, (_, _, dense) in enumerate(tnn.lora.lora_modules(model)):
        b = dense.lora.lora_b  # type: ignore[union-attr]
        b.set_value(scale * jax.random.normal(jax.random.fold_in(key, i), b[...].shape))


@pytest.mark.parametrize("scan", [False, True])
def test_adapters_go_on_the_named_roles_and_the_model_starts_exactly_as_the_base(scan: bool):
    model, x = llama(scan), tokens()
    before = model(x)
    paths = tnn.add_lora(model, tnn.LoraConfig(rank=4, targets=("q", "v", "down")),
                         rngs=nnx.Rngs(1))  # fmt: skip
    layer = "stack/layers/attn" if scan else "stack/layers/0/attn"
    assert f"{layer}/query" in paths and f"{layer}/value" in paths
    assert len(paths) == 3 * (1 if scan else 2)
    assert {p.rsplit("/", 1)[1] for p in paths} == {"query", "value", "fc_out"}
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(before))  # B = 0: exact
    # A [*in, r] (stacked: a leading layers axis with its logical name), B [r, *out].
    q = model.stack.layers.attn.query if scan else model.stack.layers[0].attn.query
    lead = (2,) if scan else ()
    assert q.lora.lora_a[...].shape == (*lead, 16, 4)
    assert q.lora.lora_b[...].shape == (*lead, 4, 4, 4)
    names = q.lora.lora_a.get_metadata()["out_sharding"]
    assert names == (("layers",) if scan else ()) + ("embed", "lora_rank")
    assert tnn.lora_param_count(model) == 2 * (16 * 4 + 4 * 16 + 16 * 4 + 4 * 8 + 24 * 4 + 4 * 16)


def test_a_trained_adapter_adds_scale_times_x_a_b_to_its_projection():
    model = llama(False)
    config = tnn.LoraConfig(rank=3, alpha=6.0, targets=("up",))
    tnn.add_lora(model, config, rngs=nnx.Rngs(0))
    randomize_b(model)
    dense = model.stack.layers[1].mlp.fc_in
    x = jax.random.normal(jax.random.key(0), (5, 16))
    a = np.asarray(dense.lora.lora_a[...], np.float64)
    b = np.asarray(dense.lora.lora_b[...], np.float64)
    w = np.asarray(dense.kernel[...], np.float64)
    expected = np.asarray(x, np.float64) @ (w + config.scale * a @ b)
    np.testing.assert_allclose(np.asarray(dense(x)), expected, rtol=1e-5, atol=1e-5)
    assert config.scale == 2.0 and tnn.LoraConfig(rank=4, alpha=6.0, rslora=True).scale == 3.0


@pytest.mark.parametrize("scan", [False, True])
def test_merging_folds_the_adapters_in_and_adapters_off_is_the_base(scan: bool):
    model, x = llama(scan), tokens()
    base = model(x)
    tnn.add_lora(model, tnn.LoraConfig(rank=2, targets=tnn.LORA_ROLES), rngs=nnx.Rngs(3))
    randomize_b(model)
    adapted = model(x)
    assert float(jnp.abs(adapted - base).max()) > 1e-2
    np.testing.assert_array_equal(np.asarray(tnn.adapters_off(model)(x)), np.asarray(base))
    assert tnn.has_lora(model)
    assert tnn.merge_lora(model) == 7 * (1 if scan else 2)
    assert not tnn.has_lora(model) and tnn.lora_param_count(model) == 0
    # x(W + sAB) against xW + s(xA)B in float32, through two layers: the sums round differently
    # (and by host CPU: XLA:CPU vectorises for it); 1.6e-5 seen on logits of ~0.1, so 1e-4.
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(adapted), rtol=1e-4, atol=1e-4)


def test_a_runs_saved_lora_section_adds_its_adapters_only_when_it_was_enabled():
    model = llama(False)
    assert not tnn.add_saved_lora(model, None) and not tnn.has_lora(model)
    off = {"enabled": False, "rank": 4, "targets": ["q"]}
    assert not tnn.add_saved_lora(model, off) and not tnn.has_lora(model)
    saved = {"enabled": True, "rank": 3, "alpha": 6.0, "targets": ["q", "up"]}
    assert tnn.add_saved_lora(model, saved)
    fc_in = model.stack.layers[0].mlp.fc_in
    assert fc_in.lora.lora_a[...].shape == (16, 3)  # the saved rank, on the saved roles
    assert model.stack.layers[0].attn.value.lora is None
    assert saved["enabled"]  # the caller's section is left as it was


def test_only_adapters_get_gradients_when_split_apart_and_dropout_uses_its_own_keys():
    model, x = llama(True), tokens()
    tnn.add_lora(model, tnn.LoraConfig(rank=2, dropout=0.5, targets=("q", "up")),
                 rngs=nnx.Rngs(params=0, dropout=1))  # fmt: skip
    assert model.dropout_rngs is not None  # installed: the base model has no dropout of its own
    graphdef, lora_state, frozen_state, rest = nnx.split(model, nnx.LoRAParam, nnx.Param, ...)
    assert {type(v) for _, v in nnx.to_flat_state(lora_state)} == {nnx.LoRAParam}
    assert all(type(v) is nnx.Param for _, v in nnx.to_flat_state(frozen_state))
    adapters, frozen = nnx.to_pure_dict(lora_state), nnx.to_pure_dict(frozen_state)

    # Jitted, with the random weights, RNG state and tokens as arguments (not constants): one
    # forward and one gradient program, which the persistent compilation cache serves on the next
    # run (eagerly, each op of the scanned model and its backward pass was compiled on its own).
    @jax.jit
    def run(lora: dict, key: jax.Array, frozen: dict, rest: nnx.State, x: jax.Array) -> jax.Array:
        m = nnx.merge(graphdef, lora, frozen, rest)
        return jnp.mean(m(x, deterministic=False, rngs=nnx.Rngs(dropout=key)) ** 2)

    def loss(lora: dict, key: jax.Array) -> jax.Array:
        return run(lora, key, frozen, rest, x)

    grads = jax.jit(jax.grad(run))(adapters, jax.random.key(0), frozen, rest, x)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    # B = 0 at the start, so A's gradient is 0 and B's is not (the update is x·A·B).
    assert float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(grads))) > 0
    same = loss(adapters, jax.random.key(0)) == loss(adapters, jax.random.key(0))
    randomize_b(model)
    adapters = nnx.to_pure_dict(nnx.state(model, nnx.LoRAParam))
    other = loss(adapters, jax.random.key(0)) != loss(adapters, jax.random.key(1))
    assert bool(same) and bool(other)  # dropout masks follow the key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(rank=0), "LoraConfig.rank must be a positive int"),
        (dict(alpha=-1.0), "LoraConfig.alpha must be a positive number"),
        (dict(dropout=1.0), r"LoraConfig.dropout must be a float in \[0, 1\)"),
        (dict(targets=()), "must name at least one"),
        (dict(targets=("q", "wq")), r"\['wq'\] are not roles"),
    ],
)
def test_a_bad_lora_config_is_one_error_naming_the_field(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        tnn.LoraConfig(**kwargs)


def test_a_target_that_matches_nothing_names_what_the_model_has():
    gpt2 = tnn.GPT2(tnn.gpt2_config("small", vocab_size=32, max_seq_len=8, d_model=16,
                                    num_layers=1, num_heads=2), rngs=nnx.Rngs(0))  # fmt: skip
    needle = (
        r"\['gate'\] match no .* GPT2; its projections are \['q', 'k', 'v', 'o', 'up', 'down'\]"
    )
    with pytest.raises(ValueError, match=needle):
        tnn.add_lora(gpt2, tnn.LoraConfig(targets=("q", "gate")), rngs=nnx.Rngs(0))
    tnn.add_lora(gpt2, tnn.LoraConfig(targets=("up",)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        tnn.add_lora(gpt2, tnn.LoraConfig(targets=("q",)), rngs=nnx.Rngs(0))


def test_save_hf_writes_the_adapters_merged(tmp_path: Path):
    # Scanned here; tests-integration's PEFT test exports an unrolled model merged as well.
    model, x = llama(True), tokens()
    tnn.add_lora(model, tnn.LoraConfig(rank=2, targets=("k", "o", "gate")), rngs=nnx.Rngs(2))
    randomize_b(model)
    tnn.save_hf(model, tmp_path / "merged")
    loaded, _ = tnn.load_hf(tmp_path / "merged")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)
    assert not tnn.has_lora(loaded)


@pytest.mark.parametrize("scan", [False, True])
def test_save_peft_writes_peft_names_shapes_and_config(tmp_path: Path, scan: bool):
    from safetensors.numpy import load_file

    model = llama(scan)
    config = tnn.LoraConfig(rank=3, alpha=5.0, dropout=0.1, targets=("q", "o", "down"))
    tnn.add_lora(model, config, rngs=nnx.Rngs(0))
    randomize_b(model)
    assert tnn.save_peft(model, tmp_path / "a", config, base_model="base") == [
        "adapter_model.safetensors",
        "adapter_config.json",
    ]
    meta = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (meta["r"], meta["lora_alpha"], meta["lora_dropout"]) == (3, 5.0, 0.1)
    assert meta["target_modules"] == ["down_proj", "o_proj", "q_proj"]
    tensors = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 3 * 2
    name = "base_model.model.model.layers.1.self_attn.o_proj"
    assert tensors[f"{name}.lora_A.weight"].shape == (3, 16)  # [r, heads * head_dim]
    assert tensors[f"{name}.lora_B.weight"].shape == (16, 3)  # [d_model, r]
    dense = model.stack.layers.attn.out if scan else model.stack.layers[1].attn.out
    a = np.asarray(dense.lora.lora_a[...])
    np.testing.assert_array_equal(tensors[f"{name}.lora_A.weight"],
                                  (a[1] if scan else a).reshape(16, 3).T)  # fmt: skip
    with pytest.raises(ValueError, match="not an empty folder"):
        tnn.save_peft(model, tmp_path / "a", config)
    with pytest.raises(ValueError, match="rank 3 and scale .* not the config's 4"):
        tnn.save_peft(model, tmp_path / "b", tnn.LoraConfig(rank=4))
    assert not (tmp_path / "b").exists()


def test_peft_export_refuses_gpt2_and_a_model_without_adapters(tmp_path: Path):
    gpt2 = tnn.GPT2(tnn.gpt2_config("small", vocab_size=32, max_seq_len=8, d_model=16,
                                    num_layers=1, num_heads=2), rngs=nnx.Rngs(0))  # fmt: skip
    with pytest.raises(ValueError, match="LLaMA family .* export it merged with save_hf"):
        tnn.save_peft(gpt2, tmp_path / "g", tnn.LoraConfig())
    with pytest.raises(ValueError, match="no LoRA adapters to export"):
        tnn.save_peft(llama(False), tmp_path / "l", tnn.LoraConfig())
