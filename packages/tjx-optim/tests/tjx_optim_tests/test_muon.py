"""Muon's parameter selection and matrix views: 2-D, Dense-style N-D and stacked-layer kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import contrib

from tjx.optim import OptimizerConfig, build_optimizer, muon_dimension_numbers, muon_mask
from tjx.optim.paths import path_to_str

from . import _ref

MDN = contrib.MuonDimensionNumbers


def _dims(tree, **kw) -> dict:
    dims = muon_dimension_numbers(tree, **kw)
    flat = jax.tree_util.tree_flatten_with_path(
        dims, is_leaf=lambda d: d is None or isinstance(d, MDN)
    )[0]
    return {path_to_str(p): d for p, d in flat}


def _tjx_nn_like(rng: np.random.Generator, layers: int | None) -> dict:
    """tjx-nn's layout: Dense kernels are in_shape + out_shape; scan adds a leading layers axis."""
    d, h, hd, m = 8, 2, 4, 16
    lead = () if layers is None else (layers,)

    def p(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=lead + shape), jnp.float32)

    block = {
        "attn": {"query": {"kernel": p(d, h, hd)}, "out": {"kernel": p(h, hd, d)}},
        "mlp": {"fc_in": {"kernel": p(d, m), "bias": p(m)}, "fc_out": {"kernel": p(m, d)}},
        "norm1": {"scale": p(d)},
    }
    tree = {"embed": {"embedding": jnp.ones((32, d))}, "head": {"kernel": jnp.ones((d, 32))}}
    tree["layers"] = block if layers is not None else {0: block}
    return tree


def test_dimension_numbers_for_dense_kernels() -> None:
    dims = _dims(_tjx_nn_like(np.random.default_rng(0), None))
    assert dims["layers/0/attn/query/kernel"] == MDN((0,), (1, 2))
    assert dims["layers/0/attn/out/kernel"] == MDN((0, 1), (2,))
    assert dims["layers/0/mlp/fc_in/kernel"] == MDN((0,), (1,))
    for name in (
        "embed/embedding",
        "head/kernel",
        "layers/0/mlp/fc_in/bias",
        "layers/0/norm1/scale",
    ):
        assert dims[name] is None
    stacked = _dims(_tjx_nn_like(np.random.default_rng(0), 3))
    assert stacked["layers/attn/query/kernel"] == MDN((1,), (2, 3))
    assert stacked["layers/mlp/fc_out/kernel"] == MDN((1,), (2,))
    # tjx-nn's real nesting: "stack/layers/0/..." unscanned, "stack/layers/..." scanned.
    nested = _dims({"stack": _tjx_nn_like(np.random.default_rng(0), None)})
    assert nested["stack/layers/0/attn/query/kernel"] == MDN((0,), (1, 2))
    assert nested["stack/layers/0/mlp/fc_out/kernel"] == MDN((0,), (1,))
    nested = _dims({"stack": _tjx_nn_like(np.random.default_rng(0), 3)})
    assert nested["stack/layers/attn/query/kernel"] == MDN((1,), (2, 3))
    assert nested["stack/layers/mlp/fc_in/kernel"] == MDN((1,), (2,))
    forced = _dims({"w": jnp.ones((3, 4, 5))}, stacked=True)
    assert forced["w"] == MDN((1,), (2,))


def test_muon_mask_and_exclusion() -> None:
    params = _ref.gpt_tree(np.random.default_rng(2), layers=1)
    flat = jax.tree_util.tree_leaves_with_path(muon_mask(params))
    mask = {path_to_str(p): bool(m) for p, m in flat}
    assert sorted(k for k, v in mask.items() if v) == [
        "blocks/0/attn/proj/kernel",
        "blocks/0/attn/qkv/kernel",
        "blocks/0/mlp/fc/kernel",
        "blocks/0/mlp/out/kernel",
    ]
    fewer = jax.tree.leaves(muon_mask(params, exclude_regex="attn"))
    assert sum(fewer) == 2


def _muon_updates(params, grads, **cfg):
    tx = build_optimizer(OptimizerConfig(name="muon", learning_rate=0.1, clip_norm=None, **cfg))
    state = tx.init(params)
    step = jax.jit(tx.update)
    for g in grads:
        updates, state = step(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_stacked_and_nd_kernels_match_their_matrix_views() -> None:
    rng = np.random.default_rng(3)
    stacked = _tjx_nn_like(rng, 2)
    grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), stacked)]
    grads.append(jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), stacked))
    got = _muon_updates(stacked, grads)["layers"]["attn"]["query"]["kernel"]
    # The same layer-1 query kernel as an ordinary 2-D [embed, heads*head_dim] matrix.
    flat = lambda t: t["layers"]["attn"]["query"]["kernel"][1].reshape(8, 8)
    want = _muon_updates({"q": flat(stacked)}, [{"q": flat(g)} for g in grads])["q"]
    np.testing.assert_allclose(np.asarray(got[1]).reshape(8, 8), want, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(want - flat(stacked)))) > 1e-3


def test_named_kernels_split_at_their_input_axes_not_where_most_square() -> None:
    """MLA's key kernel [latent=32, kv_heads=8, head_dim=64] is the 32 x 512 map; "most nearly
    square" made it 256 x 64 (the bug). Experts stack like layers."""
    shapes = {
        "key": (32, 8, 64),
        "stacked_key": (2, 32, 8, 64),
        "experts": (4, 8, 16),
        "expert_out": (3, 4, 16, 8),
        "out": (8, 64, 32),
    }
    names = {
        "key": (None, "kv_heads", "head_dim"),
        "stacked_key": ("layers", None, "kv_heads", "head_dim"),
        "experts": ("experts", "embed", "mlp"),
        "expert_out": ("layers", "experts", "mlp", "embed"),
        "out": ("kv_heads", "head_dim", "embed"),
    }
    params = {k: jnp.ones(v) for k, v in shapes.items()}
    dims = muon_dimension_numbers(params, axes=names)
    assert dims["key"] == MDN((0,), (1, 2))  # 32 x 512
    assert muon_dimension_numbers(params)["key"] == MDN((0, 1), (2,))  # unnamed: 256 x 64
    assert dims["stacked_key"] == MDN((1,), (2, 3))
    assert dims["experts"] == MDN((1,), (2,))
    assert dims["expert_out"] == MDN((2,), (3,))
    assert dims["out"] == MDN((0, 1), (2,))


def test_mla_keys_and_experts_update_as_their_matrices() -> None:
    rng = np.random.default_rng(5)
    # The "most nearly square" view of this key is 8 x 8 (the old split): a different update.
    params = {
        "key": jnp.asarray(rng.normal(size=(4, 2, 8)), jnp.float32),  # latent 4 < head_dim 8
        "experts": jnp.asarray(rng.normal(size=(3, 6, 5)), jnp.float32),
    }
    axes = {"key": (None, "kv_heads", "head_dim"), "experts": ("experts", "embed", "mlp")}
    grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)]
    tx = build_optimizer(OptimizerConfig(name="muon", learning_rate=0.1, clip_norm=None), axes=axes)
    updates, _ = jax.jit(tx.update)(grads[0], tx.init(params), params)
    plain = {"k": params["key"].reshape(4, 16), "e1": params["experts"][1]}
    plain_grads = [{"k": grads[0]["key"].reshape(4, 16), "e1": grads[0]["experts"][1]}]
    want = _muon_updates(plain, plain_grads)
    got_key = params["key"] + updates["key"]
    np.testing.assert_allclose(got_key.reshape(4, 16), want["k"], rtol=1e-5, atol=1e-6)
    got_e1 = params["experts"][1] + updates["experts"][1]
    np.testing.assert_allclose(got_e1, want["e1"], rtol=1e-5, atol=1e-6)
