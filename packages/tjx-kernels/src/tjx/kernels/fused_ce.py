"""Fused linear cross-entropy: ``CE(hidden @ unembedding, labels)`` without writing the logits.

The same contract as `chunked_cross_entropy` (loss with z-loss, summed CE, scored-token and
top-1 counts, ``ignore_index``; see `CrossEntropyOutput`), computed by three Pallas kernels
(`fused_ce_kernels`): the forward walks the vocabulary per token tile with an online
log-sum-exp; the backward recomputes the logits tile by tile to form ``d(hidden)`` and
``d(unembedding)``. The residuals are the inputs and one float32 log-sum-exp per token.

On a CUDA GPU Triton compiles the kernels; elsewhere they run in Pallas' interpreter (slow: for
tests). Which implementation a model uses is `tjx.kernels.ce_choice`'s rule.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from tjx.kernels.ce_launch import DEFAULT_CE_LAUNCH, CELaunch, padded_dim
from tjx.kernels.cross_entropy import CrossEntropyOutput, check_ce_args
from tjx.kernels.flash import resolve_interpret
from tjx.kernels.fused_ce_kernels import ce_backward, ce_forward

Array = jax.Array
Sums = tuple[Array, Array, Array, Array]


def _pad(h: Array, w: Array, lab: Array, launch: CELaunch) -> tuple[Array, Array, Array]:
    """Pad tokens to ``block_t`` (unscored), ``D`` to the product slices (zeros change no
    logit) and the vocabulary to ``block_v`` (masked in the kernels)."""
    t, d = h.shape
    v = w.shape[1]
    dp = padded_dim(d, launch)
    tp = -(-t // launch.block_t) * launch.block_t
    vp = -(-v // launch.block_v) * launch.block_v
    h = jnp.pad(h, ((0, tp - t), (0, dp - d)))
    w = jnp.pad(w, ((0, dp - d), (0, vp - v)))
    lab = jnp.pad(lab, (0, tp - t), constant_values=-1)
    return h, w, lab


def _sums(lse: Array, top: Array, pick: Array, lab: Array) -> Sums:
    valid = lab >= 0
    ce = jnp.where(valid, lse - pick, 0.0)
    return (
        jnp.sum(ce),
        jnp.sum(jnp.where(valid, lse * lse, 0.0)),
        jnp.sum(valid, dtype=jnp.int32),
        jnp.sum(valid & (top == lab), dtype=jnp.int32),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _fused_sums(
    h: Array, w: Array, lab: Array, vocab: int, launch: CELaunch, interpret: bool
) -> Sums:
    """(Σ CE, Σ lse², scored tokens, top-1 correct) of padded inputs (labels -1: unscored)."""
    lse, top, pick = ce_forward(h, w, lab, vocab, launch, interpret)
    return _sums(lse, top, pick, lab)


def _fused_fwd(
    h: Array, w: Array, lab: Array, vocab: int, launch: CELaunch, interpret: bool
) -> tuple[Sums, tuple[Array, ...]]:
    lse, top, pick = ce_forward(h, w, lab, vocab, launch, interpret)
    return _sums(lse, top, pick, lab), (h, w, lab, lse)


def _fused_bwd(
    vocab: int, launch: CELaunch, interpret: bool, res: tuple[Array, ...], cts: Sums
) -> tuple[Array, Array, None]:
    h, w, lab, lse = res
    g = jnp.stack([cts[0], cts[1]]).astype(jnp.float32)  # d/d(Σ CE), d/d(Σ lse²)
    dh, dw = ce_backward(h, w, lab, lse, g, vocab, launch, interpret)
    return dh, dw, None


_fused_sums.defvjp(_fused_fwd, _fused_bwd)


def fused_cross_entropy(
    hidden: Array,
    unembedding: Array,
    labels: Array,
    *,
    ignore_index: int = -100,
    z_loss: float = 0.0,
    launch: CELaunch | None = None,
    interpret: bool | None = None,
) -> CrossEntropyOutput:
    """Cross-entropy of ``hidden @ unembedding`` against ``labels``; the logits never exist.

    Parameters
    ----------
    hidden : Array
        Final hidden states ``[..., d_model]`` (bf16/fp16/fp32; products accumulate in float32;
        on a GPU fp32 products are TF32, as XLA's).
    unembedding : Array
        ``[d_model, vocab]``.
    labels : Array
        Integer targets of shape ``hidden.shape[:-1]``; ``ignore_index`` marks unscored tokens.
        Other labels must lie in ``[0, vocab)``.
    ignore_index : int
        Label value excluded from the loss and the counts.
    z_loss : float
        Weight of ``mean(logsumexp(logits)**2)`` (PaLM's z-loss), >= 0.
    launch : CELaunch, optional
        Tiles and warps (default `DEFAULT_CE_LAUNCH`).
    interpret : bool, optional
        Run Pallas' interpreter; ``None``: compiled on a CUDA GPU, interpreted elsewhere.

    Returns
    -------
    CrossEntropyOutput
        As `chunked_cross_entropy`'s: ``loss``, ``sum_loss``, ``num_tokens``, ``num_correct``.
    """
    check_ce_args(hidden, unembedding, labels, z_loss)
    base = launch or DEFAULT_CE_LAUNCH
    launch = base.fitted(padded_dim(hidden.shape[-1], base))
    vocab = unembedding.shape[1]
    t = math.prod(labels.shape)
    h = hidden.reshape(t, hidden.shape[-1])
    lab = labels.reshape(t).astype(jnp.int32)
    lab = jnp.where(lab == ignore_index, -1, lab)
    if t == 0:  # nothing to score: no kernel to launch
        zero_f, zero_i = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
        scale = jnp.sum(hidden) * 0.0 + jnp.sum(unembedding) * 0.0  # zero gradients, not none
        return CrossEntropyOutput(zero_f + scale, zero_f + scale, zero_i, zero_i)
    hp, wp, labp = _pad(h, unembedding, lab, launch)
    s_ce, s_z, n_tok, n_ok = _fused_sums(hp, wp, labp, vocab, launch, resolve_interpret(interpret))
    denom = jnp.maximum(n_tok, 1).astype(jnp.float32)
    loss = (s_ce + jnp.float32(z_loss) * s_z) / denom
    return CrossEntropyOutput(loss=loss, sum_loss=s_ce, num_tokens=n_tok, num_correct=n_ok)
