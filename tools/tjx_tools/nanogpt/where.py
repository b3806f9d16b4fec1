"""Where the tjx train step's time goes on this CPU: matrix products against everything else.

The trainer's own step for a side-by-side shape is compiled, run under ``jax.profiler`` for a few
steps, and each XLA operation the trace records is sorted by the compiled HLO into *matmul* (a
``dot``/``convolution``, alone or inside a fusion such as XLA:CPU's YNNPACK ones) or *other*
(elementwise passes, reductions, transposes, copies, the optimizer). Operations run one after
another on this backend (each spreads over the cores itself), so the two sums add up to about the
step's wall time; the matmul sum is what the step would still take if everything else were free.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from experiments.nanogpt.side_by_side import Shape

_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+\s+(\w[\w\-]*)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def matmul_instructions(hlo_text: str) -> set[str]:
    """Names of the HLO instructions that are, or fuse, a matrix product.

    Parameters
    ----------
    hlo_text : str
        A compiled program's HLO (``compiled.as_text()``).

    Returns
    -------
    set of str
        ``dot``/``convolution`` instructions, and every fusion whose called computation
        contains one.
    """
    computations: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head and "=" not in line.split("{")[0]:
            current = computations.setdefault(head.group(1), [])
            continue
        if current is not None:
            current.append(line)
    products = {"dot", "convolution"}
    has_product = {
        name: any((m := _INSTRUCTION.match(x)) and m.group(2) in products for x in lines)
        for name, lines in computations.items()
    }
    found = set()
    for lines in computations.values():
        for line in lines:
            m = _INSTRUCTION.match(line)
            if not m:
                continue
            called = _CALLS.search(line)
            if m.group(2) in products or (
                m.group(2) == "fusion" and called and has_product.get(called.group(1))
            ):
                found.add(m.group(1))
    return found


def op_times(trace_dir: Path) -> dict[str, float]:
    """Summed microseconds of each named operation in the newest trace under ``trace_dir``."""
    files = sorted(trace_dir.rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    events = json.loads(gzip.decompress(files[-1].read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals: dict[str, float] = {}
    for event in events:
        if event.get("ph") == "X" and "dur" in event:
            totals[event["name"]] = totals.get(event["name"], 0.0) + float(event["dur"])
    return totals


def split_time(
    step: Callable[..., Any], state: Any, batch: Any, hlo_text: str, steps: int
) -> dict[str, float]:
    """Per-step milliseconds: wall (untraced), matmul and other operations (traced)."""
    for _ in range(2):
        state, out = step(state, batch)
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(steps):
        state, out = step(state, batch)
    jax.block_until_ready(out)
    wall = (time.perf_counter() - start) / steps
    ops = set(re.findall(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=", hlo_text, re.M))
    matmuls = matmul_instructions(hlo_text)
    with tempfile.TemporaryDirectory(prefix="tjx-where-") as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(steps):
            state, out = step(state, batch)
        jax.block_until_ready(out)
        jax.profiler.stop_trace()
        totals = op_times(Path(tmp))
    matmul = sum(t for n, t in totals.items() if n in matmuls)
    other = sum(t for n, t in totals.items() if n in ops and n not in matmuls)
    return {
        "wall_ms": 1e3 * wall,
        "matmul_ms": matmul / 1e3 / steps,
        "other_ms": other / 1e3 / steps,
    }


def where_time_goes(shape: Shape, *, steps: int = 5, seed: int = 0) -> dict[str, Any]:
    """The trainer's jitted, donated step for ``shape`` (random weights and tokens), split."""
    from experiments.nanogpt.tjx_worker import trainer_config
    from tjx import data, parallel
    from trainer import build_state, jit_train_step, resolve, step_config

    cfg = trainer_config({"preset": shape.preset, "sets": shape.trainer_sets()})
    cfg = resolve(cfg, shape.vocab)
    setup = build_state(step_config(cfg))
    step = jit_train_step(setup)
    batch = data.random_batch(shape.batch, shape.seq, shape.vocab, seed=seed)
    batch = parallel.shard_batch(batch, setup.mesh)
    hlo = step.lower(setup.state, batch).compile().as_text() or ""
    return {"shape": shape.name, **split_time(step, setup.state, batch, hlo, steps)}
