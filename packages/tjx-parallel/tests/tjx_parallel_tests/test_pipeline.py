"""Pipeline parallelism: schedule tables, and loss + gradients equal to the unpipelined stack.

The model is a small residual stack (tanh layers with a per-row side input, like positions) and a
softmax cross-entropy head, on fresh random inputs. Tolerance (fp32): loss within 1e-5 relative,
every gradient leaf within ``1e-5 * max|grad leaf| + 1e-7`` of the sequential reference (the
pipeline sums microbatches in another order; no other difference is expected).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.parallel import (
    SCHEDULES,
    MeshConfig,
    bubble_formula,
    check_pipeline,
    make_mesh,
    make_schedule,
    microbatch,
    pipeline_loss,
    unmicrobatch,
)
from tjx.parallel.schedule import BACKWARD, FORWARD, forward_schedule

LAYERS, D, B, CLASSES = 4, 16, 16, 5


def layer(p: dict[str, jax.Array], h: jax.Array, side: dict[str, jax.Array]) -> jax.Array:
    return h + jnp.tanh(h @ p["w"] + p["b"] + side["pos"])


def head(hp: dict[str, jax.Array], h: jax.Array, hs: dict[str, jax.Array]) -> Any:
    logp = jax.nn.log_softmax(h @ hp["u"])
    nll = -jnp.take_along_axis(logp, hs["t"][:, None], axis=1)
    return jnp.sum(nll) / B, {"rows": jnp.int32(h.shape[0])}


def problem(seed: int) -> tuple[Any, ...]:
    k = jax.random.split(jax.random.key(seed), 6)
    sp = {
        "w": jax.random.normal(k[0], (LAYERS, D, D)) / np.sqrt(D),
        "b": 0.1 * jax.random.normal(k[1], (LAYERS, D)),
    }
    hp = {"u": jax.random.normal(k[2], (D, CLASSES))}
    x = jax.random.normal(k[3], (B, D))
    side = {"pos": jax.random.normal(k[4], (B, D))}
    hside = {"t": jax.random.randint(k[5], (B,), 0, CLASSES)}
    return sp, hp, x, side, hside


def reference(sp: Any, hp: Any, x: jax.Array, side: Any, hside: Any) -> jax.Array:
    h = x
    for i in range(LAYERS):
        h = layer(jax.tree.map(lambda a, i=i: a[i], sp), h, side)
    return head(hp, h, hside)[0]  # type: ignore[no-any-return]


def assert_tree_close(got: Any, want: Any) -> None:
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * float(np.max(np.abs(w))) + 1e-7)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize(("stages", "micro"), [(2, 2), (2, 4), (4, 4), (4, 8), (3, 5)])
def test_schedule_table(name: str, stages: int, micro: int) -> None:
    sched = make_schedule(name, stages, micro)
    # each (microbatch, stage) runs forward once and backward once, after its dependencies
    when = {}
    for t in range(sched.ticks):
        for s in range(stages):
            if sched.ops[t, s] != 0:
                when[(int(sched.ops[t, s]), int(sched.mb[t, s]), s)] = t
    assert len(when) == 2 * stages * micro
    for i in range(micro):
        for s in range(stages):
            if s:
                assert when[(FORWARD, i, s)] > when[(FORWARD, i, s - 1)]
            after = when[(BACKWARD, i, s + 1)] if s < stages - 1 else when[(FORWARD, i, s)]
            assert when[(BACKWARD, i, s)] > after
    # the bubble of the table is the textbook (S-1)/(M+S-1), for both schedules
    assert sched.ticks == 2 * (micro + stages - 1)
    assert sched.bubble_fraction() == pytest.approx(bubble_formula(stages, micro))
    # GPipe keeps every microbatch's stage input; 1F1B at most S of them
    assert sched.slots == (micro if name == "gpipe" else min(stages, micro))
    fwd = forward_schedule(stages, micro)
    assert fwd.ticks == micro + stages - 1 and int(np.sum(fwd.ops == FORWARD)) == stages * micro


@pytest.mark.parametrize(
    ("stages", "data", "fsdp", "name", "micro"),
    [
        (2, 4, 1, "gpipe", 4),
        (2, 4, 1, "1f1b", 2),
        (4, 2, 1, "gpipe", 4),
        (4, 2, 1, "1f1b", 8),
        (2, 2, 2, "1f1b", 4),
        (4, 1, 2, "gpipe", 2),
    ],
)
def test_loss_and_grads_match_unpipelined(
    stages: int, data: int, fsdp: int, name: str, micro: int
) -> None:
    sp, hp, x, side, hside = problem(seed=stages * 100 + micro)
    want, want_grads = jax.value_and_grad(reference, argnums=(0, 1, 2))(sp, hp, x, side, hside)
    mesh = make_mesh(MeshConfig(data=data, fsdp=fsdp, pipeline=stages))
    run = pipeline_loss(layer, head, mesh, microbatches=micro, schedule=name)

    def loss(sp: Any, hp: Any, x: jax.Array) -> Any:
        return run(sp, hp, x, side, hside)

    (got, aux), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        sp, hp, x
    )
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert int(aux["rows"]) == B  # aux summed over microbatches
    assert_tree_close(grads, want_grads)
    # not differentiated: the forward-only schedule gives the same loss
    fwd_only, _ = jax.jit(loss)(sp, hp, x)
    assert float(fwd_only) == pytest.approx(float(want), rel=1e-5)


def test_grads_compose_with_outer_functions() -> None:
    """The custom VJP scales by the outer cotangent (loss scaling, a weighted sum)."""
    sp, hp, x, side, hside = problem(seed=7)
    mesh = make_mesh(MeshConfig(data=4, pipeline=2))
    run = pipeline_loss(layer, head, mesh, microbatches=2, schedule="1f1b")
    got = jax.grad(lambda sp: 3.0 * run(sp, hp, jnp.sin(x), side, hside)[0])(sp)
    want = jax.grad(lambda sp: 3.0 * reference(sp, hp, jnp.sin(x), side, hside))(sp)
    assert_tree_close(got, want)


def test_microbatch_round_trip() -> None:
    a = jax.random.normal(jax.random.key(3), (12, 3))
    mb = microbatch(a, 4)
    assert mb.shape == (4, 3, 3)
    np.testing.assert_array_equal(mb[1], a[1::4])  # interleaved rows
    np.testing.assert_array_equal(unmicrobatch(mb), a)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_layers": 6, "stages": 4}, "the pipeline's 4 stages must divide the 6 layers"),
        ({"microbatches": 3}, "3 microbatches must divide the batch of 16 rows"),
        (
            {"microbatches": 4, "batch_ways": 8},
            r"microbatch of 4 rows .* data×fsdp×expert mesh size \(8\)",
        ),
        ({"schedule": "zb"}, "pipeline schedule must be one of"),
        ({"microbatches": 0}, "must be >= 1"),
    ],
)
def test_check_pipeline_errors(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"num_layers": 4, "stages": 2, "batch_size": 16, "microbatches": 2}
    with pytest.raises(ValueError, match=match):
        check_pipeline(**{**args, **kwargs})


def test_pipeline_loss_rejects_shapes_that_do_not_split() -> None:
    sp, hp, x, side, hside = problem(seed=1)
    mesh = make_mesh(MeshConfig(data=-1, pipeline=8))  # 4 layers over 8 stages
    with pytest.raises(ValueError, match="8 stages must divide the 4 layers"):
        pipeline_loss(layer, head, mesh, microbatches=2)(sp, hp, x, side, hside)
    mesh = make_mesh(MeshConfig(data=-1, pipeline=2))
    with pytest.raises(ValueError, match="3 microbatches must divide the batch of 16"):
        pipeline_loss(layer, head, mesh, microbatches=3)(sp, hp, x, side, hside)
    with pytest.raises(ValueError, match="pipeline schedule must be one of"):
        pipeline_loss(layer, head, mesh, microbatches=2, schedule="interleaved")


def test_bf16_activations_compile_and_match_the_float32_reference() -> None:
    """bf16 activations: the input gradient's cross-stage sum once aborted XLA:CPU's compiler."""
    sp, hp, x, side, hside = problem(seed=11)
    want = jax.grad(reference, argnums=2)(sp, hp, x, side, hside)
    mesh = make_mesh(MeshConfig(data=4, pipeline=2))

    def layer16(p: dict[str, jax.Array], h: jax.Array, side: dict[str, jax.Array]) -> jax.Array:
        return layer(p, h, side).astype(h.dtype)  # a layer keeps its activations' dtype

    run = pipeline_loss(layer16, head, mesh, microbatches=2, schedule="gpipe")

    def loss(x16: jax.Array) -> jax.Array:
        return run(sp, hp, x16, side, hside)[0]

    got = jax.jit(jax.grad(loss))(x.astype(jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    # bf16 inputs and a bf16 gradient: 8 mantissa bits, so 2 % of the largest entry.
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(want), atol=0.02 * float(np.max(np.abs(want)))
    )
