"""Deviceless plans of the presets, and BENCHMARKS.md's tables from them.

``python tools/plan_table.py run OUT [--targets h100,a100-40gb,h200,v5e] [--presets ...]``
runs ``python -m trainer --config P --plan T --plan-json OUT/P.T.json`` for each pair (and
``EXTRA_CASES`` on those devices with ``--extra``: the seeds' claims), skipping a JSON already
there; ``render OUT`` prints the
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

#: The seeds' claims and other cases beyond the presets: (name, preset, target, --set overrides).
EXTRA_CASES: list[tuple[str, str, str, list[str]]] = [
    *[(f"{p}-{k}", p, "h100", [f"model.attention_impl={k}"])
      for p in ("gpt2_small", "llama_small") for k in ("pallas", "xla")],
    *[(f"gpt2_medium-{k}", "gpt2_medium", "a100-40gb", [f"model.attention_impl={k}"])
      for k in ("pallas", "xla")],
    ("gpt2_large-noremat", "gpt2_large", "a100-40gb", ["model.remat=none"]),
    ("gpt2_large-noremat-h200", "gpt2_large", "h200", ["model.remat=none"]),
    ("gpt2_small-b128", "gpt2_small", "8xa100-40gb", ["data.batch_size=128"]),
    ("gpt2_small-8", "gpt2_small", "8xa100-40gb", []),
    ("gpt2_medium-b64", "gpt2_medium", "8xa100-40gb", ["data.batch_size=64"]),
    ("gpt2_large-fsdp4", "gpt2_large", "4xv5e",
     ["mesh.strategy=fsdp", "mesh.data=1", "mesh.fsdp=-1"]),
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


def _fit(train: dict[str, Any], mem: dict[str, Any]) -> str:
    changes = []
    if train.get("remat") not in (None, "none"):
        changes.append(f"remat {train['remat']}")
    if train.get("accumulation_steps", 1) > 1:
        changes.append(f"{train['accumulation_steps']} micro-batches")
    first = mem.get("tried", [{}])[0]
    if len(mem.get("tried", [])) > 1:  # the memory fit changed the step: what it started from
        peak = first.get("peak_bytes")
        was = f"{peak / GIB:.2f} GiB" if peak else "refused by the compiler"
        changes.append(f"as set: {was}")
    return ", ".join(changes) or "–"


def _row(rec: dict[str, Any]) -> list[str]:
    plan = rec["plan"] or {}
    train, est, mem = plan.get("train", {}), plan.get("estimate", {}), plan.get("memory", {})
    sets = " ".join(f"`{x}`" for x in rec["sets"]) or "preset"
    if not train.get("compiles"):
        tried = mem.get("tried") or []
        if tried and all((t.get("error") or "").startswith("RESOURCE_EXHAUSTED") for t in tried):
            changes = ", ".join(t["change"] for t in tried[1:])
            return [rec["preset"], rec["target"], sets, "refused: too big", "–",
                    f"none fits (tried {changes})", "**does not fit**", "–", "–", "–"]  # fmt: skip
        why = (rec["stderr"].strip().splitlines() or ["?"])[-1][:80]
        return [rec["preset"], rec["target"], sets, "no", "–", "–", why, "–", "–", "–"]
    fits = "fits" if mem.get("fits") else "**does not fit**"
    return [
        rec["preset"],
        rec["target"],
        sets,
        "yes",
        plan["attention"]["kernel"],
        _fit(train, mem),
        f"{train['peak_bytes'] / GIB:.2f} GiB ({fits})",
        f"{est['seconds'] * 1e3:,.1f} ms",
        f"{est['mfu']:.0%} ({est['mfu_palm']:.0%})",
        f"{est['tokens_per_s']:,.0f}",
    ]


def render(out: Path) -> str:
    """The Markdown table of every plan in ``out``, presets first, then the extra cases."""
    head = ["preset", "target", "settings", "compiles", "attention", "memory fit",
            "peak / device", "est. step", "est. MFU (PaLM)", "est. tokens/s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    records = [
        json.loads(p.read_text()) for p in sorted(out.glob("*.json"))
        if not p.name.endswith(".plan.json")
    ]  # fmt: skip
    order = {t: i for i, t in enumerate(TARGETS)}
    records.sort(key=lambda r: (bool(r["sets"]) or r["target"] not in order,
                                PRESETS.index(r["preset"]), order.get(r["target"], 99),
                                r["name"]))  # fmt: skip
    lines += ["| " + " | ".join(_row(r)) + " |" for r in records]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("out", type=Path)
    run.add_argument("--targets", default=",".join(TARGETS))
    run.add_argument("--presets", default=",".join(PRESETS))
    run.add_argument(
        "--extra", action="store_true", help="also EXTRA_CASES on the --targets' devices"
    )
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
    if args.extra:
        devices = set(args.targets.split(","))
        for name, preset, target, sets in EXTRA_CASES:
            if target.split("x")[-1] in devices:  # "8xa100-40gb" runs with --targets a100-40gb
                run_one(args.out, name, preset, target, sets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
