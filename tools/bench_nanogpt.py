"""tjx's train step against nanoGPT's recipe in PyTorch on the same CPU (issue #18's measure).

    python tools/bench_nanogpt.py                       # all shapes, 15 rounds of 2 steps
    python tools/bench_nanogpt.py --shapes tiny --rounds 5 --json out.json
    python tools/bench_nanogpt.py --floor               # also each shape's matmul floor
    python tools/bench_nanogpt.py --floor-only          # the floor alone (no PyTorch needed)
    python tools/bench_nanogpt.py --where               # also tjx's step: matmuls vs the rest

PyTorch goes into a scratch venv (``--venv``, default ``~/.cache/tjx/torch-peer-venv``, the one
the HF peer tests use), never into the project's environment; see the experiments app's
``experiments/nanogpt`` for how the two sides are matched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from experiments.nanogpt.side_by_side import SHAPES, run_shape
from experiments.nanogpt.venv import DEFAULT_VENV, peer_python
from tjx_tools.nanogpt.floor import measure_floor
from tjx_tools.nanogpt.where import where_time_goes


def main(argv: list[str] | None = None) -> int:
    """Run the chosen shapes and print tjx's tokens/s against nanoGPT's."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help="comma-separated: " + ", ".join(SHAPES)
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=2, help="steps per turn")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--floor", action="store_true", help="also time the step's matmuls alone (a lower bound)"
    )
    parser.add_argument("--floor-only", action="store_true", help="only the matmul floor")
    parser.add_argument(
        "--where", action="store_true", help="also profile tjx's step: matmul kernels vs the rest"
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.shapes.split(",") if s not in SHAPES]
    if unknown or args.rounds < 1 or args.steps < 1:
        parser.error(
            f"unknown shapes {unknown}" if unknown else "--rounds and --steps must be >= 1"
        )
    python = None if args.floor_only else peer_python(args.venv)
    rows: list[dict[str, Any]] = []
    for name in args.shapes.split(","):
        row: dict[str, Any] = {"shape": name}
        if python is not None:
            row = run_shape(SHAPES[name], python, args.rounds, args.steps)
            tps, diff = row["tokens_per_s"], row["first_loss_rel_diff"]
            print(
                f"{name:>10}: tjx {tps['tjx']:,.0f} tok/s, nanoGPT {tps['nanogpt']:,.0f} tok/s, "
                f"tjx/nanoGPT {row['ratio']:.2f} (first losses differ by {diff:.1e})",
                flush=True,
            )
        if args.floor or args.floor_only:
            row["floor"] = floor = measure_floor(SHAPES[name])
            print(_floor_line(name, floor, row.get("median_step_s")), flush=True)
        if args.where:
            row["where"] = split = where_time_goes(SHAPES[name])
            print(
                f"{name:>10}: tjx step {split['wall_ms']:.1f} ms; in the trace, matmul kernels "
                f"{split['matmul_ms']:.1f} ms, everything else {split['other_ms']:.1f} ms",
                flush=True,
            )
        rows.append(row)
    if args.json:
        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds}
        args.json.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    return 0


def _floor_line(name: str, floor: dict[str, Any], steps: Any) -> str:
    """The floor, and against nanoGPT's step when it was measured: what 1.25x would allow."""
    ms = 1e3 * floor["floor_s"]
    rate = floor["flops"] / floor["floor_s"] / 1e9
    gflop = floor["flops"] / 1e9
    line = f"{name:>10}: matmuls alone {ms:.1f} ms ({gflop:.2f} GFLOP, {rate:.0f} GFLOP/s)"
    if isinstance(steps, dict):
        allowed = 1e3 * steps["nanogpt"] / 1.25
        line += (
            f"; 1.25x nanoGPT allows {allowed:.1f} ms per step, tjx takes "
            f"{1e3 * steps['tjx']:.1f} ms"
        )
    return line


if __name__ == "__main__":
    sys.exit(main())
