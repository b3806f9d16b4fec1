"""``decoder_stages``: the embedding, one layer at a time and the head, run in order over two
microbatches as a pipeline would, give the whole model's ``objective_loss`` and its gradients.

Tolerance (float32): the loss within ``rtol=1e-5``; each gradient leaf within
``1e-5 * max|leaf| + 1e-9`` (the staged sums run in another order).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx_nn_tests._helpers import build, gpt2_tiny, llama_tiny


def _batch(vocab=64, b=4, s=8):
    rng = np.random.default_rng(8)
    tokens = rng.integers(0, vocab, (b, s + 1)).astype(np.int32)
    seg = np.ones((b, s), np.int32)
    seg[1, 5:] = 2
    targets = tokens[:, 1:].copy()
    targets[0, :3] = -100
    positions = np.tile(np.arange(s, dtype=np.int32), (b, 1))
    positions[1, 5:] -= 5
    batch = {"inputs": tokens[:, :-1], "targets": targets, "segment_ids": seg}
    return {k: jnp.asarray(v) for k, v in {**batch, "positions": positions}.items()}


@pytest.mark.parametrize(
    ("make", "remat", "chunked", "positions"),
    [
        (gpt2_tiny, "none", True, True),
        (gpt2_tiny, "none", False, False),  # positions default to 0..s-1
        (llama_tiny, "full", True, True),
    ],
    ids=["gpt2-chunked", "gpt2-plain", "llama-remat"],
)
def test_stages_in_order_give_the_models_loss_and_gradients(make, remat, chunked, positions):
    model = build(make(scan_layers=True, remat=remat))
    graphdef, state, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(state)
    batch = _batch()
    if not positions:
        del batch["positions"]
    settings = {"chunked": chunked, "chunk_size": 8, "z_loss": 1e-3}

    def staged(p):
        stages = tnn.decoder_stages(nnx.merge(graphdef, p, rest), **settings)
        x, side, head_side = stages.inputs(batch)
        layers, head = stages.split_params(p)
        total, count = 0.0, 0
        for rows in (slice(0, 2), slice(2, 4)):  # two microbatches
            h = x[rows]
            mb = {k: v[rows] for k, v in side.items()}
            for i in range(model.config.num_layers):
                h = stages.layer(jax.tree.map(lambda a, i=i: a[i], layers), h, mb)
            summed, sums = stages.head(head, h, {"targets": head_side["targets"][rows]})
            total, count = total + summed, count + sums["num_tokens"]
        return total / count

    def whole(p):
        return tnn.objective_loss(nnx.merge(graphdef, p, rest), batch, **settings).loss

    # Jitted: one compile each (eagerly, the stages' Python loop over microbatches and layers
    # dispatched, and compiled, every small op on its own).
    want, want_grads = jax.jit(jax.value_and_grad(whole))(params)
    got, got_grads = jax.jit(jax.value_and_grad(staged))(params)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    paths = jax.tree_util.tree_flatten_with_path(want_grads)[0]
    for (path, w), g in zip(paths, jax.tree.leaves(got_grads), strict=True):
        w, g = np.asarray(w), np.asarray(g)
        atol = 1e-5 * float(np.max(np.abs(w))) + 1e-9
        np.testing.assert_allclose(g, w, rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path))


def test_head_params_are_the_modules_after_the_stack():
    tied = tnn.decoder_stages(build(gpt2_tiny(scan_layers=True)))
    params = {"embed": 1, "final_norm": 2, "stack": {"layers": 3}, "pos_embed": 4}
    assert tied.split_params(params) == (3, {"embed": 1, "final_norm": 2})
    untied = tnn.decoder_stages(build(llama_tiny(scan_layers=True)))
    assert untied.split_params({**params, "head": 5})[1] == {"embed": 1, "final_norm": 2, "head": 5}


def test_unscanned_or_other_models_are_refused():
    with pytest.raises(ValueError, match="scan_layers=True"):
        tnn.decoder_stages(build(gpt2_tiny()))
    bert = build(tnn.BertConfig(vocab_size=40, max_seq_len=8, d_model=16, num_layers=1,
                                num_heads=2, scan_layers=True))  # fmt: skip
    with pytest.raises(ValueError, match="got BERT"):
        tnn.decoder_stages(bert)


@pytest.mark.parametrize("rates", [{"dropout": 0.1}, {"attention.dropout": 0.2}])
def test_dropout_is_refused_not_left_out(rates):
    with pytest.raises(ValueError, match="without dropout") as err:
        tnn.decoder_stages(build(gpt2_tiny(scan_layers=True, **rates)))
    assert f"={next(iter(rates.values()))}" in str(err.value)


def _in_order(layer, head):
    """A pipeline runner that runs two microbatches through every layer in turn (one device)."""

    def run(layers, head_params, x, side, head_side):
        total, sums = 0.0, None
        for rows in (slice(0, 2), slice(2, 4)):
            h, mb = x[rows], {k: None if v is None else v[rows] for k, v in side.items()}
            for i in range(jax.tree.leaves(layers)[0].shape[0]):
                h = layer(jax.tree.map(lambda a, i=i: a[i], layers), h, mb)
            summed, part = head(head_params, h, {k: v[rows] for k, v in head_side.items()})
            total = total + summed
            sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
        return total, sums

    return run


def test_the_pipelined_loss_fn_is_the_models_loss_over_its_microbatches():
    model = build(llama_tiny(scan_layers=True))
    graphdef, state, rest = nnx.split(model, nnx.Param, ...)
    params, batch = nnx.to_pure_dict(state), _batch()
    loss_fn = tnn.pipelined_loss_fn(graphdef, rest, _in_order, chunked=False, z_loss=1e-3)
    loss, sums = loss_fn(params, batch, jnp.int32(0))
    want = tnn.objective_loss(model, batch, chunked=False, z_loss=1e-3)
    assert float(loss) == pytest.approx(float(want.loss), rel=1e-5)
    assert int(sums["num_tokens"]) == int(want.num_tokens)
