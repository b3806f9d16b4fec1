"""tokamax's other Hopper kernels beside what XLA fuses: the norms and the gated linear unit.

#68 asks whether Hopper-native kernels close what is left of the step. tokamax 0.0.12 ships,
beside its attention, a layer/RMS norm (Pallas Triton, forward and its own backward) and a gated
linear unit (``act(x @ w_gate) * (x @ w_up)`` in one Mosaic GPU kernel: wgmma, TMA; forward
only, its backward is XLA's). tjx offers neither as a candidate: this section measures first
whether they would pay, at the shapes the train step runs them (the presets' own: gpt2_small's
LayerNorm, llama_small's RMSNorm and SwiGLU, over one batch of ``batch × seq`` tokens, bf16):

* correctness: each tokamax output and its gradients (of a random projection of the output,
  with respect to every input) against a float32 XLA reference of the same formula, norm-wise
  relative error ``max|a − e| / max|e|`` within `TOLERANCE` (bf16's);
* speed: forward, and forward + backward, each of XLA's fusion (the formula as tjx-nn writes
  it, jitted) and tokamax's: the median of calls each waited for, and calls dispatched back to
  back (pipelined), after one compile.

The smoke run (CPU) times the XLA side only, at tiny shapes (tokamax's kernels need an sm90/sm100
GPU): a check of the harness. The summary's ``xla_over_tokamax`` is the pipelined fwd+bwd ratio
of each case where both ran and tokamax's was correct (> 1: tokamax faster).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tjx_tools.gpu_suite.report import Section, fmt, md_table

#: Largest norm-wise relative error of a bf16 output or gradient against the float32 reference.
TOLERANCE = 2e-2
#: The smoke run's (tokens, width, hidden width).
SMOKE_SHAPE = (64, 32, 48)


@dataclasses.dataclass(frozen=True)
class Case:
    """One kernel at one preset's shape: ``kind`` is ``layer_norm``, ``rms_norm`` or ``swiglu``;
    ``tokens`` rows of width ``d`` (``hidden``: the GLU's output width)."""

    name: str
    kind: str
    tokens: int
    d: int
    hidden: int = 0
    eps: float = 1e-5


def cases(smoke: bool) -> list[Case]:
    """gpt2_small's LayerNorm, llama_small's RMSNorm and SwiGLU, at their presets' shapes."""
    if smoke:
        n, d, h = SMOKE_SHAPE
        return [
            Case("layer_norm (smoke)", "layer_norm", n, d),
            Case("rms_norm (smoke)", "rms_norm", n, d, eps=1e-6),
            Case("swiglu (smoke)", "swiglu", n, d, h),
        ]
    from bench_train import load

    gpt2, llama = load("gpt2_small", []), load("llama_small", [])
    n_gpt2 = gpt2.data.batch_size * gpt2.data.seq_len
    n_llama = llama.data.batch_size * llama.data.seq_len
    g, m = gpt2.model, llama.model
    return [
        Case("gpt2_small LayerNorm", "layer_norm", n_gpt2, g.d_model, eps=g.norm.eps),
        Case("llama_small RMSNorm", "rms_norm", n_llama, m.d_model, eps=m.norm.eps),
        Case("llama_small SwiGLU", "swiglu", n_llama, m.d_model, m.mlp.dim),
    ]


def inputs(case: Case, key: jax.Array, dtype: Any) -> tuple[jax.Array, ...]:
    """``x`` and the weights of ``case`` in ``dtype``: scale (and offset) near 1 (and 0) for the
    norms, ``[d, 2, hidden]`` fused gate/up weights scaled by ``1/sqrt(d)`` for the GLU."""
    kx, kw, kb = jax.random.split(key, 3)
    x = jax.random.normal(kx, (case.tokens, case.d), jnp.float32)
    if case.kind == "swiglu":
        w = jax.random.normal(kw, (case.d, 2, case.hidden), jnp.float32) / np.sqrt(case.d)
        return x.astype(dtype), w.astype(dtype)
    scale = 1.0 + 0.1 * jax.random.normal(kw, (case.d,), jnp.float32)
    if case.kind == "rms_norm":
        return x.astype(dtype), scale.astype(dtype)
    offset = 0.1 * jax.random.normal(kb, (case.d,), jnp.float32)
    return x.astype(dtype), scale.astype(dtype), offset.astype(dtype)


def xla_fn(case: Case) -> Callable[..., jax.Array]:
    """The formula as tjx-nn writes it (norms in float32, the output cast back), left to XLA."""
    if case.kind == "swiglu":

        def glu(x: jax.Array, w: jax.Array) -> jax.Array:
            gate, up = jnp.einsum("td,dkh->kth", x, w)
            return jax.nn.silu(gate) * up

        return glu

    def norm(x: jax.Array, scale: jax.Array, offset: jax.Array | None = None) -> jax.Array:
        x32 = x.astype(jnp.float32)
        if case.kind == "layer_norm":
            x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + case.eps)
        y = y * scale.astype(jnp.float32)
        if offset is not None:
            y = y + offset.astype(jnp.float32)
        return y.astype(x.dtype)

    return norm


def tokamax_fn(case: Case) -> Callable[..., jax.Array]:
    """tokamax's kernel for ``case`` (GPU only: Triton's norm, the Mosaic GPU GLU)."""
    from tjx.kernels.tokamax_ops import load

    tokamax = load()
    if case.kind == "swiglu":
        return lambda x, w: tokamax.gated_linear_unit(
            x, w, activation=jax.nn.silu, implementation="mosaic"
        )
    subtract = case.kind == "layer_norm"
    return lambda x, scale, offset=None: tokamax.layer_norm(
        x, scale, offset, epsilon=case.eps, subtract_mean=subtract, implementation="triton"
    )


def rel_err(got: Any, want: Any) -> float:
    """``max|got − want| / max|want|`` in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def with_grads(fn: Callable[..., jax.Array], proj: jax.Array) -> Callable[..., Any]:
    """``args -> (fn(*args), the gradients of sum(fn(*args) * proj) by every argument)``."""

    def loss(*args: jax.Array) -> jax.Array:
        return jnp.sum(fn(*args).astype(jnp.float32) * proj)

    def both(*args: jax.Array) -> Any:
        return fn(*args), jax.grad(loss, argnums=tuple(range(len(args))))(*args)

    return both


def check(case: Case, fn: Callable[..., jax.Array], seed: int) -> float:
    """The worst error of ``fn``'s output and gradients (bf16) against the float32 formula."""
    key, kp = jax.random.split(jax.random.key(seed))
    args = inputs(case, key, jnp.bfloat16)
    out_shape = (case.tokens, case.hidden or case.d)
    proj = jax.random.normal(kp, out_shape, jnp.float32)
    got_out, got_grads = jax.jit(with_grads(fn, proj))(*args)
    with jax.default_matmul_precision("highest"):
        want_out, want_grads = jax.jit(with_grads(xla_fn(case), proj))(
            *(a.astype(jnp.float32) for a in args)
        )
    errs = [rel_err(got_out, want_out)]
    errs += [rel_err(a, e) for a, e in zip(got_grads, want_grads, strict=True)]
    return max(errs)


def timed(case: Case, fn: Callable[..., jax.Array], iters: int) -> dict[str, float]:
    """Forward and forward+backward ms of ``fn`` at ``case``'s shape: waited for, pipelined."""
    from bench_attention import median_ms, pipelined_ms

    args = inputs(case, jax.random.key(3), jnp.bfloat16)
    out_shape = (case.tokens, case.hidden or case.d)
    proj = jax.random.normal(jax.random.key(4), out_shape, jnp.float32)
    fwd, both = jax.jit(fn), jax.jit(with_grads(fn, proj))
    return {
        "fwd_ms": median_ms(fwd, args, iters),
        "fwd_bwd_ms": median_ms(both, args, iters),
        "fwd_bwd_pipelined_ms": pipelined_ms(both, args, iters),
    }


def run(sec: Section, smoke: bool, deadline: float) -> None:
    """Each case: tokamax checked (GPU), then XLA and tokamax timed while the budget lasts."""
    seed = int(np.random.default_rng().integers(1 << 30))  # fresh inputs each run
    iters = 2 if smoke else 20
    ratios: dict[str, float] = {}
    if smoke:
        sec.notes.append("tokamax rows: GPU only (sm90/sm100), not in the smoke run")
    for case in cases(smoke):
        if time.perf_counter() > deadline:
            sec.notes.append(f"skipped (time budget): {case.name}")
            continue
        times: dict[str, float] = {}
        for impl in ("xla",) if smoke else ("xla", "tokamax"):
            with sec.cell(f"{case.name} {impl}"):
                fn = xla_fn(case) if impl == "xla" else tokamax_fn(case)
                err = None if impl == "xla" else check(case, fn, seed)
                correct = err is None or err <= TOLERANCE
                row: dict[str, Any] = {"case": case.name, "impl": impl, "tokens": case.tokens,
                                       "d": case.d, "hidden": case.hidden, "max_rel_err": err,
                                       "correct": correct}  # fmt: skip
                if correct:
                    row.update(timed(case, fn, iters))
                    times[impl] = row["fwd_bwd_pipelined_ms"]
                else:
                    sec.fail(f"{case.name}: tokamax's error {err:.2e} (allowed {TOLERANCE:.0e})")
                sec.add_row(row)
        if len(times) == 2:
            ratios[case.name] = times["xla"] / times["tokamax"]
    sec.summary = {"xla_over_tokamax": ratios}
    sec.markdown = markdown(sec.rows, smoke, ratios)


def markdown(rows: list[dict[str, Any]], smoke: bool, ratios: dict[str, float]) -> str:
    """One table of every row, and the ratios under it."""
    head = ("Smoke run (CPU, tiny shapes, XLA only): a harness check, not performance. " if smoke
            else "**Measured** on this GPU, bf16, one preset batch of tokens. ")  # fmt: skip
    head += (
        f"tokamax's outputs and gradients against the float32 formula (allowed "
        f"{TOLERANCE:.0e}); XLA's fusion of the formula as tjx-nn writes it beside them:"
    )
    table = [[r["case"], r["impl"], r["tokens"], r["d"], r["hidden"] or None,
              fmt(r["max_rel_err"], ".1e"), r["correct"], fmt(r.get("fwd_ms"), ".3f"),
              fmt(r.get("fwd_bwd_ms"), ".3f"), fmt(r.get("fwd_bwd_pipelined_ms"), ".3f")]
             for r in rows]  # fmt: skip
    parts = [head, md_table(["case", "kernel", "tokens", "d", "hidden", "max rel err", "correct",
                             "fwd ms", "fwd+bwd ms", "fwd+bwd pipelined ms"], table)]  # fmt: skip
    parts += [f"{name}: XLA takes **{r:.2f}×** tokamax's time (fwd+bwd, pipelined)."
              for name, r in ratios.items()]  # fmt: skip
    return "\n\n".join(parts)
