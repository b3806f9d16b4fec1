"""Chunked softmax cross-entropy fused with the unembedding matmul.

The LM loss ``CE(hidden @ unembedding, labels)`` normally materialises float32 logits of shape
``[tokens, vocab]`` (GPT-2 small at 8 x 1024 tokens: 1.5 GiB) and keeps them for the backward pass.
Here a ``lax.scan`` walks along the sequence axis in chunks of about ``chunk_size`` tokens (a few
positions of every batch row, so the batch axis, and its sharding, stays whole): each step
computes one ``[chunk, vocab]`` logits block, its log-sum-exp, the label logit and the argmax, then
drops it. The gradient is a ``custom_vjp``. Without z-loss (the default) the loss differentiates
the sum of cross-entropy alone, so under differentiation the forward pass also forms
``softmax - onehot`` of each chunk while its logits exist and keeps only the two gradients
(``[tokens, d_model]`` and the float32 ``[d_model, vocab]`` accumulator), which the backward pass
scales by its cotangent: the head's matmuls per step drop from four to three. With z-loss the
forward saves the per-token log-sum-exp (``[tokens]`` float32) and the backward recomputes each
chunk's logits.

The chunk is chosen from the shape by default (`auto_chunk_size`): at least 4 chunks and at most
1 GiB of float32 logits per chunk, so the logits that exist at once (one chunk's block, and under
differentiation its gradient) stay within a quarter of the full ``[tokens, vocab]`` logits and
within a bounded size at any batch, while few chunks keep the per-chunk traffic (re-reading the
unembedding, updating the ``d(unembedding)`` accumulator) small. Chunks are never smaller than
8 MiB of logits, so small problems (the tiny presets) run as one chunk without a scan's per-step
overhead. Each chunk's log-sum-exp and argmax come from one pass over its logits
(`row_stats`).

With ``softcap`` (Gemma 2's final-logit cap) each chunk's logits are ``cap · tanh(x / cap)``
before `row_stats`, and the gradient through them carries the cap's derivative ``1 - t²``.

With ``row_kernel=True`` (opt-in) each chunk's statistics and logits gradient under
differentiation come from one Pallas kernel over its stored logits (`tjx.kernels.ce_rows`)
instead of XLA's reduction and elementwise pass (two launches a chunk); the z-loss backward's
gradient pass takes it too (given the saved log-sum-exp). The forward without differentiation
(evaluation) stays XLA's one reduction.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from tjx.kernels.softcap import cap_derivative, check_softcap, uncap_grad

Array = jax.Array
Sums = tuple[Array, Array, Array, Array]

#: `auto_chunk_size` splits the logits into at least this many chunks...
AUTO_MIN_CHUNKS = 4
#: ...and into as many more as keep a chunk's float32 logits within this many bytes...
AUTO_MAX_CHUNK_BYTES = 1 << 30
#: ...unless a chunk would hold less than this many bytes of float32 logits.
AUTO_MIN_CHUNK_BYTES = 8 << 20


def auto_chunk_size(num_tokens: int, vocab_size: int) -> int:
    """Tokens per chunk for ``chunk_size=None``: a quarter of the tokens, at most 1 GiB of logits.

    Each chunk re-reads the unembedding twice and reads and writes the float32 ``d(unembedding)``
    accumulator once (``12 · d_model · vocab`` bytes: 0.46 GB at GPT-2 sizes), so fewer chunks
    move fewer bytes; each chunk's logits (and, under differentiation, their bf16 gradient) are
    alive at once, so more chunks hold less memory. At least four chunks (a chunk's logits are
    at most a quarter of the full ``[tokens, vocab]`` float32 logits), and as many more as keep
    a chunk within `AUTO_MAX_CHUNK_BYTES`; never under `AUTO_MIN_CHUNK_BYTES` (small problems
    run as one chunk without a scan's per-step cost). gpt2_small at 16 × 1024 tokens: 4 chunks
    of 4096 (0.82 GB of logits each; 16 chunks moved 3.5 GB more per step on an H100).

    Parameters
    ----------
    num_tokens : int
        Tokens scored at once (batch × sequence, per device if the batch is sharded: pass the
        global count and the per-device share scales with it).
    vocab_size : int
        Columns of the unembedding.

    Returns
    -------
    int
        A positive chunk size for `chunked_cross_entropy`.
    """
    if num_tokens < 0 or vocab_size < 1:
        raise ValueError(
            f"auto_chunk_size needs tokens >= 0 and vocab >= 1, got {num_tokens}, {vocab_size}"
        )
    floor = max(1, AUTO_MIN_CHUNK_BYTES // (4 * vocab_size))
    chunks = max(AUTO_MIN_CHUNKS, -(-num_tokens * 4 * vocab_size // AUTO_MAX_CHUNK_BYTES))
    return max(1, -(-num_tokens // chunks), floor)


class CrossEntropyOutput(NamedTuple):
    """Result of :func:`chunked_cross_entropy` (a pytree: jit/scan/grad friendly).

    Attributes
    ----------
    loss : Array
        float32 scalar: mean cross-entropy over non-ignored tokens plus ``z_loss * mean(lse**2)``;
        0 when every token is ignored or there is none (``[b, 0]`` labels; the gradients are
        then zeros too).
    sum_loss : Array
        float32 scalar: sum of per-token cross-entropy (no z-loss), for exact streaming metrics.
    num_tokens : Array
        int32 scalar: number of non-ignored tokens.
    num_correct : Array
        int32 scalar: non-ignored tokens whose top-1 logit is the label.
    """

    loss: Array
    sum_loss: Array
    num_tokens: Array
    num_correct: Array


class HeadProducts(Protocol):
    """The head's three products on one chunk, for `chunked_cross_entropy`'s ``products``.

    Its custom VJP calls `forward` for each chunk's logits and `backward` for the two gradient
    products, so an implementation chooses how they multiply (`DotProducts`: in the operands'
    dtype; ``tjx.nn.fp8.Fp8HeadProducts``: in float8). It must be hashable (a frozen dataclass):
    it is a static argument of the VJP.
    """

    def forward(self, h: Array, w: Array, stored: Any) -> tuple[Array, Any]:
        """``h [c, d] · w [d, vocab]`` accumulated in float32 and written in ``stored``, and
        the residuals `backward` takes."""
        ...

    def backward(self, res: Any, dlogits: Array) -> tuple[Array, Array]:
        """``(dlogits · wᵀ [c, d], hᵀ · dlogits [d, vocab])`` in float32 from `forward`'s
        residuals and the chunk's float32 logits gradient."""
        ...


@dataclass(frozen=True)
class DotProducts:
    """The default `HeadProducts`: ``jnp.dot`` of the operands as given (the compute dtype),
    accumulated in float32; the logits gradient is cast to the operands' dtype first."""

    def forward(self, h: Array, w: Array, stored: Any) -> tuple[Array, tuple[Array, Array]]:
        """``h · w`` written in ``stored``; the residuals are the operands."""
        return jnp.dot(h, w, preferred_element_type=stored), (h, w)

    def backward(self, res: tuple[Array, Array], dlogits: Array) -> tuple[Array, Array]:
        """``(dlogits · wᵀ, hᵀ · dlogits)`` in float32."""
        h, w = res
        dh = jnp.dot(dlogits.astype(w.dtype), w.T, preferred_element_type=jnp.float32)
        dw = jnp.dot(h.T, dlogits.astype(h.dtype), preferred_element_type=jnp.float32)
        return dh, dw


#: The products `chunked_cross_entropy` takes when given none.
DOT_PRODUCTS = DotProducts()


@dataclass(frozen=True)
class VocabMajor:
    """``inner``'s products of an unembedding given as ``[vocab, d_model]`` (a tied token table
    as it is stored): each chunk transposes it where its products read it, and turns the
    ``d(unembedding)`` product back, so XLA folds both turns into the products' operand layouts.

    Why: transposed before the call, the table would be a loop-invariant input of the chunks'
    loop, which XLA writes out transposed (GPT-2 small's bf16 table: 77 MB, a kernel a step),
    and the float32 ``d(unembedding)`` would be turned back by another pass."""

    inner: HeadProducts

    def forward(self, h: Array, w: Array, stored: Any) -> tuple[Array, Any]:
        """``inner``'s forward of ``h`` and ``wᵀ``."""
        return self.inner.forward(h, w.T, stored)

    def backward(self, res: Any, dlogits: Array) -> tuple[Array, Array]:
        """``inner``'s backward, ``d(unembedding)`` as ``[vocab, d_model]``."""
        dh, dw = self.inner.backward(res, dlogits)
        return dh, dw.T


def _chunk_logits(
    h_c: Array,
    w: Array,
    softcap: float | None,
    stored: Any = jnp.float32,
    products: HeadProducts = DOT_PRODUCTS,
) -> tuple[Array, Array | None, Any]:
    """One chunk's float32 ``[c, vocab]`` logits, soft-capped when asked, the cap's
    ``tanh(x / cap)`` (None without a cap) for ``uncap_grad``, and ``products``' residuals.

    ``stored``: the dtype the product writes (it accumulates in float32 either way). bfloat16
    halves the bytes of the largest tensor of the step, written once and read twice (the
    statistics, the gradient), as PyTorch's autocast does for its LM head; the softmax and
    the gradient are then computed in float32 from the rounded logits."""
    y, res = products.forward(h_c, w, stored)
    logits = y.astype(jnp.float32)
    if softcap is None:
        return logits, None, res
    t = jnp.tanh(logits / softcap)
    return softcap * t, t, res


Partial = tuple[Array, Array, Array, Array]


def _merge(a: Partial, b: Partial) -> Partial:
    """Combine two partials of a row: (max, Σ exp(x − max), index of the max, label's logit)."""
    m1, s1, i1, l1 = a
    m2, s2, i2, l2 = b
    m = jnp.maximum(m1, m2)
    shift = jnp.where(m == -jnp.inf, 0.0, m)  # two empty partials: no inf − inf
    s = s1 * jnp.exp(m1 - shift) + s2 * jnp.exp(m2 - shift)
    # the first index among equal maxima, as jnp.argmax
    i = jnp.where(m1 > m2, i1, jnp.where(m2 > m1, i2, jnp.minimum(i1, i2)))
    return m, s, i, l1 + l2


def row_stats(logits: Array, labels: Array) -> tuple[Array, Array, Array]:
    """Row log-sum-exp, argmax and the label's logit of float32 ``[c, vocab]`` logits, in one
    pass over them.

    One variadic reduction (online softmax: a running max, the sum of exponentials rescaled to
    it, the max's index, and the logit where the column is the row's label) instead of
    ``logsumexp``, ``argmax`` and a gather: XLA makes those three or four passes over the logits
    (the max; Σ exp(x − max), which needs the max first; argmax; the label pick as a masked
    sum), each reading the whole chunk from memory. The sum is taken in another order than
    ``logsumexp``'s, so the results agree to float32 rounding, not bitwise. A label outside
    ``[0, vocab)`` picks 0.
    """
    axis = logits.ndim - 1
    index = jax.lax.broadcasted_iota(jnp.int32, logits.shape, axis)
    picked = jnp.where(index == labels[..., None], logits, jnp.zeros((), logits.dtype))
    zero = jnp.asarray(0, logits.dtype)
    init = (jnp.asarray(-jnp.inf, logits.dtype), zero, jnp.int32(0), zero)
    m, s, i, label_logit = jax.lax.reduce(
        (logits, jnp.ones_like(logits), index, picked), init, _merge, (axis,)
    )
    return m + jnp.log(s), i, label_logit


def _chunk_stats(logits: Array, safe: Array, valid: Array) -> tuple[Array, Array, Array, Array]:
    """Per-token (ce, lse, valid, correct) of one chunk's float32 ``[c, vocab]`` logits, with
    ``safe`` the labels (0 where not ``valid``)."""
    lse, top, label_logit = row_stats(logits, safe)
    ce = jnp.where(valid, lse - label_logit, 0.0)
    correct = valid & (top == safe)
    return ce, lse, valid, correct


def _labels(lc: Array, ignore_index: int) -> Array:
    """Every chunk's labels ``[n, 2, c]``: whether each counts (1/0), then the label (0 where it
    does not): made once before the scan, one kernel, not one a chunk (`_unpack`)."""
    valid = lc != ignore_index
    return jnp.stack([valid.astype(lc.dtype), jnp.where(valid, lc, 0)], axis=1)


def _unpack(labels: Array) -> tuple[Array, Array]:
    """One chunk's (valid, safe labels) from `_labels`."""
    return labels[0] != 0, labels[1]


#: Per-token running sums over the chunks: CE, lse² of counted tokens, counted, correct.
Acc = tuple[Array, Array, Array, Array]


def _zero_acc(rows: int) -> Acc:
    zero_f, zero_i = jnp.zeros((rows,), jnp.float32), jnp.zeros((rows,), jnp.int32)
    return zero_f, zero_f, zero_i, zero_i


def _add_acc(acc: Acc, ce: Array, lse: Array, valid: Array, correct: Array) -> Acc:
    """Each token's terms added to its running sums: elementwise, so XLA adds them in the kernel
    that makes them (the four scalar sums of each chunk were a reduction and three adds: four
    launches a chunk)."""
    a_ce, a_z, a_n, a_ok = acc
    return (
        a_ce + ce,
        a_z + jnp.where(valid, lse * lse, 0.0),
        a_n + valid.astype(jnp.int32),
        a_ok + correct.astype(jnp.int32),
    )


def _total(acc: Acc) -> Sums:
    """The four sums of the per-token running sums: the loss's three in one (variadic)
    reduction, one kernel; the correct count apart, so that a step that does not report it
    never computes it (nor each chunk's argmax)."""
    zeros = tuple(jnp.zeros((), a.dtype) for a in acc[:3])

    def add(a: tuple[Array, ...], b: tuple[Array, ...]) -> tuple[Array, ...]:
        return tuple(x + y for x, y in zip(a, b, strict=True))

    s_ce, s_z, n_tok = jax.lax.reduce(acc[:3], zeros, add, (0,))
    return s_ce, s_z, n_tok, jnp.sum(acc[3])


def _dlogits(logits: Array, labels: Array, lse: Array, g_ce: Array, g_z: Array) -> Array:
    """d(g_ce·ce + g_z·lse²)/dlogits = g_ce·(p - onehot) + 2·g_z·lse·p, zero on ignored tokens.

    One elementwise expression (the label test is an iota comparison, not a one-hot array), so
    XLA fuses it into a single ``[chunk, vocab]`` buffer next to the logits."""
    p = jnp.exp(logits - lse[:, None])
    is_label = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1) == labels[:, None]
    out = p * (g_ce + (2.0 * g_z) * lse[:, None]) - jnp.where(is_label, g_ce, 0.0)
    return jnp.where(labels[:, None] >= 0, out, 0.0)


def _row_kernel_grad(
    y: Array, labels: Array, g: Array, out_dtype: Any, lse: Array | None = None
) -> tuple[Array, Array, Array, Array]:
    """`tjx.kernels.ce_rows.ce_rows` of one chunk's stored logits ``y`` (imported here: Pallas
    only when a head asks for it)."""
    from tjx.kernels.ce_rows import ce_rows

    return ce_rows(y, labels, g, out_dtype, lse=lse)


@dataclass(frozen=True)
class _Head:
    """One call's settings of the chunked head: what every chunk's pass reads alike, and the
    custom VJP's one non-differentiable argument (hashable, as ``products`` must be).

    ``stored``: the dtype the logits' product writes (`_chunk_logits`). ``fused``: the caller
    differentiates the sum of CE only (no z-loss), so the forward pass under differentiation
    also forms its gradient (`_sums_and_grads`). ``row_kernel``: each chunk's statistics and
    gradient by `tjx.kernels.ce_rows`'s kernel (no soft-cap)."""

    ignore_index: int
    softcap: float | None
    stored: Any
    products: HeadProducts
    fused: bool = False
    row_kernel: bool = False

    def logits(self, h_c: Array, w: Array) -> tuple[Array, Array | None, Any]:
        """`_chunk_logits` of one chunk with these settings."""
        return _chunk_logits(h_c, w, self.softcap, self.stored, self.products)


def _sums_fwd_impl(hc: Array, w: Array, lc: Array, head: _Head) -> tuple[Sums, Array]:
    def step(acc: Acc, xs: tuple[Array, Array]) -> tuple[Acc, Array]:
        h_c, (valid, safe) = xs[0], _unpack(xs[1])
        logits, _, _ = head.logits(h_c, w)  # [c, vocab], dropped
        ce, lse, valid, correct = _chunk_stats(logits, safe, valid)
        return _add_acc(acc, ce, lse, valid, correct), lse

    acc, lse = jax.lax.scan(step, _zero_acc(lc.shape[1]), (hc, _labels(lc, head.ignore_index)))
    return _total(acc), lse


def _sums_and_grads(hc: Array, w: Array, lc: Array, head: _Head) -> tuple[Sums, Array, Array]:
    """The sums and, in the same pass over the chunks, d(sum of CE)/d(hc, w).

    Without z-loss the sum of CE is the only differentiable output the loss uses, so its
    gradient is known up to the scalar cotangent before the backward pass starts: forming it
    here, while each chunk's logits exist anyway, saves the backward's recomputation of every
    chunk's logits (one of the head's four ``[tokens, d] x [d, vocab]`` products per step;
    Liger-Kernel's fused linear cross-entropy does the same on GPUs). ``head.row_kernel``:
    each chunk's statistics and gradient by `_row_kernel_grad` (no soft-cap).
    """
    products = head.products
    one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)

    def kernel_step(carry: tuple[Acc, Array], xs: tuple[Array, Array]) -> tuple[Any, Array]:
        acc, dw = carry
        h_c, (valid, safe) = xs[0], _unpack(xs[1])
        y, res = products.forward(h_c, w, head.stored)  # read as stored: the kernel upcasts
        dlabels = jnp.where(valid, safe, -1)  # the kernel zeroes the rows of ignored tokens
        out_dtype = jnp.promote_types(h_c.dtype, w.dtype)
        g = jnp.stack([one, zero])
        lse, top, pick, dlogits = _row_kernel_grad(y, dlabels, g, out_dtype)
        ce = jnp.where(valid, lse - pick, 0.0)
        dh, dw_c = products.backward(res, dlogits)
        return (_add_acc(acc, ce, lse, valid, valid & (top == safe)), dw + dw_c), dh

    def step(carry: tuple[Acc, Array], xs: tuple[Array, Array]) -> tuple[Any, Array]:
        acc, dw = carry
        h_c, (valid, safe) = xs[0], _unpack(xs[1])
        logits, t, res = head.logits(h_c, w)
        ce, lse, valid, correct = _chunk_stats(logits, safe, valid)
        dlabels = jnp.where(valid, safe, -1)  # _dlogits zeroes the rows of ignored tokens
        dlogits = uncap_grad(_dlogits(logits, dlabels, lse, one, zero), cap_derivative(t))
        dh, dw_c = products.backward(res, dlogits)
        return (_add_acc(acc, ce, lse, valid, correct), dw + dw_c), dh

    start = (_zero_acc(lc.shape[1]), jnp.zeros(w.shape, jnp.float32))
    body = kernel_step if head.row_kernel else step
    (acc, dw), dh = jax.lax.scan(body, start, (hc, _labels(lc, head.ignore_index)))
    return _total(acc), dh, dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _ce_sums(hc: Array, w: Array, lc: Array, head: _Head) -> Sums:
    """(sum of CE, sum of lse², token count, correct count) over chunks ``hc [n, rows, d]``
    (``head.fused`` and ``head.row_kernel`` shape the gradient's passes: `_Head`)."""
    sums, _ = _sums_fwd_impl(hc, w, lc, head)
    return sums


def _ce_sums_fwd(hc: Array, w: Array, lc: Array, head: _Head) -> tuple[Sums, tuple[Array, ...]]:
    if head.fused:
        sums, dh, dw = _sums_and_grads(hc, w, lc, head)
        # Empty arrays carry the inputs' dtypes to the backward (residuals are arrays only).
        return sums, (dh, dw, jnp.zeros((0,), hc.dtype), jnp.zeros((0,), w.dtype))
    sums, lse = _sums_fwd_impl(hc, w, lc, head)
    return sums, (hc, w, lc, lse)


def _ce_sums_bwd(head: _Head, res: tuple[Array, ...], cts: Sums) -> tuple[Array, Array, None]:
    g_ce = cts[0].astype(jnp.float32)
    g_z = cts[1].astype(jnp.float32)
    products, ignore_index = head.products, head.ignore_index
    if head.fused:  # g_z is zero: the caller's loss has no z-loss term
        dh, dw, h_dtype, w_dtype = res
        return (g_ce * dh).astype(h_dtype.dtype), (g_ce * dw).astype(w_dtype.dtype), None
    hc, w, lc, lsec = res

    def step(dw: Array, xs: tuple[Array, Array, Array]) -> tuple[Array, Array]:
        h_c, l_c, lse_c = xs
        logits, t, fwd = head.logits(h_c, w)
        labels = jnp.where(l_c != ignore_index, l_c, -1)
        dlogits = uncap_grad(_dlogits(logits, labels, lse_c, g_ce, g_z), cap_derivative(t))
        dh, dw_c = products.backward(fwd, dlogits)
        return dw + dw_c, dh.astype(hc.dtype)

    def kernel_step(dw: Array, xs: tuple[Array, Array, Array]) -> tuple[Array, Array]:
        h_c, l_c, lse_c = xs
        y, fwd = products.forward(h_c, w, head.stored)
        labels = jnp.where(l_c != ignore_index, l_c, -1)
        out_dtype = jnp.promote_types(h_c.dtype, w.dtype)
        g = jnp.stack([g_ce, g_z])
        dlogits = _row_kernel_grad(y, labels, g, out_dtype, lse=lse_c)[3]
        dh, dw_c = products.backward(fwd, dlogits)
        return dw + dw_c, dh.astype(hc.dtype)

    body = kernel_step if head.row_kernel else step
    dw, dh = jax.lax.scan(body, jnp.zeros(w.shape, jnp.float32), (hc, lc, lsec))
    return dh, dw.astype(w.dtype), None


_ce_sums.defvjp(_ce_sums_fwd, _ce_sums_bwd)


def check_ce_args(
    hidden: Array, unembedding: Array, labels: Array, z_loss: float, vocab_major: bool = False
) -> None:
    """The argument checks every linear cross-entropy shares (``ValueError`` naming the fault);
    ``vocab_major``: the unembedding is ``[vocab, d_model]``."""
    layout = "[vocab, d_model]" if vocab_major else "[d_model, vocab]"
    width = unembedding.shape[1 if vocab_major else 0] if unembedding.ndim == 2 else None
    if hidden.ndim < 1 or unembedding.ndim != 2 or hidden.shape[-1] != width:
        raise ValueError(
            f"`hidden` [..., d_model] and `unembedding` {layout} disagree: "
            f"{hidden.shape} vs {unembedding.shape}"
        )
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"`labels` must have shape hidden.shape[:-1] = {hidden.shape[:-1]}; got {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`labels` must be an integer array; got {labels.dtype}")
    if z_loss < 0:
        raise ValueError(f"`z_loss` must be >= 0; got {z_loss}")


def chunked_cross_entropy(
    hidden: Array,
    unembedding: Array,
    labels: Array,
    *,
    chunk_size: int | None = None,
    ignore_index: int = -100,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logits_dtype: Any = None,
    products: HeadProducts | None = None,
    vocab_major: bool = False,
    row_kernel: bool = False,
) -> CrossEntropyOutput:
    """Cross-entropy of ``hidden @ unembedding`` against ``labels`` without full logits.

    Parameters
    ----------
    hidden : Array
        Final hidden states ``[..., d_model]`` (any float dtype; matmuls accumulate in float32).
    unembedding : Array
        ``[d_model, vocab]`` (the tied embedding transposed, or the LM head kernel).
    labels : Array
        Integer targets of shape ``hidden.shape[:-1]``; ``ignore_index`` marks tokens to skip.
        Other labels must lie in ``[0, vocab)``.
    chunk_size : int, optional
        Tokens per scan step (positive); ``None`` (the default) takes `auto_chunk_size` of the
        shape, which keeps the logits alive at once within 1/8 of the full logits. Every step
        takes ``max(1, chunk_size // rows)`` positions of the last axis from every row (``rows``
        = product of the other leading axes, kept whole so a batch-sharded input stays sharded),
        so peak extra memory is about ``max(chunk_size, rows) * vocab`` float32. The last axis
        is padded with ignored tokens.
    ignore_index : int
        Label value excluded from the loss and the counts.
    z_loss : float
        Weight of the auxiliary ``mean(logsumexp(logits)**2)`` term (PaLM's z-loss), >= 0.
    softcap : float, optional
        Soft-cap the logits to ``(-softcap, softcap)`` (``softcap · tanh(x / softcap)``, Gemma
        2's final-logit cap) before the softmax; the loss, the counts and the gradients are
        those of the capped logits. None: no cap.
    logits_dtype : dtype, optional
        The dtype each chunk's product is written in before the float32 softmax: ``None`` or
        float32 (exact), or bfloat16 / float16 — half the bytes of the step's largest tensor,
        rounded as PyTorch's autocast rounds its LM head's output.
    products : HeadProducts, optional
        How each chunk's three products multiply (the logits; ``dh``, ``dw``); None:
        `DotProducts` (the operands' dtype). ``tjx.nn.fp8.Fp8HeadProducts``: float8.
    vocab_major : bool
        The unembedding is given as ``[vocab, d_model]`` (a tied token table as stored; its
        gradient comes back in that layout): the products read it transposed where they run
        (`VocabMajor`), so no transposed copy of it is written.
    row_kernel : bool
        Under differentiation, each chunk's row statistics and logits gradient come from one
        Pallas kernel over its stored logits (`tjx.kernels.ce_rows`: compiled by Triton on a
        CUDA GPU, interpreted elsewhere) instead of XLA's two passes; not with ``softcap``.
        Opt-in: no GPU has measured it.

    Returns
    -------
    CrossEntropyOutput
        ``loss`` (float32 mean incl. z-loss), ``sum_loss`` (float32 sum of CE), ``num_tokens`` and
        ``num_correct`` (int32).
    """
    check_ce_args(hidden, unembedding, labels, z_loss, vocab_major)
    if chunk_size is None:
        vocab = unembedding.shape[0 if vocab_major else 1]
        chunk_size = auto_chunk_size(math.prod(labels.shape), vocab)
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"`chunk_size` must be a positive int; got {chunk_size!r}")
    check_softcap(softcap)
    if row_kernel and softcap is not None:
        raise ValueError(
            "the row kernel (row_kernel=True) does not soft-cap logits; a capped head needs "
            "row_kernel=False"
        )
    stored = jnp.dtype(jnp.float32 if logits_dtype is None else logits_dtype)
    if not jnp.issubdtype(stored, jnp.floating):
        raise ValueError(f"`logits_dtype` must be a floating dtype; got {stored}")
    d_model = hidden.shape[-1]
    # Rows = every leading axis but the last (kept whole, so batch sharding survives); the scan
    # walks along the last (sequence) axis, `cols` positions of every row per step.
    rows = math.prod(labels.shape[:-1]) if labels.ndim >= 2 else 1
    seq = labels.shape[-1] if labels.ndim >= 1 else 1
    h = hidden.reshape(rows, seq, d_model)
    lab = labels.reshape(rows, seq).astype(jnp.int32)
    # max(rows, 1): a batch of zero rows is valid (nothing to scan), not a division by zero.
    cols = max(1, min(seq, chunk_size // max(rows, 1)))
    pad = (-seq) % cols
    if pad:
        h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
        lab = jnp.pad(lab, ((0, 0), (0, pad)), constant_values=ignore_index)
    n = (seq + pad) // cols
    hc = h.reshape(rows, n, cols, d_model).transpose(1, 0, 2, 3).reshape(n, rows * cols, d_model)
    lc = lab.reshape(rows, n, cols).transpose(1, 0, 2).reshape(n, rows * cols)
    fused = z_loss == 0.0  # then the loss differentiates the sum of CE alone (_sums_and_grads)
    cap = None if softcap is None else float(softcap)
    dots: HeadProducts = DOT_PRODUCTS if products is None else products
    if vocab_major:
        dots = VocabMajor(dots)
    head = _Head(int(ignore_index), cap, stored, dots, fused=fused, row_kernel=bool(row_kernel))
    s_ce, s_z, n_tok, n_ok = _ce_sums(hc, unembedding, lc, head)
    denom = jnp.maximum(n_tok, 1).astype(jnp.float32)
    loss = (s_ce + jnp.float32(z_loss) * s_z) / denom
    return CrossEntropyOutput(loss=loss, sum_loss=s_ce, num_tokens=n_tok, num_correct=n_ok)
