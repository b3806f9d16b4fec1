"""The default weight-decay mask on a GPT-like tree, regex overrides, and the Muon mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tjx.optim import decay_mask
from tjx.optim.paths import path_to_str

from . import _ref


def _by_path(mask) -> dict[str, bool]:
    flat = jax.tree_util.tree_leaves_with_path(mask)
    return {path_to_str(p): bool(m) for p, m in flat}


def test_default_mask_on_gpt_tree() -> None:
    params = _ref.gpt_tree(np.random.default_rng(0))
    mask = _by_path(decay_mask(params))
    decayed = sorted(k for k, v in mask.items() if v)
    want = [f"blocks/{i}/{n}/kernel" for i in range(2) for n in ("attn/proj", "attn/qkv")]
    want += [f"blocks/{i}/{n}/kernel" for i in range(2) for n in ("mlp/fc", "mlp/out")]
    assert decayed == sorted([*want, "lm_head/kernel"])
    # Everything else: biases, norm scales, token and position embeddings.
    assert not mask["embed/embedding"] and not mask["pos_embed/embedding"]
    assert not mask["ln_f/scale"] and not mask["blocks/0/attn/qkv/bias"]


def test_path_strings_drop_variable_wrappers() -> None:
    params = _ref.gpt_tree(np.random.default_rng(0), layers=1)
    paths = [path_to_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    assert "blocks/0/attn/qkv/kernel" in paths and "embed/embedding" in paths
    assert all(not p.endswith("value") for p in paths)


def test_stacked_layers_use_names_not_only_shapes() -> None:
    # With scanned layers, biases and norm scales are 2-D [layers, d]; names still exempt them.
    params = {
        "blocks": {
            "ln_1": {"scale": jnp.ones((3, 8))},
            "mlp": {"fc": {"kernel": jnp.ones((3, 8, 32)), "bias": jnp.ones((3, 32))}},
        },
        "final_norm": {"weight": jnp.ones((2, 8))},
    }
    mask = _by_path(decay_mask(params))
    assert mask == {
        "blocks/ln_1/scale": False,
        "blocks/mlp/fc/bias": False,
        "blocks/mlp/fc/kernel": True,
        "final_norm/weight": False,
    }


def test_regex_overrides() -> None:
    params = _ref.gpt_tree(np.random.default_rng(1), layers=1)
    only_mlp = _by_path(decay_mask(params, decay_regex=r"mlp/.*kernel$"))
    assert sorted(k for k, v in only_mlp.items() if v) == [
        "blocks/0/mlp/fc/kernel",
        "blocks/0/mlp/out/kernel",
    ]
    no_head = _by_path(decay_mask(params, no_decay_regex=r"^lm_head/"))
    assert not no_head["lm_head/kernel"] and no_head["blocks/0/attn/qkv/kernel"]
    # decay_regex can decay what the default exempts (here: the embedding).
    emb = _by_path(decay_mask(params, decay_regex="embed/embedding"))
    assert emb["embed/embedding"] and not emb["lm_head/kernel"]


def test_mask_works_on_shape_structs_and_lists() -> None:
    tree = [
        jax.ShapeDtypeStruct((4, 4), jnp.float32),
        {"bias": jax.ShapeDtypeStruct((4,), jnp.float32)},
    ]
    assert jax.tree.leaves(decay_mask(tree)) == [True, False]
