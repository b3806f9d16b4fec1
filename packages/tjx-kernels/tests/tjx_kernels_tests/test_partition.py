"""SPMD partitioning of the Pallas flash kernels on 8 simulated CPU devices (interpret mode).

Each sharded case compiles once (``lower(...).compile()``), runs the executable and reads its HLO:
values are compared with the unsharded ``reference_attention`` (float32, rel. error <= 1e-5), and
the HLO must show the kernel on per-device shapes with no all-gather. A control test shows that
the same HLO check fails when the kernel call is not partitioned.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax.experimental.custom_partitioning import (
    ArrayMapping,
    SdyShardingRule,
    custom_partitioning,
)
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import tjx.kernels.flash as flash
from tjx.kernels import AttentionMask, attention, flash_attention, reference_attention
from tjx.kernels.flash_fwd import flash_forward
from tjx.kernels.partition import (
    _align_infer,
    _align_rule,
    _bwd_infer,
    _bwd_partition,
    _bwd_rule,
    _fwd_infer,
    _fwd_partition,
    _fwd_rule,
    aligned,
    kernel_layout,
)

from ._ref import cuda_target, measured_table, pretend_h100, rel_err

B, S, H, HKV, D = 2, 32, 8, 4, 16  # GQA ratio 2; S and D need no kernel padding
TOL = 1e-5


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8, "tools/devtest simulates 8 CPU devices"
    return Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))


def _x(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _inputs(seed, s=S, d=D, h=H, hkv=HKV, b=B):
    rng = np.random.default_rng(seed)
    q, k, v = _x(rng, b, s, h, d), _x(rng, b, s, hkv, d), _x(rng, b, s, hkv, d)
    ct = _x(rng, b, s, h, d)  # a non-uniform output cotangent
    # Packed documents with padding (id 0) at the end of row 0.
    ids = np.ones((b, s), np.int32)
    ids[0, s // 3 :] = 2
    ids[0, s - s // 4 :] = 0
    ids[1:, s // 2 :] = 3
    return q, k, v, jnp.asarray(ids), ct


def _flash(q, k, v, ids, *, causal):
    return flash_attention(
        q, k, v, mask=AttentionMask(causal=causal, segment_ids=ids), interpret=True
    )


def _fwd_bwd(attn, *, causal):
    """(out, dq, dk, dv) of ``attn`` for the cotangent ``ct``."""

    def f(q, k, v, ids, ct):
        out, vjp = jax.vjp(lambda q, k, v: attn(q, k, v, ids, causal=causal), q, k, v)
        return (out, *vjp(ct))

    return f


def _reference(q, k, v, ids, *, causal):
    return reference_attention(q, k, v, mask=AttentionMask(causal=causal, segment_ids=ids))


def _run_sharded(mesh, fn, args, specs):
    """Place ``args`` with ``specs``, compile ``fn``, run it; (outputs, compiled HLO text)."""
    placed = [
        None if a is None else jax.device_put(a, NamedSharding(mesh, s))
        for a, s in zip(args, specs, strict=True)
    ]
    compiled = jax.jit(fn).lower(*placed).compile()
    return compiled(*placed), compiled.as_text()


def _kernel_config(q, k, ids, causal=False, **kwargs):
    """The KernelConfig ``flash_attention`` builds for these inputs (recorded, not rebuilt)."""
    seen = []
    real = flash.partitioned_forward

    def spy(*args):
        seen.append(args[-1])
        return real(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flash, "partitioned_forward", spy)
        mask = lambda ids: AttentionMask(causal=causal, segment_ids=ids)
        attn = lambda q, k, ids: flash_attention(q, k, k, mask(ids), **kwargs)
        jax.eval_shape(attn, q, k, ids)
    return seen[0]


def _hlo_shape(shape):
    return "f32[" + ",".join(str(n) for n in shape) + "]"


DATA = PartitionSpec("data")  # batch over the 2-way axis
HEADS = PartitionSpec(None, None, "model")  # heads over the 4-way axis
BOTH = PartitionSpec("data", None, "model")
REPLICATED = PartitionSpec()
CASES = {
    # name: (q/k/v/ct spec, ids spec, local q shape, causal, segment ids)
    "batch": (DATA, DATA, (1, S, H, D), True, True),
    "heads": (HEADS, REPLICATED, (B, S, 2, D), True, True),
    "batch_and_heads": (BOTH, DATA, (1, S, 2, D), False, True),
    "batch_and_heads_no_segments": (BOTH, None, (1, S, 2, D), True, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sharded_flash_matches_reference_and_runs_on_local_shards(mesh, case):
    spec, ids_spec, local, causal, segs = CASES[case]
    q, k, v, ids, ct = _inputs(seed=len(case))
    ids = ids if segs else None
    args, specs = [q, k, v, ids, ct], [spec, spec, spec, ids_spec, spec]
    got, hlo = _run_sharded(mesh, _fwd_bwd(_flash, causal=causal), args, specs)
    want = _fwd_bwd(_reference, causal=causal)(q, k, v, ids, ct)
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert rel_err(a, e) <= TOL, (case, name)
        # Outputs and gradients keep the inputs' batch/head sharding.
        assert a.sharding.is_equivalent_to(NamedSharding(mesh, spec), a.ndim), (case, name)
    # The kernels ran on each device's shard: q's global shape never exists on a device and
    # nothing was gathered before (or after) them.
    assert "all-gather" not in hlo
    assert _hlo_shape((B, S, H, D)) not in hlo
    assert _hlo_shape(local) in hlo


def test_unpartitioned_kernel_call_would_gather(mesh, monkeypatch):
    """Control for the HLO checks above: the bare kernel call (no custom_partitioning) makes
    XLA gather the batch/head-sharded q and run the whole kernel on every device."""
    monkeypatch.setattr(flash, "partitioned_forward", flash_forward)
    q, k, v, ids, _ = _inputs(seed=1)
    fwd = lambda q, k, v, ids: _flash(q, k, v, ids, causal=True)
    got, hlo = _run_sharded(mesh, fwd, [q, k, v, ids], [BOTH, BOTH, BOTH, DATA])
    assert rel_err(got, _reference(q, k, v, ids, causal=True)) <= TOL
    assert "all-gather" in hlo and _hlo_shape((B, S, H, D)) in hlo


def test_sequence_sharded_input_is_gathered_and_correct(mesh):
    # s=20 is padded to 32 inside flash_attention; head_dim 32.
    q, k, v, ids, ct = _inputs(seed=7, s=20, d=32)
    seq = PartitionSpec(None, "model")
    specs = [seq, seq, seq, seq, seq]
    got, hlo = _run_sharded(mesh, _fwd_bwd(_flash, causal=True), [q, k, v, ids, ct], specs)
    want = _fwd_bwd(_reference, causal=True)(q, k, v, ids, ct)
    for a, e in zip(got, want, strict=True):
        assert rel_err(a, e) <= TOL
    assert "all-gather" in hlo  # the kernel needs whole sequences: the rule gathers them


def test_heads_that_cannot_keep_whole_groups_are_replicated(mesh):
    """MQA (one kv head) with q heads sharded 4 ways: kv heads cannot follow, so the kernel
    runs with heads replicated (batch stays sharded) and still gives the right answer."""
    q, k, v, ids, ct = _inputs(seed=3, h=4, hkv=1)
    specs = [BOTH, DATA, DATA, DATA, BOTH]  # kv heads: 1, cannot be split
    got, hlo = _run_sharded(mesh, _fwd_bwd(_flash, causal=True), [q, k, v, ids, ct], specs)
    want = _fwd_bwd(_reference, causal=True)(q, k, v, ids, ct)
    for a, e in zip(got, want, strict=True):
        assert rel_err(a, e) <= TOL
    assert _hlo_shape((1, S, 4, D)) in hlo  # local batch, all heads


def test_micro_batches_of_an_fsdp_batch_run_one_row_per_device():
    """Gradient accumulation under FSDP, one row per device (torchtitan's default): 16 rows over
    ``fsdp=8`` split into 2 micro-batches of 8 (``tjx.optim``'s ``[k, n/k]`` split) reach the
    kernel sharded over a Shardy sub-axis (``fsdp:(1)4``, replicated over ``fsdp:(4)2``), which
    jax cannot decode into a NamedSharding (its lowering failed in ``explode_superdims``). The
    kernel runs on the whole ``fsdp`` axis instead: one row per device, right values."""
    mesh = Mesh(np.array(jax.devices()).reshape(1, 8), ("data", "fsdp"))  # as the trainer's
    k_micro, b = 2, 16
    q, k, v, _, ct = _inputs(seed=17, b=b, h=4, hkv=2)

    def split(x):
        return x.reshape((k_micro, b // k_micro, *x.shape[1:]))

    def accumulate(attn):
        def f(q, k, v, ct):
            def body(carry, mb):
                q, k, v, ct = mb
                return carry, _fwd_bwd(attn, causal=True)(q, k, v, None, ct)

            _, outs = jax.lax.scan(body, 0, tuple(split(x) for x in (q, k, v, ct)))
            return tuple(o.reshape((b, *o.shape[2:])) for o in outs)

        return f

    batch = PartitionSpec(("data", "fsdp"))  # the trainer's batch sharding
    got, hlo = _run_sharded(mesh, accumulate(_flash), [q, k, v, ct], [batch] * 4)
    want = accumulate(_reference)(q, k, v, ct)
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert rel_err(a, e) <= TOL, name
    assert _hlo_shape((1, S, 4, D)) in hlo  # each device's kernel: one row, every head


def _rowwise(q, k, v, ids):
    """Uses every operand, row by row (as attention does): right on any batch split."""
    return q * jnp.sum(k + v, axis=(1, 2, 3))[:, None, None, None] + ids[:, :, None, None]


def _cudnn_like(seen):
    """An op partitioned as jax 0.10.2's cuDNN attention is: a Shardy rule that ties nothing but
    q's own dimensions (k, v, ids get independent factors, as ``_fwd_shardy_rule`` gives them),
    a partition that records the specs it is handed and keeps them (as jax's does), and that
    refuses q, k, v sharded differently (``_check_qkv_bias_mask_spec``)."""

    def rule(mesh, operands, results):
        del mesh, results
        own = [
            ArrayMapping(*(f"a{i}{j}" for j in range(len(x.shape)))) for i, x in enumerate(operands)
        ]
        return SdyShardingRule(tuple(own), (own[0],))

    def partition(mesh, args, result):
        del result
        specs = [a.sharding.spec for a in args]
        seen.append(specs)
        if not specs[0] == specs[1] == specs[2]:
            raise ValueError("Query, key and value should have same sharding.")

        return mesh, _rowwise, args[0].sharding, tuple(a.sharding for a in args)

    op = custom_partitioning(_rowwise)
    op.def_partition(
        partition=partition,
        infer_sharding_from_operands=lambda mesh, args, result: args[0].sharding,
        sharding_rule=rule,
    )
    return op


@pytest.mark.parametrize("align", [False, True])
def test_aligned_hands_the_cudnn_call_q_k_v_and_ids_in_one_layout(mesh, align):
    """jax's cuDNN attention refuses (at compile) k and v sharded unlike q, which its Shardy rule
    allows (under FSDP Shardy gave it v replicated): `aligned`, called before it by the cuDNN
    dispatch, puts q, k, v and the ids on the batch layout. Without it (the control) the same
    compile fails."""
    q, k, v, ids, _ = _inputs(seed=19, hkv=H)  # the op sums k + v: one head count
    seen = []
    op = _cudnn_like(seen)
    call = (lambda q, k, v, ids: op(*aligned(q, k, v, ids))) if align else op
    specs = [DATA, DATA, REPLICATED, REPLICATED]  # v and ids replicated, q and k batch-sharded
    if not align:
        with pytest.raises(Exception, match="same sharding"):
            _run_sharded(mesh, call, [q, k, v, ids], specs)
        return
    got, _ = _run_sharded(mesh, call, [q, k, v, ids], specs)
    np.testing.assert_allclose(got, _rowwise(q, k, v, ids), rtol=1e-6)
    assert seen[-1][:3] == [PartitionSpec("data", None, None, None)] * 3
    assert seen[-1][3] == PartitionSpec("data", None)  # ids: split like q's batch


def test_gspmd_partitioner(mesh):
    """The GSPMD callbacks (jax_use_shardy_partitioner=False) partition the same way."""
    previous = jax.config.jax_use_shardy_partitioner
    jax.config.update("jax_use_shardy_partitioner", False)
    try:
        q, k, v, ids, ct = _inputs(seed=11)
        specs = [BOTH, BOTH, BOTH, DATA, BOTH]
        got, hlo = _run_sharded(mesh, _fwd_bwd(_flash, causal=True), [q, k, v, ids, ct], specs)
    finally:
        jax.config.update("jax_use_shardy_partitioner", previous)
    want = _fwd_bwd(_reference, causal=True)(q, k, v, ids, ct)
    for a, e in zip(got, want, strict=True):
        assert rel_err(a, e) <= TOL
    assert "all-gather" not in hlo and _hlo_shape((1, S, 2, D)) in hlo


def test_auto_takes_measured_pallas_for_packed_documents_on_a_mesh(mesh, monkeypatch, tmp_path):
    """Multi-GPU packed-document training where the suite measured Pallas fastest: "auto" takes
    Pallas (not O(seq²) XLA) and the kernel runs per shard."""
    pretend_h100(monkeypatch)  # interpret stays on (CPU)
    measured_table(monkeypatch, tmp_path, {"fp32-64": {"pallas": 1.0, "xla": 3.0}})
    calls = []
    monkeypatch.setattr(
        flash, "flash_attention", lambda *a, **kw: calls.append(1) or flash_attention(*a, **kw)
    )
    q, k, v, ids, _ = _inputs(seed=5)
    fwd = lambda q, k, v, ids: attention(q, k, v, mask=AttentionMask(causal=True, segment_ids=ids))
    got, hlo = _run_sharded(mesh, fwd, [q, k, v, ids], [BOTH, BOTH, BOTH, DATA])
    assert calls and rel_err(got, _reference(q, k, v, ids, causal=True)) <= TOL
    assert "all-gather" not in hlo


def test_vmap_folds_into_the_batch():
    """custom_partitioning has no batching rule; the kernel's vmap rule folds the axis into the
    batch (q batched, k/v/ids shared), forward and backward."""
    q, k, v, ids, _ = _inputs(seed=13, b=1)
    qs = jnp.stack([q, 2.0 * q, -q])

    def loss(attn):
        return lambda qs: jnp.sum(jax.vmap(lambda q: attn(q, k, v, ids, causal=True))(qs) ** 2)

    got = jax.jit(jax.value_and_grad(loss(_flash)))(qs)
    want = jax.value_and_grad(loss(_reference))(qs)
    assert rel_err(got[0], want[0]) <= TOL and rel_err(got[1], want[1]) <= TOL


def test_kernel_layout_rules(mesh):
    def arg(shape, spec):
        return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=NamedSharding(mesh, spec))

    q, k = (2, 8, 8, 16), (2, 8, 4, 16)

    def layout(q_spec, k_spec=REPLICATED):
        return kernel_layout(mesh, arg(q, q_spec), arg(k, k_spec))

    assert layout(BOTH, BOTH) == (("data",), ("model",))
    assert layout(BOTH) == (("data",), ("model",))  # q decides; k is resharded to match
    assert layout(PartitionSpec(("data", "model"))) == ((), ())  # batch 2 over 8 devices
    # 8 q heads over 8 devices would split GQA groups (4 kv heads): heads stay whole.
    assert layout(PartitionSpec(None, None, ("data", "model"))) == ((), ())
    assert layout(PartitionSpec("data", "model")) == (("data",), ())  # sequence: never kept
    plain = jax.ShapeDtypeStruct(q, jnp.float32)  # no sharding at all
    assert kernel_layout(mesh, plain, plain) == ((), ())


def test_per_shard_kernels_lower_to_triton_for_cuda(mesh):
    """A sharded CUDA cross-lowering. ``jax.export`` refuses modules holding custom_partitioning
    (its partition callbacks are Python objects kept alive by the executable), and the per-shard
    kernels are built by the partitioner at compile time, which needs a CUDA backend. So: lower
    the sharded program for CUDA (two partitionable custom calls, fwd and bwd), then run the
    partition callbacks on the sharded shapes and export the per-shard computation they return
    for CUDA: Triton kernels on local shapes."""

    def struct(shape, dtype, spec):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))

    b, s, h, hkv, d = 2, 128, 8, 4, 64
    q, kv = struct((b, s, h, d), jnp.bfloat16, BOTH), struct((b, s, hkv, d), jnp.bfloat16, BOTH)
    ids = struct((b, s), jnp.int32, DATA)

    def grads(q, k, v, ids):
        loss = (
            lambda q, k, v: flash_attention(
                q, k, v, mask=AttentionMask(causal=True, segment_ids=ids), interpret=False
            )
            .astype(jnp.float32)
            .sum()
        )
        return jax.grad(loss, (0, 1, 2))(q, k, v)

    text = jax.jit(grads).trace(q, kv, kv, ids).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("CustomSPMDPartitioning") == 2

    triton = "__gpu$xla.gpu.triton"
    local_q, local_kv = "tensor<1x128x2x64xbf16>", "tensor<1x128x1x64xbf16>"
    cfg = _kernel_config(q, kv, ids, causal=True, interpret=False)
    lse = struct((b, h, s), jnp.float32, PartitionSpec("data", "model"))
    for partition_fn, args in (
        (_fwd_partition, (q, kv, kv, ids, ids)),
        (_bwd_partition, (q, kv, kv, ids, ids, q, lse, q)),
    ):
        _, local_fn, _, arg_shardings = partition_fn(cfg, mesh, args, None)
        local_args = [
            jax.ShapeDtypeStruct(sh.shard_shape(a.shape), a.dtype)
            for a, sh in zip(args, arg_shardings, strict=True)
        ]
        with cuda_target():
            exported = export.export(
                jax.jit(local_fn),
                platforms=["cuda"],
                disabled_checks=[export.DisabledSafetyCheck.custom_call(triton)],
            )(*local_args)
        module = exported.mlir_module()
        assert triton in module and local_q in module and local_kv in module


def test_sharding_rules_and_gspmd_inference(mesh):
    """The Shardy rule ties q's heads to k's (compound (n g)) only when no mesh axis could split
    the kv heads; the GSPMD inference gives the kernel layout to the results."""

    def cfg(groups, segs=True):
        q = jax.ShapeDtypeStruct((2, 16, 4 * groups, 16), jnp.float32)
        ids = jax.ShapeDtypeStruct((2, 16), jnp.int32) if segs else None
        return _kernel_config(q, kv(4), ids, causal=True)

    def kv(heads):
        return jax.ShapeDtypeStruct((2, 16, heads, 16), jnp.float32)

    big = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("data", "model"))  # size 4 | 4 heads

    def q_heads(rule):  # the factor(s) of q's heads dimension
        return rule.operand_mappings[0][2]

    assert q_heads(_fwd_rule(cfg(2), big, [None, kv(4)], None)) == ("n", "g")
    assert q_heads(_fwd_rule(cfg(2), mesh, [None, kv(4)], None)) == "h"  # 8 devices ∤ 4 heads
    assert q_heads(_bwd_rule(cfg(1), big, [None, kv(4)], None)) == "n"  # no GQA: q heads = n
    rule = _bwd_rule(cfg(2, segs=False), big, [None, kv(4)], None)
    assert len(rule.operand_mappings) == 6 and len(rule.result_mappings) == 3
    assert rule.need_replication_factors == ("s", "d", "t")

    def arg(shape, spec):
        return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=NamedSharding(mesh, spec))

    q, k = arg((2, 16, 8, 16), BOTH), arg((2, 16, 4, 16), REPLICATED)
    out, lse = _fwd_infer(cfg(2), mesh, (q, k), None)
    assert out.is_equivalent_to(NamedSharding(mesh, BOTH), 4)
    assert lse.is_equivalent_to(NamedSharding(mesh, PartitionSpec("data", "model")), 3)
    assert all(g.is_equivalent_to(out, 4) for g in _bwd_infer(cfg(2), mesh, (q, k), None))
    # Batch over two mesh axes (data x fsdp style) stays sharded over both.
    dp = PartitionSpec(("data", "model"))
    q8, k8 = arg((8, 16, 8, 16), dp), arg((8, 16, 4, 16), dp)
    assert _fwd_infer(cfg(2), mesh, (q8, k8), None)[0].is_equivalent_to(NamedSharding(mesh, dp), 4)
    # `aligned` (before cuDNN): the same layout for q, k, v; the batch's for the other rows.
    ids = jax.ShapeDtypeStruct((2, 16), jnp.int32, sharding=NamedSharding(mesh, REPLICATED))
    got = _align_infer(mesh, (q, k, k, ids), None)
    assert all(g.is_equivalent_to(out, 4) for g in got[:3])
    assert got[3].is_equivalent_to(NamedSharding(mesh, DATA), 2)
    rule = _align_rule(big, [q, kv(4), kv(4), ids], None)
    assert q_heads(rule) == ("n", "g") and rule.operand_mappings[3] == ("b", "x0_1")
    assert rule.result_mappings == rule.operand_mappings


def test_inside_shard_map_with_vma_checks(mesh):
    """Explicit per-shard use (MaxText style): outputs carry the inputs' varying mesh axes."""
    q, k, v, ids, ct = _inputs(7)
    spec = PartitionSpec("data", None, "model")
    per_shard = jax.shard_map(
        _fwd_bwd(_flash, causal=True),
        mesh=mesh,
        in_specs=(spec, spec, spec, DATA, spec),
        out_specs=(spec,) * 4,
        check_vma=True,
    )
    got, _ = _run_sharded(mesh, per_shard, (q, k, v, ids, ct), (spec, spec, spec, DATA, spec))
    expected = _fwd_bwd(_reference, causal=True)(q, k, v, ids, ct)
    for a, e in zip(got, expected, strict=True):
        assert rel_err(a, e) <= TOL
