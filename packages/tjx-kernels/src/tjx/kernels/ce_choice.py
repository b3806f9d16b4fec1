"""Which linear cross-entropy ``auto`` takes, by evidence: XLA's chunked scan or the fused kernel.

The same rule as attention's (`tjx.kernels.choice`): on a CUDA GPU the implementations measured
on that device kind (the launch table's ``timings`` bucket ``ce-<dtype>``, written by the GPU
suite for implementations it found correct) come first, fastest first. With no measurement the
fused Pallas kernel is taken only if it moves fewer bytes than the chunked XLA program, both
estimated the way tjx-metrics' roofline counts a compiled program:

* the fused kernels: what their grids load (`costs.ce_cost`: the unembedding once per token
  tile, the logits recomputed per backward program — no credit for L2);
* the chunked scan (`chunked_ce_bytes`): per chunk of ``c`` tokens the logits product writes
  ``c·V`` float32 logits, one reduction reads them, the gradient pass reads them and writes
  ``dlogits`` (input dtype), the two backward products read those; the unembedding is read twice
  and the float32 ``d(unembedding)`` accumulator read and written once per chunk.

At GPT-2 sizes the fused kernels' estimate is ~25x the chunked program's (every token tile
re-reads the 77 MB unembedding), so without a measurement ``auto`` is XLA there: the kernel is
used where a GPU has measured it faster, or by name. On CPUs and TPUs ``auto`` is XLA.

``"pallas_rows"`` is the chunked XLA head with each chunk's row statistics and logits gradient
in one Pallas kernel (`tjx.kernels.ce_rows`); ``auto`` takes it only where the launch table
holds its measured timing (the GPU suite's ``ce rows`` cell), never by the byte estimate.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from tjx.kernels.ce_launch import DEFAULT_CE_LAUNCH, padded_dim
from tjx.kernels.choice import AutoChoice, Target, current_target
from tjx.kernels.costs import ce_cost
from tjx.kernels.cross_entropy import HeadProducts, auto_chunk_size
from tjx.kernels.launch import dtype_name, measured_bucket

#: ``cross_entropy_impl``: ``"xla"`` is `chunked_cross_entropy`, ``"pallas"`` the fused kernel,
#: ``"pallas_rows"`` the chunked one with its per-chunk passes in one kernel (`ce_rows`).
CE_IMPLEMENTATIONS = ("auto", "xla", "pallas", "pallas_rows")
#: The implementations a measured timing may rank (all but ``auto``).
_MEASURED = CE_IMPLEMENTATIONS[1:]
#: The kernels' names in a refusal.
CE_KERNEL_NAMES = {"pallas": "fused (pallas)", "pallas_rows": "row-kernel (pallas_rows)"}


def chunked_ce_bytes(tokens: int, d: int, vocab: int, item: int, chunk: int | None = None) -> float:
    """Estimated bytes the chunked XLA cross-entropy moves, forward and backward (module doc)."""
    chunk = chunk or auto_chunk_size(tokens, vocab)
    chunks = max(1, -(-tokens // chunk))
    per_logit = 4 + 4 + 4 + item + 2 * item  # write, reduce, gradient pass, two products
    per_chunk = d * vocab * (2 * item + 8)  # unembedding twice, f32 accumulator read + write
    return float(tokens * vocab * per_logit + chunks * per_chunk + tokens * d * (2 * item + 4))


def fused_ce_bytes(tokens: int, d: int, vocab: int, dtype: Any) -> float:
    """Estimated bytes the fused kernels load and store (their three launches, `costs.ce_cost`)."""
    launch = DEFAULT_CE_LAUNCH
    dp = padded_dim(d, launch)
    fitted = launch.fitted(dp)
    t = -(-tokens // fitted.block_t) * fitted.block_t
    v = -(-vocab // fitted.block_v) * fitted.block_v
    name = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}[jnp.dtype(dtype).name]
    ops = [(name, (t, dp)), (name, (dp, v)), ("s32", (t,))]
    grids = {
        "tjx_ce_fwd": (t // fitted.block_t,),
        "tjx_ce_dx": (t // fitted.block_t, dp // fitted.block_d),
        "tjx_ce_dw": (dp // fitted.block_d, v // fitted.block_v),
    }
    return float(sum(sum(ce_cost(k, g, ops)[1:]) for k, g in grids.items()))


def measured_ce_timings(device_kind: str, dtype: Any) -> dict[str, float]:
    """Implementation → measured forward+backward ms on ``device_kind`` (empty: none)."""
    name = dtype_name(dtype)
    return {} if name is None else measured_bucket(f"ce-{name}", device_kind, _MEASURED)


def ce_auto_order(
    dtype: Any, tokens: int, d: int, vocab: int, t: Target | None = None
) -> AutoChoice:
    """Rank the cross-entropy implementations ``auto`` may take (see the module docstring)."""
    t = current_target() if t is None else t
    if not t.cuda:
        return AutoChoice(("xla",), f"the fused kernel is CUDA-only; XLA on {t.platform}")
    kind = t.device_kind or "this GPU"
    if dtype_name(dtype) is None:
        return AutoChoice(("xla",), f"no fused kernel for {jnp.dtype(dtype).name}")
    times = measured_ce_timings(kind, dtype)
    if times:
        order = tuple(sorted(times, key=lambda k: times[k]))
        order = (*order, *(k for k in ("xla",) if k not in order))
        shown = ", ".join(f"{k} {times[k]:.3g} ms" for k in order if k in times)
        return AutoChoice(order, f"fastest measured on {kind}: {shown}")
    fused = fused_ce_bytes(tokens, d, vocab, dtype)
    xla = chunked_ce_bytes(tokens, d, vocab, jnp.dtype(dtype).itemsize)
    ratio = f"estimated {fused / 1e9:.3g} GB (fused) vs {xla / 1e9:.3g} GB (chunked XLA)"
    if fused < xla:
        return AutoChoice(("pallas", "xla"), f"no measurement on {kind}; {ratio}")
    return AutoChoice(("xla",), f"no measurement on {kind}; {ratio}")


def ce_implementation(
    implementation: str,
    hidden: Any,
    unembedding: Any,
    t: Target | None = None,
    softcap: float | None = None,
    products: HeadProducts | None = None,
) -> str:
    """``"xla"``, ``"pallas"`` or ``"pallas_rows"`` for a call (``implementation`` one of
    `CE_IMPLEMENTATIONS`).

    A soft-capped head (``softcap``, Gemma 2) is always ``"xla"``: neither kernel caps its
    logits, so ``auto`` never takes one and an explicit ``"pallas"`` or ``"pallas_rows"`` is
    refused. So is a head with its own ``products`` (a float8 head,
    ``tjx.nn.fp8.Fp8HeadProducts``): the fused kernel multiplies in the operands' dtype only, and
    the row kernel writes its gradient in that dtype where the float8 head takes float32."""
    if implementation not in CE_IMPLEMENTATIONS:
        raise ValueError(
            f"cross-entropy implementation must be one of {', '.join(CE_IMPLEMENTATIONS)}; "
            f"got {implementation!r}"
        )
    if softcap is not None:
        if implementation in CE_KERNEL_NAMES:
            raise ValueError(
                f"the {CE_KERNEL_NAMES[implementation]} cross-entropy does not soft-cap logits; "
                "a model with final_logit_softcap needs cross_entropy_impl: xla (or auto)"
            )
        return "xla"
    if products is not None:
        if implementation in CE_KERNEL_NAMES:
            raise ValueError(
                f"the {CE_KERNEL_NAMES[implementation]} cross-entropy has no float8 path; a "
                "float8 LM head (precision.fp8_lm_head) needs cross_entropy_impl: xla (or auto)"
            )
        return "xla"
    if implementation != "auto":
        return implementation
    tokens = math.prod(hidden.shape[:-1])
    d, vocab = unembedding.shape
    return ce_auto_order(hidden.dtype, tokens, d, vocab, t).kernel


def linear_cross_entropy(
    hidden: Any,
    unembedding: Any,
    labels: Any,
    *,
    implementation: str = "auto",
    chunk_size: int | None = None,
    ignore_index: int = -100,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logits_dtype: Any = None,
    products: HeadProducts | None = None,
    vocab_major: bool = False,
) -> Any:
    """``CE(hidden @ unembedding, labels)`` by the implementation `ce_implementation` picks.

    ``"xla"``: `tjx.kernels.chunked_cross_entropy` (``chunk_size`` applies); ``"pallas"``:
    `tjx.kernels.fused_cross_entropy` (compiled on a CUDA GPU, interpreted elsewhere);
    ``"pallas_rows"``: the chunked one with ``row_kernel=True`` (the same settings apply);
    ``"auto"``: the module docstring's rule. Same arguments and result as both
    (`CrossEntropyOutput`). ``softcap`` (Gemma 2's final-logit cap) and ``logits_dtype`` (the
    dtype a chunk's logits are stored in) are chunked only: the fused kernel keeps its logits
    in registers and shared memory, never in device memory. ``products`` (how the head's
    products multiply, `chunked_cross_entropy`'s) is chunked only too. ``vocab_major``: the
    unembedding is ``[vocab, d_model]`` (a tied table as stored; `chunked_cross_entropy`'s).
    """
    from tjx.kernels.cross_entropy import chunked_cross_entropy

    # the fused kernel and the choice read [d_model, vocab] (a lazy transpose, used if chosen)
    dv = unembedding.T if vocab_major else unembedding
    choice = ce_implementation(implementation, hidden, dv, softcap=softcap, products=products)
    if choice == "pallas":
        from tjx.kernels.fused_ce import fused_cross_entropy  # Pallas only when chosen

        return fused_cross_entropy(hidden, dv, labels, ignore_index=ignore_index, z_loss=z_loss)
    return chunked_cross_entropy(
        hidden,
        unembedding,
        labels,
        chunk_size=chunk_size,
        ignore_index=ignore_index,
        z_loss=z_loss,
        softcap=softcap,
        logits_dtype=logits_dtype,
        products=products,
        vocab_major=vocab_major,
        row_kernel=choice == "pallas_rows",
    )
