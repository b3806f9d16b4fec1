"""Deviceless plans of the presets, and BENCHMARKS.md's tables from them.

``python tools/plan_table.py run OUT [--targets h100,a100-40gb,h200,v5e] [--presets ...]``
runs ``python -m trainer --config P --plan T --plan-json OUT/P.T.json`` for each pair (and the
seeds' extra cases with ``--seeds``), skipping a JSON already there; ``render OUT`` prints the
Markdown tables. The CUDA plugin or libtpu must be importable (PYTHONPATH): the plans need no
device. Figures: compiled peak memory per device (XLA's, exact) and the roofline's estimated step
time and MFU (labelled estimates).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PRESETS = ("tiny", "bert_tiny", "vit_digits", "gpt2_small", "llama_small", "gpt2_medium",
           "gpt2_large")  # fmt: skip
TARGETS = ("h100", "a100-40gb", "h200", "v5e")
GIB = 2**30

#: The seeds' claims: (name, preset, target, --set overrides).
SEED_CASES: list[tuple[str, str, str, list[str]]] = [
    *[(f"{p}-{k}", p, "h100", [f"model.attention_impl={k}"])
      for p in ("gpt2_small", "llama_small") for k in ("pallas", "xla")],
    *[(f"gpt2_medium-{k}", "gpt2_medium", "a100-40gb", [f"model.attention_impl={k}"])
      for k in ("pallas", "xla")],
    ("gpt2_large-noremat", "gpt2_large", "a100-40gb", ["model.remat=none"]),
    ("gpt2_large-noremat-h200", "gpt2_large", "h200", ["model.remat=none"]),
    ("gpt2_large-remat-h200", "gpt2_large", "h200", []),
    ("gpt2_small-b128", "gpt2_small", "8xa100-40gb", ["data.batch_size=128"]),
    ("gpt2_small-8", "gpt2_small", "8xa100-40gb", []),
    ("gpt2_medium-b64", "gpt2_medium", "8xa100-40gb", ["data.batch_size=64"]),
]  # fmt: skip


def run_one(out: Path, name: str, preset: str, target: str, sets: list[str]) -> dict[str, Any]:
    """One plan (cached as ``OUT/<name>.json`` with its printed lines and exit code)."""
    path = out / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    plan_json = out / f"{name}.plan.json"
    args = ["--config", preset, "--plan", target, "--plan-json", str(plan_json)]
    for s in sets:
        args += ["--set", s]
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        capture_output=True, text=True, check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    record = {
        "name": name, "preset": preset, "target": target, "sets": sets, "rc": proc.returncode,
        "wall_s": time.perf_counter() - started, "stdout": proc.stdout, "stderr": proc.stderr,
        "plan": json.loads(plan_json.read_text()) if plan_json.is_file() else None,
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    path.write_text(json.dumps(record, indent=1))
    print(f"{name}: rc {proc.returncode} in {record['wall_s']:.0f} s", file=sys.stderr)
    return record


def _row(rec: dict[str, Any]) -> list[str]:
    plan = rec["plan"] or {}
    train, est, mem = plan.get("train", {}), plan.get("estimate", {}), plan.get("memory", {})
    if not train.get("compiles"):
        why = (rec["stderr"].strip().splitlines() or ["?"])[-1][:80]
        return [rec["preset"], rec["target"], "no", "–", "–", "–", why, "–", "–"]
    changes = []
    if train.get("remat") != "none":
        changes.append(f"remat {train['remat']}")
    if train.get("accumulation_steps", 1) > 1:
        changes.append(f"{train['accumulation_steps']} micro-batches")
    fits = "fits" if mem.get("fits") else "**does not fit**"
    return [
        rec["preset"],
        rec["target"],
        "yes",
        plan["attention"]["kernel"],
        ", ".join(changes) or "as preset",
        f"{train['peak_bytes'] / GIB:.2f} GiB ({fits})",
        f"{est['seconds'] * 1e3:,.1f} ms",
        f"{est['mfu']:.0%} ({est['mfu_palm']:.0%})",
        f"{est['tokens_per_s']:,.0f}",
    ]


def render(out: Path) -> str:
    """The Markdown table of every plan in ``out``."""
    head = ["preset", "target", "compiles", "attention (auto)", "memory fit", "peak / device",
            "est. step", "est. MFU (PaLM)", "est. tokens/s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in sorted(out.glob("*.json")):
        if path.name.endswith(".plan.json"):
            continue
        lines.append("| " + " | ".join(_row(json.loads(path.read_text()))) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("out", type=Path)
    run.add_argument("--targets", default=",".join(TARGETS))
    run.add_argument("--presets", default=",".join(PRESETS))
    run.add_argument("--seeds", action="store_true", help="also the seeds' extra cases")
    show = sub.add_parser("render")
    show.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "render":
        print(render(args.out))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for target in args.targets.split(","):
        for preset in args.presets.split(","):
            run_one(args.out, f"{preset}.{target}", preset, target, [])
    if args.seeds:
        for name, preset, target, sets in SEED_CASES:
            run_one(args.out, name, preset, target, sets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
