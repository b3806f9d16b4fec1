"""The gated delta rule (Gated DeltaNet; Qwen3-Next's and Qwen3.5's linear attention), chunked.

Per head, a state ``S`` (``[d_k, d_v]``) is decayed, corrected toward the new value along the new
key, and read by the query (Yang, Kautz and Hatamizadeh 2024; row vectors):

    S_t = α_t S_{t-1} + β_t k_tᵀ (v_t - α_t k_t S_{t-1}),    o_t = q_t S_t,

with ``α_t = exp(g_t)`` (``g_t ≤ 0``, a log-decay) and ``β_t ∈ (0, 1)`` (the writing strength).
`gated_delta_recurrent` runs that recurrence token by token (``lax.scan``: the reference, and
what a tiny input needs); `gated_delta_step` is one token of it (generation, with the state in
the KV cache).

**The chunked form** (`gated_delta_rule`; parallel within a chunk of ``C`` tokens, recurrent
across chunks), derived for this module and checked against the recurrence in float64 — the
flash-linear-attention library's ``chunk_gated_delta_rule`` is the prior art (the WY/UT
representation). With ``S_0`` the state before a chunk, ``γ_t = exp(G_t)`` (``G`` the cumulative
sum of ``g`` within the chunk) and ``M_{ti} = γ_t / γ_i`` for ``i ≤ t`` (0 above), every state
inside the chunk is ``S_t = γ_t S_0 + Σ_{i≤t} M_{ti} k_iᵀ u_i`` for pseudo-values ``u`` that
solve a unit lower-triangular system:

    (I + diag(β) L) U = diag(β) V - diag(βγ) K S_0,    L_{ti} = M_{ti} (k_t · k_i) for i < t,

so ``U = Ũ - W S_0`` with ``Ũ = T diag(β) V``, ``W = T diag(βγ) K``, ``T = (I + diag(β) L)⁻¹``
(``T`` inverted per chunk by 2 × 2 blocks in XLA's own products, `_unit_lower_inverse`, not a
LAPACK solve; independent of the state: all chunks at once). Then

    O = diag(γ) Q S_0 + (Q Kᵀ ⊙ M) U,     S_C = γ_C S_0 + (K ⊙ γ_C/γ)ᵀ U,

where only ``U = Ũ - W S_0``, the two products with ``S_0`` and the state update are sequential;
everything else is batched over chunks.

**Two implementations of the sequential part** (``implementation``): ``"xla"``, a ``lax.scan``
over chunks of ``C × d`` matrix products, its backward autodiff through the scan (exact to the
forward; XLA compiles the scan's transpose and keeps the per-chunk states, ``[chunks, d_k, d_v]``
per head); ``"pallas"``, two Triton kernels (`tjx.kernels.gated_delta_pallas`, after
flash-linear-attention's ``chunk_gated_delta_rule_fwd_h`` / ``chunk_bwd_dh``) that walk the
chunks with the state on chip, storing one state per chunk for the backward, which runs the state's
cotangent through the chunks in reverse in the same style (a ``custom_vjp``; the chunk-parallel
products stay XLA's). Autodiff carries both through the chunk set-up above. ``"auto"``
(`gated_delta_auto`) takes XLA's scan until a GPU has measured the kernels faster: the kernels
only on a CUDA GPU whose launch table (``launch_tables.json``, the device kind's ``gdelta-<dtype>``
timings, which the GPU suite's ``fold`` writes for kernels it found correct) says they beat the
scan; the H100 compile's estimate (``tools/bench_gated_delta.py``, the README: 10.2 ms against
17.3 ms, forward and backward, 2 × 4096 tokens, 32 heads of 128, chunk 64) is not a measurement
and chooses nothing. Neither recomputes the states in the backward (flash-linear-attention's
saves that memory).

Shapes: ``q``, ``k`` ``[batch, seq, heads, d_k]``; ``v`` ``[batch, seq, heads, d_v]``; ``g``,
``beta`` ``[batch, seq, heads]``; state ``[batch, heads, d_k, d_v]``. The query scale (default
``d_k ** -0.5``) is applied inside. Products accumulate in float32 (float64 inputs stay float64).
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp

from tjx.kernels.choice import AutoChoice, Target, current_target
from tjx.kernels.launch import dtype_name, measured_bucket

__all__ = [
    "GATED_DELTA_IMPLEMENTATIONS",
    "gated_delta_auto",
    "gated_delta_implementation",
    "gated_delta_recurrent",
    "gated_delta_rule",
    "gated_delta_step",
    "measured_delta_timings",
]

#: ``implementation`` of `gated_delta_rule`: who runs the sequential part across chunks.
GATED_DELTA_IMPLEMENTATIONS = ("auto", "xla", "pallas")
#: The implementations a launch table's ``gdelta-<dtype>`` timings may hold.
_MEASURED = ("xla", "pallas")

Array = jax.Array


def _check(q: Array, k: Array, v: Array, g: Array, beta: Array, state: Array | None) -> None:
    chex.assert_rank([q, k, v, g, beta], [4, 4, 4, 3, 3])
    chex.assert_equal_shape([q, k])
    chex.assert_equal_shape_prefix([q, v, g, beta], 3)
    if state is not None:
        b, _, h, dk = q.shape
        chex.assert_shape(state, (b, h, dk, v.shape[-1]))


def _work_dtype(x: Array) -> jnp.dtype:
    return jnp.promote_types(x.dtype, jnp.float32)


def gated_delta_step(
    state: Array, q: Array, k: Array, v: Array, g: Array, beta: Array, *, scale: float | None = None
) -> tuple[Array, Array]:
    """One token of the recurrence for every batch row and head.

    Parameters
    ----------
    state : Array
        ``[batch, heads, d_k, d_v]``.
    q, k : Array
        ``[batch, heads, d_k]``.
    v : Array
        ``[batch, heads, d_v]``.
    g, beta : Array
        ``[batch, heads]``.
    scale : float, optional
        The query's scale (default ``d_k ** -0.5``).

    Returns
    -------
    (Array, Array)
        The output ``[batch, heads, d_v]`` (in ``v``'s dtype) and the new state (float32, or
        float64 for float64 inputs).
    """
    dt = _work_dtype(v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = state.astype(dt)
    q, k, v = q.astype(dt) * scale, k.astype(dt), v.astype(dt)
    alpha = jnp.exp(g.astype(dt))[..., None, None]
    b = beta.astype(dt)[..., None]
    decayed = alpha * s
    predicted = jnp.einsum("bhk,bhkv->bhv", k, decayed)
    s = decayed + jnp.einsum("bhk,bhv->bhkv", k, b * (v - predicted))
    return jnp.einsum("bhk,bhkv->bhv", q, s).astype(v.dtype), s


def gated_delta_recurrent(
    q: Array,
    k: Array,
    v: Array,
    g: Array,
    beta: Array,
    *,
    initial_state: Array | None = None,
    scale: float | None = None,
) -> tuple[Array, Array]:
    """The recurrence token by token (the reference of `gated_delta_rule`).

    Returns
    -------
    (Array, Array)
        Outputs ``[batch, seq, heads, d_v]`` and the final state ``[batch, heads, d_k, d_v]``.
    """
    _check(q, k, v, g, beta, initial_state)
    b, _, h, dk = q.shape
    dt = _work_dtype(v)
    s0 = jnp.zeros((b, h, dk, v.shape[-1]), dt) if initial_state is None else initial_state

    def one(s: Array, xs: tuple[Array, ...]) -> tuple[Array, Array]:
        o, s = gated_delta_step(s, *xs, scale=scale)
        return s, o

    moved = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, g, beta))
    final, out = jax.lax.scan(one, s0.astype(dt), moved)
    return jnp.moveaxis(out, 0, 1), final


def _unit_lower_inverse(a: Array) -> Array:
    """The inverse of the unit lower-triangular ``a`` ``[..., c, c]`` (its diagonal is not read),
    by 2 × 2 blocks: ``[[A, 0], [B, D]]⁻¹ = [[A⁻¹, 0], [-D⁻¹ B A⁻¹, D⁻¹]]``, from 1 × 1 blocks up,
    ⌈log₂ c⌉ rounds of batched matrix products (``c`` padded to a power of two by the identity).

    Not ``jax.scipy.linalg.solve_triangular``: on a CPU that is jaxlib's LAPACK ``trsm`` custom
    call, which splits its batch over XLA's intra-op thread pool and blocks its own pool thread
    until the pieces are done (``ParallelBatchMap``). With several CPU devices
    (``--xla_force_host_platform_device_count``) each device's program runs on a thread of that
    pool; when all of them reach the call at once, every pool thread waits for work no free
    thread is left to run: a deadlock (gdb on a stalled trainer: the 8 ``tf_XLAEigen`` threads
    in ``lapack_strsm_ffi`` → ``ParallelBatchMap`` → ``BlockingCounter::Wait``; a replicated
    ``solve_triangular`` over 8 CPU devices hung within ~100 calls). XLA's own products run
    everywhere, at full float32 (every pseudo-value reads the inverse).
    """
    c = a.shape[-1]
    size = 1 << (c - 1).bit_length()  # the power of two >= c
    if size != c:  # the padding: identity rows and columns, a block of its own
        pad = [(0, 0)] * (a.ndim - 2) + [(0, size - c), (0, size - c)]
        a = jnp.pad(a, pad) + jnp.diag(jnp.arange(size) >= c).astype(a.dtype)
    batch = a.shape[:-2]
    inv = jnp.ones((*batch, size, 1, 1), a.dtype)  # the 1 × 1 diagonal blocks' inverses
    s = 1
    while s < size:  # the inverses of the 2s × 2s diagonal blocks from those of the s × s ones
        pairs = size // (2 * s)
        blocks = jnp.einsum("...iaib->...iab", a.reshape(*batch, pairs, 2 * s, pairs, 2 * s))
        upper, lower = inv[..., 0::2, :, :], inv[..., 1::2, :, :]
        below = -jnp.matmul(
            jnp.matmul(lower, blocks[..., s:, :s], precision=jax.lax.Precision.HIGHEST),
            upper,
            precision=jax.lax.Precision.HIGHEST,
        )
        inv = jnp.concatenate(
            [
                jnp.concatenate([upper, jnp.zeros_like(upper)], axis=-1),
                jnp.concatenate([below, lower], axis=-1),
            ],
            axis=-2,
        )
        s *= 2
    return inv[..., 0, :c, :c]


def _scan_core(
    u_tilde: Array, w: Array, qk: Array, qd: Array, ke: Array, last: Array, s0: Array
) -> tuple[Array, Array]:
    """The sequential part in XLA: a ``lax.scan`` over chunks (``[b, h, n, ...]`` operands, the
    arguments of `tjx.kernels.gated_delta_pallas.pallas_core`); outputs ``[b, h, n, C, d_v]``."""

    def chunk(s: Array, xs: tuple[Array, ...]) -> tuple[Array, Array]:
        u_t, w_, qk_, qd_, ke_, gl = xs
        u = u_t - jnp.einsum("bhck,bhkv->bhcv", w_, s)
        o = jnp.einsum("bhck,bhkv->bhcv", qd_, s) + jnp.einsum("bhij,bhjv->bhiv", qk_, u)
        s = gl[..., None, None] * s + jnp.einsum("bhck,bhcv->bhkv", ke_, u)
        return s, o

    xs = tuple(jnp.moveaxis(x, 2, 0) for x in (u_tilde, w, qk, qd, ke, last))
    final, out = jax.lax.scan(chunk, s0, xs)  # out [n, b, h, c, dv]
    return jnp.moveaxis(out, 0, 2), final


def measured_delta_timings(device_kind: str, dtype: Any) -> dict[str, float]:
    """Implementation → measured forward+backward ms of the rule on ``device_kind`` for inputs of
    ``dtype`` (the launch table's ``gdelta-<dtype>`` bucket; empty when nothing was measured)."""
    name = dtype_name(dtype)
    return {} if name is None else measured_bucket(f"gdelta-{name}", device_kind, _MEASURED)


def gated_delta_auto(t: Target | None = None, dtype: Any = jnp.bfloat16) -> AutoChoice:
    """Which implementation ``"auto"`` takes on ``t`` (default: the current target) for inputs
    of ``dtype`` (``v``'s: the models' compute dtype).

    XLA's scan unless measured otherwise: the Pallas kernels come first only on a CUDA GPU whose
    launch table holds a ``gdelta-<dtype>`` timing of both implementations (the GPU suite's,
    for kernels it found correct) with the kernels the faster. No estimate chooses them: on
    every device nothing has measured, including the Hopper GPUs they were priced for, XLA.
    """
    t = current_target() if t is None else t
    if not t.cuda:
        return AutoChoice(("xla",), f"the gated delta kernels are CUDA-only; XLA on {t.platform}")
    kind = t.device_kind or "this GPU"
    times = measured_delta_timings(kind, dtype)
    bucket = f"gdelta-{dtype_name(dtype) or jnp.dtype(dtype).name}"
    if set(times) != set(_MEASURED):
        return AutoChoice(
            ("xla",),
            f"no tjx measurement of the gated delta kernels against XLA's scan on {kind} for "
            f"{bucket} yet (the GPU suite measures them); XLA",
        )
    order = tuple(sorted(_MEASURED, key=lambda k: times[k]))
    shown = ", ".join(f"{k} {times[k]:.3g} ms" for k in order)
    return AutoChoice(order, f"fastest measured on {kind} for {bucket}: {shown}")


def gated_delta_implementation(
    implementation: str, t: Target | None = None, dtype: Any = jnp.bfloat16
) -> str:
    """``"xla"`` or ``"pallas"`` for ``implementation`` (one of `GATED_DELTA_IMPLEMENTATIONS`;
    ``"auto"``: `gated_delta_auto`'s first for inputs of ``dtype``)."""
    if implementation not in GATED_DELTA_IMPLEMENTATIONS:
        raise ValueError(
            f"gated_delta_rule: implementation must be one of "
            f"{', '.join(GATED_DELTA_IMPLEMENTATIONS)}; got {implementation!r}"
        )
    return gated_delta_auto(t, dtype).kernel if implementation == "auto" else implementation


def gated_delta_rule(
    q: Array,
    k: Array,
    v: Array,
    g: Array,
    beta: Array,
    *,
    chunk_size: int = 64,
    initial_state: Array | None = None,
    scale: float | None = None,
    implementation: str = "auto",
) -> tuple[Array, Array]:
    """The gated delta rule over a sequence, in chunks of ``chunk_size`` (the module docstring).

    Parameters
    ----------
    q, k : Array
        ``[batch, seq, heads, d_k]`` (Qwen3-Next normalises them to unit length first: the
        layer's business).
    v : Array
        ``[batch, seq, heads, d_v]``.
    g : Array
        ``[batch, seq, heads]``: log-decays (``≤ 0``).
    beta : Array
        ``[batch, seq, heads]``: writing strengths.
    chunk_size : int
        ``C``; the sequence is zero-padded to a multiple of it (a padded token has ``g = 0``,
        ``β = 0``: it leaves the state as it is).
    initial_state : Array, optional
        ``[batch, heads, d_k, d_v]`` (a prefill that continues a cached state); zeros by default.
    scale : float, optional
        The query's scale (default ``d_k ** -0.5``).
    implementation : {"auto", "xla", "pallas"}
        Who runs the sequential part across chunks: ``"xla"`` a ``lax.scan``, ``"pallas"`` the
        kernels of `tjx.kernels.gated_delta_pallas` (compiled on a CUDA GPU, interpreted
        elsewhere), ``"auto"`` the rule of `gated_delta_auto` (XLA unless the launch table
        measured the kernels faster on this GPU). An empty sequence (``seq == 0``)
        takes the scan whatever it says (no chunk to launch a kernel for; as `attention` does).

    Returns
    -------
    (Array, Array)
        Outputs ``[batch, seq, heads, d_v]`` in ``v``'s dtype, and the final state (float32, or
        float64 for float64 inputs) for generation to continue from.
    """
    _check(q, k, v, g, beta, initial_state)
    if chunk_size < 1:
        raise ValueError(f"gated_delta_rule: chunk_size must be >= 1; got {chunk_size}")
    kernel = gated_delta_implementation(implementation, dtype=v.dtype)
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    dt = _work_dtype(v)
    scale = dk**-0.5 if scale is None else scale
    c = chunk_size
    n = -(-t // c)
    pad = n * c - t

    def chunks(x: Array) -> Array:
        # [b, t, h, ...] -> [b, h, n, c, ...], zero-padded at the end.
        x = jnp.pad(x.astype(dt), [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        x = x.reshape(b, n, c, h, *x.shape[3:])
        return jnp.moveaxis(x, 3, 1)

    qc, kc, vc = chunks(q) * scale, chunks(k), chunks(v)
    gc, bc = chunks(g), chunks(beta)  # [b, h, n, c]
    cum = jnp.cumsum(gc, axis=-1)  # G_t within each chunk
    causal = jnp.tril(jnp.ones((c, c), bool))
    # M_ti = γ_t / γ_i for i ≤ t: exp of a non-positive difference (no overflow), 0 above.
    m = jnp.exp(jnp.where(causal, cum[..., :, None] - cum[..., None, :], -jnp.inf))
    kk = jnp.einsum("bhnik,bhnjk->bhnij", kc, kc)
    strict = jnp.tril(jnp.ones((c, c), bool), -1)
    a = jnp.where(strict, bc[..., :, None] * m * kk, 0.0) + jnp.eye(c, dtype=dt)
    gamma = jnp.exp(cum)
    rhs = jnp.concatenate([bc[..., None] * vc, (bc * gamma)[..., None] * kc], axis=-1)
    # Named, so that a compiled program's float32 products say whose they are (the H100 plan).
    with jax.named_scope("gated_delta_chunk_inverse"):
        solved = jnp.matmul(_unit_lower_inverse(a), rhs, precision=jax.lax.Precision.HIGHEST)
    u_tilde, w = solved[..., :dv], solved[..., dv:]  # [b, h, n, c, dv], [b, h, n, c, dk]
    qk = jnp.einsum("bhnik,bhnjk->bhnij", qc, kc) * m  # (Q Kᵀ ⊙ M)
    q_decayed = gamma[..., None] * qc
    k_to_end = jnp.exp(cum[..., -1:] - cum)[..., None] * kc  # K ⊙ γ_C / γ
    last = gamma[..., -1]  # γ_C  [b, h, n]
    s0 = jnp.zeros((b, h, dk, dv), dt) if initial_state is None else initial_state.astype(dt)
    args = (u_tilde, w, qk, q_decayed, k_to_end, last, s0)
    if kernel == "pallas" and n > 0:  # an empty sequence has no chunk to walk: the scan's 0 steps
        from tjx.kernels.flash import resolve_interpret  # Pallas is imported only when chosen
        from tjx.kernels.gated_delta_pallas import pallas_core

        out, final = pallas_core(*args, resolve_interpret(None))
    else:
        out, final = _scan_core(*args)
    out = out.reshape(b, h, n * c, dv)[:, :, :t]
    return jnp.moveaxis(out, 1, 2).astype(v.dtype), final
