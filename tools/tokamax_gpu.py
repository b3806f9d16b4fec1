"""tokamax's attention on the GPU machine: its wheels, carried, and its measurement beside tjx's.

The GPU suite's hooks for ``attention_impl: tokamax`` (#68), kept out of the suite's own files:

* `download_wheels(dest)` — here, where the registry is reachable: tokamax (tjx-kernels' ``gpu``
  extra, `TOKAMAX_VERSION`) and the packages it needs that the GPU machine (jax 0.11.2, Python
  3.12, flax, optax, orbax; no network) may lack, as wheels for CPython 3.12 on x86-64 Linux,
  into ``dest`` (the suite's ``.gpu/whl``, which ``tools/gpu_suite`` installs with ``pip
  --no-index --no-deps --target`` on that machine): 12 wheels, 3.6 MiB (2026-11-28), well
  inside the device tool's carry.
  ``python tools/tokamax_gpu.py wheels .gpu/whl``.
* `measure_cells(...)` — there: each tjx kernel and tokamax's forward and forward+backward at
  the issue's cells (causal, bf16: sequence 1,024 with head_dim 64, 4,096 with 128), through
  ``bench_attention.measure`` (the suite's attention timer), tokamax with its heuristic tiles,
  as a step runs it (tjx never autotunes it), or with ``autotune=True`` autotuned first
  (``tokamax.autotune``, its public API; the measured cell runs inside the result: it fails on
  jax 0.11.2, where tokamax 0.0.12 reads ``NameLoc.is_a_name``, measured on an H200 on
  2026-11-30); each kernel's output checked against tjx's float32 XLA reference on the same
  inputs. `launch_timings(rows)` turns the rows of kernels found correct into the launch
  table's ``timings`` (what ``auto`` ranks by: ``tjx.kernels.launch.merge_launch_table``).
  ``python tools/tokamax_gpu.py measure --out tokamax.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tjx.kernels import AttentionMask
from tjx.kernels.tokamax_ops import TOKAMAX_VERSION

#: tokamax, the dependencies the project's resolve lacks (tests-support's `tjx_tokamax_env`
#: pins) and the resolve's own versions of those the GPU machine may not have (pydantic and its
#: parts, tqdm): wheels for CPython 3.12.
WHEELS = [
    f"tokamax=={TOKAMAX_VERSION}",
    "einshape==1.0",
    "immutabledict==4.3.1",
    "jaxtyping==0.3.11",
    "qwix==0.1.8",
    "typeguard==2.13.3",
    "wadler-lindig==0.1.8",
    "pydantic==2.14.3",
    "pydantic-core==2.50.4",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "tqdm==4.70.1",
]
#: (sequence, head_dim) cells measured, causal (the issue's: gpt2_small's and a long one).
CELLS = ((1024, 64), (4096, 128))
#: tjx's kernels measured beside tokamax (the launch table's names).
KERNELS = ("tokamax", "pallas", "cudnn", "xla")
#: Largest max|out - reference| / max|reference| a bf16 kernel is found correct at.
TOLERANCE = 2e-2


def download_command(dest: Path, python_version: str = "3.12") -> list[str]:
    """The ``pip download`` command `download_wheels` runs."""
    return [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
        "--python-version", python_version, "--platform", "manylinux2014_x86_64",
        "--implementation", "cp", "--dest", str(dest), *WHEELS,
    ]  # fmt: skip


def download_wheels(dest: Path, python_version: str = "3.12") -> list[Path]:
    """Download `WHEELS` for ``python_version`` into ``dest`` (created); return the wheels."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(download_command(dest, python_version), check=True)
    return sorted(dest.glob("*.whl"))


@contextlib.contextmanager
def _tokamax_tuned(kernel: str, run: Any, args: Sequence[Any], autotune: bool) -> Iterator[None]:
    """Inside: tokamax's tiles autotuned for ``run(*args)`` (every tokamax op it calls: the
    forward's and the backward's, by tokamax's own benchmark), when ``kernel`` is tokamax and
    ``autotune``; otherwise nothing changes."""
    if kernel != "tokamax" or not autotune:
        yield
        return
    from tjx.kernels.tokamax_ops import load

    result = load().autotune(run, *args, progress_bar=False)
    with result:
        yield


def measure_cells(
    cells: Sequence[tuple[int, int]] = CELLS,
    *,
    kernels: Sequence[str] = KERNELS,
    batch: int = 8,
    heads: int = 16,
    iters: int = 20,
    autotune: bool = False,
) -> list[dict[str, Any]]:
    """Each kernel's causal bf16 forward and forward+backward at each (seq, head_dim) cell.

    Returns
    -------
    list of dict
        ``bench_attention.Row`` fields, plus ``max_rel_err`` against tjx's float32 XLA
        reference, ``correct`` and ``autotuned``; a kernel that cannot run here has its
        ``error`` (tokamax off an sm90/sm100 GPU or without the package: tjx's refusal).
    """
    import jax
    import jax.numpy as jnp
    from bench_attention import Row, measure

    from tjx.kernels import AttentionKernel, attention, reference_attention, resolve_attention

    on_gpu = jax.default_backend() == "gpu"
    rows = []
    for seq, head_dim in cells:
        keys = jax.random.split(jax.random.key(seq + head_dim), 3)
        q, k, v = (jax.random.normal(key, (batch, seq, heads, head_dim), jnp.bfloat16)
                   for key in keys)  # fmt: skip
        q32, k32, v32 = (x.astype(jnp.float32) for x in (q, k, v))
        want = reference_attention(q32, k32, v32, AttentionMask(causal=True))
        for kernel in kernels:

            extra: dict[str, Any] = {"autotuned": kernel == "tokamax" and autotune}
            try:
                chosen = resolve_attention(kernel, jnp.bfloat16, head_dim)  # a refusal first

                def run(q: Any, k: Any, v: Any, chosen: AttentionKernel = chosen) -> Any:
                    causal = AttentionMask(causal=True)
                    return attention(q, k, v, causal, implementation=chosen)

                def fwd_bwd(q: Any, k: Any, v: Any, run: Any = run) -> Any:
                    out, vjp = jax.vjp(run, q, k, v)  # the forward's and the backward's ops
                    return vjp(out)

                with _tokamax_tuned(kernel, jax.jit(fwd_bwd), (q, k, v), autotune):
                    got = jax.jit(run)(q, k, v).astype(jnp.float32)
                    err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
                    row = measure(kernel, batch, heads, seq, head_dim, True, jnp.bfloat16,
                                  iters, on_gpu)  # fmt: skip
                extra.update(max_rel_err=err, correct=err <= TOLERANCE)
                extra["correct"] = extra["correct"] and row.error is None
            except Exception as exc:  # a kernel that cannot run here: its line, and go on
                row = Row(impl=kernel, seq=seq, head_dim=head_dim, causal=True, batch=batch,
                          heads=heads, error=_line(exc))  # fmt: skip
                extra.update(max_rel_err=None, correct=False)
            rows.append({**dataclasses.asdict(row), **extra})
    return rows


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def launch_timings(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The launch table's ``timings`` from `measure_cells`' rows: bucket key (``bf16-64``...)
    → kernel → forward+backward ms, for kernels found correct with a time."""
    from tjx.kernels.launch import entry_key

    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("correct") and r.get("fwd_bwd_ms") and not r.get("error"):
            key = entry_key("bfloat16", int(r["head_dim"]))
            out.setdefault(key, {})[str(r["impl"])] = float(r["fwd_bwd_ms"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wheels", help="download tokamax's wheels for the GPU machine")
    w.add_argument("dest", type=Path)
    m = sub.add_parser("measure", help="tokamax beside tjx's kernels (on a GPU)")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument(
        "--autotune", action="store_true", help="tokamax.autotune first (fails on jax 0.11.2)"
    )
    m.add_argument("--iters", type=int, default=20)
    args = p.parse_args(argv)
    if args.command == "wheels":
        found = download_wheels(args.dest)
        size = sum(f.stat().st_size for f in found) / 2**20
        print(f"{len(found)} wheels, {size:.1f} MiB, in {args.dest}")
        return 0
    rows = measure_cells(autotune=args.autotune, iters=args.iters)
    table = {"rows": rows, "timings": launch_timings(rows)}
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    for r in rows:
        said = r["error"] or f"fwd {r['fwd_ms']:.3f} ms, fwd+bwd {r['fwd_bwd_ms']:.3f} ms"
        print(f"s{r['seq']} d{r['head_dim']} {r['impl']}: {said}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
