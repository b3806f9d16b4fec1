"""Each model family's first losses and validation loss, to prove a refactor changed no number.

``python tools/loss_fingerprint.py --out before.json`` trains every case below for a few steps
(``python -m trainer``, shrunk by ``--set`` so that all five take minutes on a CPU) and saves each
logged training loss exactly; run it again on the changed code with ``--out after.json``, then
``--compare before.json after.json`` says, case by case, whether the losses are bit-identical
(exit 1 if any differs; ``--rtol R`` accepts a relative difference up to R, for a change that
rounds differently on purpose). The shrinking settings are the same on both sides, so what is
compared is the code path from the preset to the step: the config, the package configs, the
state, the optimizer and the step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = 6
_SMALL = [
    "model.d_model=32",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.mlp_dim=64",
    "model.max_seq_len=32",
    "data.seq_len=32",
    "data.batch_size=8",
    "eval.batch_size=8",
]
_QUIET = [
    f"train.steps={STEPS}",
    "train.log_every=1",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.checkpoint_every=0",
    "train.fit_memory=false",
    "optimizer.schedule.warmup_steps=2",
    "sampling.max_new_tokens=2",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]
#: name → (preset, its own settings); each family's distinctive settings stay as the preset has
#: them (LLaMA's grouped-query attention, bf16 compute and scanned layers; ViT's patches).
CASES: dict[str, tuple[str, list[str]]] = {
    "tiny": ("tiny", _SMALL),
    "llama_small": ("llama_small", [*_SMALL, "model.num_kv_heads=2", "model.vocab_size=null"]),
    "bert_tiny": ("bert_tiny", _SMALL),
    "vit_digits": ("vit_digits", ["data.batch_size=16", "eval.batch_size=16"]),
    "encdec": ("tiny", [*_SMALL, "model.kind=encdec", "model.position=sinusoidal"]),
}


def losses(preset: str, sets: list[str], root: Path) -> list[str]:
    """The logged training losses of one short run and its final validation loss, as exact
    texts (``repr`` of the float; the validation loss prefixed ``val``)."""
    argv = [sys.executable, "-m", "trainer", "--config", preset, "--run-dir", str(root / "run")]
    for item in [*sets, *_QUIET, f"data.cache_dir={root / 'cache'}"]:
        argv += ["--set", item]
    done = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise SystemExit(f"{preset}: the run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    from tjx.metrics import read_jsonl  # NaN losses come back as nan (logged as null + name)

    found = []
    for row in read_jsonl(root / "run" / "metrics.jsonl"):
        found += [repr(row["loss"])] if "loss" in row else []
        found += [f"val {row['val_loss']!r}"] if "val_loss" in row else []
    return found


def record(out: Path) -> None:
    """Train every case and write ``{case: [loss, ...]}`` to ``out``."""
    found = {}
    for name, (preset, sets) in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            found[name] = losses(preset, sets, Path(tmp))
        print(f"{name}: {', '.join(found[name])}", flush=True)
    out.write_text(json.dumps(found, indent=1) + "\n")


def _relative(old: list[str], new: list[str]) -> float:
    """Largest relative difference between two cases' losses (inf if they do not pair up)."""
    if len(old) != len(new) or not old:
        return float("inf")
    values = [(float(a.split()[-1]), float(b.split()[-1])) for a, b in zip(old, new, strict=True)]
    return max(abs(b - a) / max(abs(a), 1e-30) for a, b in values)


def compare(before: Path, after: Path, rtol: float = 0.0) -> int:
    """0 if every case's losses are identical in both files (or, with ``rtol``, agree within it
    relatively: for a change that rounds differently on purpose), else 1 (each case said)."""
    old, new = json.loads(before.read_text()), json.loads(after.read_text())
    differ = 0
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, []), new.get(name, [])
        if a == b and a:
            print(f"{name}: bit-identical ({len(b)} losses)")
            continue
        rel = _relative(a, b)
        ok = rel <= rtol
        differ += not ok
        verdict = f"within rtol {rtol:g}" if ok else "DIFFERENT"
        print(f"{name}: {verdict} (largest relative difference {rel:.3g}; {len(b)} losses)")
    return int(differ > 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="record the losses of this code here")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument(
        "--rtol",
        type=float,
        default=0.0,
        help="--compare: accept losses within this relative difference (default: bitwise)",
    )
    args = parser.parse_args(argv)
    if args.compare:
        before, after = args.compare
        return compare(before, after, rtol=args.rtol)
    if args.out is None:
        parser.error("give --out FILE or --compare BEFORE AFTER")
    record(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
