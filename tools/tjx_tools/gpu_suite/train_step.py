"""The trainer's own jitted step on the device: tokens/s, MFU, kernels per step, nanoGPT beside it.

gpt2_small **as its preset ships** (bf16 compute, unrolled layers, the chunked XLA loss; synthetic
batches of 16 × 1024 tokens), one row per attention setting on the same batch: ``auto`` (what the
launch table's measurements choose; the row names the kernel), ``pallas``, ``cudnn``, ``xla`` by
name, and ``auto`` with the fused loss kernel (``model.cross_entropy_impl=pallas``); then
llama_small's ``auto`` step. Timing is ``tools/bench_train.py``'s (the step users run, median of
timed steps after compilation, each waited for; ``pipelined`` = steps dispatched back to back).

Each row compiles its step **once**: the compiled executable gives the compiled peak
(``memory_analysis()``), the kernels per step and the roofline estimate (tjx-metrics' `roofline`
of ``as_text()``: kernel launches per step, loops counted by their trip counts), then it runs. The
``auto`` row also writes a short profile (``profile_step.tar.gz``: 3 steps, an XProf trace) for
refitting the roofline on the measurement.

``peer``: nanoGPT's recipe on the same card in the same run (the ratio tjx / nanoGPT must come
from one machine at one time): the house's PyTorch GPT-2 port (``apps/experiments/experiments/
nanogpt/peer/torch_gpt.py``: GPT-2 124M, vocab 50,304, tied head, GELU tanh, LayerNorm with bias,
dropout 0) under ``torch.compile``, bf16 autocast, fused AdamW (lr 6e-4, betas 0.9/0.95, weight
decay 0.1 on the 2-D parameters), gradient clipping at 1.0, batch 16 × 1024, the median of 30
steps timed with CUDA events after 4 warm-up steps (``torch_speed.py`` beside the port). It runs
as a child process of the machine's own ``python3``; torch is never imported here. Where torch is
not importable the row is a note.

Memory fit: gpt2_medium's step as its preset stands, gpt2_small at larger batches until one does
not fit (the largest batch), then gpt2_large's (the slowest compile, last), each compiled in a
child process with XLA's
autotuning off (``--xla_gpu_autotune_level=0``: the memory plan does not depend on GEMM tile
choices, and a child that stalls costs its time limit, not the call; the H100's gpt2_medium
compile did not end in 7 minutes with autotuning on, issue #52). The largest batch that fits is
then timed like the rows above, if time is left.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_train import load, throughput

from tjx.metrics.calibration import calibrated_seconds, calibration_for, rows_of
from tjx_tools.gpu_suite.report import Section, fmt, md_table

GIB = 2**30
#: The smoke run's step: the same code path on a model that compiles in seconds on 2 CPU cores.
SMOKE_SETS = [
    "data.batch_size=2",
    "data.seq_len=32",
    "model.max_seq_len=32",
    "model.d_model=32",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.mlp.dim=64",
]
#: The device table entry a smoke run (CPU) estimates against (the figures check the harness).
SMOKE_DEVICE = "v5e"
#: The house's PyTorch GPT-2 and nanoGPT's speed recipe around it (plain files, run by python3).
PEER = (
    Path(__file__).resolve().parents[3] / "apps/experiments/experiments/nanogpt/peer/torch_speed.py"
)
#: XLA flags of the memory-fit children (module doc).
FIT_XLA_FLAGS = "--xla_gpu_autotune_level=0"
PROFILE = "profile_step.tar.gz"
#: How far past the section's deadline a memory-fit child may run before it is killed.
GRACE_S = 45.0
#: The device tool returns files up to this size.
FILE_LIMIT = 16 * 2**20


def cases(smoke: bool) -> dict[str, Any]:
    """What the section measures, in order of importance: throughput rows (label, config, sets),
    the peer's shape, the memory-fit configs and the batches of the largest-batch search."""
    if smoke:
        rows = [
            ("auto", "tiny", []),
            ("pallas", "tiny", ["model.attention_impl=pallas"]),
            ("xla", "tiny", ["model.attention_impl=xla"]),
        ]
        return {
            "rows": [(label, cfg, [*SMOKE_SETS, *sets]) for label, cfg, sets in rows],
            "peer": {"batch": 2, "seq": 32, "vocab": 512, "d": 32, "layers": 2, "heads": 2,
                     "warmup": 1, "steps": 3, "compile": False, "device": "cpu"},
            "fits": [("tiny", "tiny", SMOKE_SETS)],
            "batches": ("tiny", SMOKE_SETS, (4,)),
            "steps": 2,
            # Generous: a loaded 2-core CI machine took 70 s to start tiny's trainer (a check of
            # the harness must not fail on the machine's load).
            "limit_s": 300.0,
        }  # fmt: skip
    rows = [
        ("auto", "gpt2_small", []),
        ("pallas", "gpt2_small", ["model.attention_impl=pallas"]),
        ("cudnn", "gpt2_small", ["model.attention_impl=cudnn"]),
        ("xla", "gpt2_small", ["model.attention_impl=xla"]),
        ("auto + fused loss", "gpt2_small", ["model.cross_entropy_impl=pallas"]),
        ("auto", "llama_small", []),
    ]
    return {
        "rows": rows,
        "peer": {"batch": 16, "seq": 1024, "vocab": 50304, "d": 768, "layers": 12, "heads": 12,
                 "warmup": 4, "steps": 30, "compile": True, "device": "cuda"},
        "fits": [("gpt2_medium", "gpt2_medium", []), ("gpt2_large", "gpt2_large", [])],
        "batches": ("gpt2_small", [], (32, 64, 128)),
        "steps": 20,
        "limit_s": 120.0,
    }  # fmt: skip


def accelerator(smoke: bool) -> Any:
    """tjx-metrics' device table entry the estimates are priced on (None: no entry)."""
    import jax

    from tjx import metrics

    if smoke:
        return metrics.accelerator(SMOKE_DEVICE)
    return metrics.accelerator_of(str(jax.devices()[0].device_kind))


def inspector(smoke: bool) -> Callable[[Any, Any, Any], dict[str, Any]]:
    """``inspect`` for `bench_train.throughput`: what the compiled step says before it runs —
    the kernel ``auto`` resolves to, the compiled peak, kernels per step, the roofline estimate."""

    def inspect(compiled: Any, cfg: Any, setup: Any) -> dict[str, Any]:
        from tjx import kernels, metrics
        from trainer import roofline_inputs

        model = setup.nn_config
        kernel = model.attention_impl
        if kernel == "auto":
            kernel = kernels.auto_order(model.precision.compute_dtype, model.head_dim).kernel
        hlo = compiled.as_text() or ""
        row: dict[str, Any] = {
            "attention_kernel": kernel,
            "peak_bytes": metrics.peak_bytes(compiled)["peak"],
            # What this compile kept of a float8 run's products (#68): GEMMs by operand types.
            "gemm_operands": metrics.gemm_operands(hlo),
        }
        device = accelerator(smoke)
        if device is None or not hlo:
            return {**row, "kernels_per_step": None, "est_step_s": None}
        units = cfg.data.batch_size * cfg.data.seq_len
        args = roofline_inputs(model, cfg.data.seq_len, units, 1, device)
        est = metrics.roofline(hlo, device, custom_call_cost=args["custom_call_cost"])
        kinds = est.by_kind()
        cal = calibration_for(device)  # the calibrated model of this very program, where fitted
        calibrated = calibrated_seconds(rows_of(est.kernels), device, cal) if cal else None
        return {
            **row,
            "kernels_per_step": est.launches,
            "est_step_s": est.seconds,
            "calibrated_step_s": calibrated and calibrated.seconds,
            "est_bytes": est.bytes,
            "launches_by_kind": {k: int(v["count"]) for k, v in kinds.items()},
        }

    return inspect


#: An interpreter that imports torch, for the PyTorch peers (default: this one, the GPU
#: machine's python3, which has PyTorch). The CPU smoke test names a scratch venv's here.
TORCH_PYTHON_ENV = "TJX_TORCH_PYTHON"


def torch_python() -> str:
    """The interpreter the PyTorch peers run in (`TORCH_PYTHON_ENV`, else this one)."""
    return os.environ.get(TORCH_PYTHON_ENV) or sys.executable


def torch_available() -> bool:
    """Whether the peers' interpreter can import torch (found, never imported here: torch is a
    tool's): this interpreter's ``find_spec``, or the file `TORCH_PYTHON_ENV` names."""
    named = os.environ.get(TORCH_PYTHON_ENV)
    if named:
        return Path(named).is_file()
    return importlib.util.find_spec("torch") is not None


def torch_missing_note(what: str) -> str:
    """The note of a peer not run for want of torch."""
    return f"peer: torch is not importable by this python; {what} was not measured"


def run_torch(script: Path, spec: dict[str, Any], limit_s: float) -> list[dict[str, Any]]:
    """A PyTorch script run as a child process of `torch_python` with ``spec`` (JSON) as its
    argument: the JSON objects it printed, one a line (its other output is left out)."""
    env = dict(os.environ)
    if os.environ.get(TORCH_PYTHON_ENV):  # another interpreter: none of this one's paths
        env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [torch_python(), str(script), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=limit_s,
        env=env,
        check=False,
    )
    found = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{script.name} exited {proc.returncode}: " + " | ".join(tail))
    return found


def run_peer(spec: dict[str, Any], limit_s: float) -> dict[str, Any]:
    """nanoGPT's recipe on the house's PyTorch GPT (`PEER`, a child process): its JSON line."""
    return run_torch(PEER, spec, limit_s)[-1]


def measure_row(
    label: str,
    config: str,
    sets: list[str],
    steps: int,
    smoke: bool,
    meta: dict[str, Any],
    profile: Path | None = None,
) -> dict[str, Any]:
    """One throughput row (`bench_train.throughput`: the step compiled once, then timed) with
    what the compiled step says (`inspector`), its ``label`` and ``sets``, the measured /
    estimated ratio and the MFU against the environment's measured matmul peak."""
    row = throughput(config, sets, steps, inspect=inspector(smoke), profile=profile)
    row["label"], row["sets"] = label, list(sets)
    if row.get("est_step_s") and row["median_step_s"]:
        row["measured_over_est"] = row["median_step_s"] / row["est_step_s"]
    table_peak, measured_peak = meta.get("peak_bf16_table"), meta.get("peak_bf16_measured")
    row["mfu_vs_measured"] = (
        row["mfu"] * table_peak / measured_peak
        if row["mfu"] and table_peak and measured_peak
        else None
    )
    return row


def fit_children(
    items: list[tuple[str, str, list[str]]], smoke: bool, limit_s: float, deadline: float
) -> list[dict[str, Any]]:
    """Compile each (label, config, sets) step in a child process (module doc); a child past
    ``limit_s`` (or `GRACE_S` past ``deadline``, a perf_counter time) is killed and its row says
    ``> limit``; none starts after ``deadline``."""
    rows: list[dict[str, Any]] = []
    env = dict(os.environ)
    if not smoke:  # a CPU's XLA does not know the GPU flag
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FIT_XLA_FLAGS}".strip()
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
    for label, config, sets in items:
        if time.perf_counter() > deadline:
            break
        args = [sys.executable, "-m", "tjx_tools.gpu_suite.train_step", "fit", config, *sets]
        if smoke:
            args.append("--smoke")
        t0 = time.perf_counter()
        limit = min(limit_s, max(30.0, deadline - t0 + GRACE_S))  # the call's end comes first
        try:
            proc = subprocess.run(
                args, capture_output=True, text=True, timeout=limit, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            rows.append({"step": label, "error": f"> {limit:.0f} s (killed)", "fits": None})
            continue
        wall = time.perf_counter() - t0
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
            rows.append({"step": label, "error": " | ".join(tail)[:200], "fits": None})
            continue
        rows.append({"step": label, "wall_s": round(wall, 1), **json.loads(lines[-1])})
    return rows


def fit_one(config: str, sets: list[str], smoke: bool) -> dict[str, Any]:
    """The child's work: ``config``'s train step compiled here, its compiled peak against this
    device's memory, compile time and the plan's roofline estimate (`trainer.plan_here`)."""
    from bench_train import vocab_of

    from tjx.metrics import available_bytes
    from trainer import plan_here, resolve

    cfg = load(config, sets)
    t0 = time.perf_counter()
    found = plan_here(resolve(cfg, vocab_of(cfg)), device=SMOKE_DEVICE if smoke else None)
    tried = found["memory"]["tried"][0]  # the step as configured, before any memory fit
    peak = int(tried["peak_bytes"] or 0)
    budget = available_bytes() or 0
    est = found.get("estimate") or {}
    return {
        "config": config,
        "batch": cfg.data.batch_size,
        "peak_bytes": peak,
        "budget_bytes": budget,
        "fits": bool(peak) and peak <= budget,
        "plan_s": round(time.perf_counter() - t0, 1),
        "est_step_s": est.get("seconds"),
        "kernels_per_step": est.get("launches"),
    }


def _tar(folder: Path, dest: Path) -> Path | None:
    if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
        return None
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(folder, arcname="profile")
    return dest


def keep_profile(folder: Path, out: Path, notes: list[str]) -> None:
    """A profile folder tarred to ``out/PROFILE``, if it wrote files and fits the device tool's
    `FILE_LIMIT` (else dropped); what happened is a note."""
    tarred = _tar(folder, out / PROFILE)
    if tarred is not None and tarred.stat().st_size > FILE_LIMIT:
        size = tarred.stat().st_size / 2**20
        tarred.unlink()
        notes.append(f"{PROFILE} was {size:.0f} MiB, over the device tool's 16 MiB: dropped")
    elif tarred is None:
        notes.append("the profile wrote no files")


def run(
    sec: Section, smoke: bool, meta: dict[str, Any], deadline: float, out: Path | None = None
) -> None:
    """The rows, the peer, the memory fits, the largest batch, in that order of importance;
    what would start after ``deadline`` is skipped and said so."""
    from tjx.metrics import available_bytes

    plan = cases(smoke)
    budget = available_bytes() or None  # this device's memory for a step
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"throughput": rows, "largest_batch": None}
    sec.summary = summary

    def save() -> None:  # rows and tables on disk at once: a call cut off keeps them
        sec.rows = rows
        sec.markdown = markdown(summary, budget)
        if sec.saver is not None:
            sec.saver()

    def in_time(what: str) -> bool:
        if time.perf_counter() <= deadline:
            return True
        sec.notes.append(f"skipped (time budget): {what}")
        return False

    def measure(label: str, config: str, sets: list[str], profile: Path | None = None) -> None:
        if not in_time(f"throughput, {config} {label}"):
            return
        with sec.cell(f"throughput, {config} {label}"):
            rows.append(measure_row(label, config, sets, plan["steps"], smoke, meta, profile))
            save()

    (first_label, first_cfg, first_sets), *rest = plan["rows"]
    prof_dir = Path(tempfile.mkdtemp(prefix="tjx-gpu-suite-prof-"))
    measure(first_label, first_cfg, first_sets, profile=prof_dir)
    if out is not None and rows:
        keep_profile(prof_dir, out, sec.notes)
    peer = None
    if not torch_available():
        sec.notes.append(torch_missing_note("nanoGPT's recipe"))
    elif in_time("peer (nanoGPT recipe)"):
        with sec.cell("peer (nanoGPT recipe)"):
            peer = run_peer(plan["peer"], plan["limit_s"] if smoke else 240.0)
            summary["peer"] = peer
            save()
    for label, config, sets in rest:
        measure(label, config, sets)
    if in_time("memory fits"):
        # gpt2_medium, then gpt2_small's batch search (quick compiles), then the rest (gpt2_large:
        # the slowest compile) so that a long one cannot starve the others.
        first, *later = plan["fits"]
        fits = fit_children([first], smoke, plan["limit_s"], deadline)
        summary["fits"] = fits
        save()
        name, sets, batches = plan["batches"]
        items = [(f"{name} batch {b}", name, [*sets, f"data.batch_size={b}"]) for b in batches]
        search: list[dict[str, Any]] = []
        for item in items:  # one child each: stop at the first batch that does not fit
            got = fit_children([item], smoke, plan["limit_s"], deadline)
            search += got
            if not got or not got[0].get("fits"):
                break
        summary["batch_fit"], summary["batch_config"] = search, name
        fitting = [r["batch"] for r in search if r.get("fits")]
        summary["largest_batch"] = max(fitting) if fitting else None
        save()
        fits += fit_children(later, smoke, plan["limit_s"], deadline)
        save()
        best = summary["largest_batch"]
        if best is not None:
            measure(f"auto, batch {best}", name, [*sets, f"data.batch_size={best}"])
    auto = next((r for r in rows if (r["label"], r["config"]) == ("auto", first_cfg)), None)
    if peer and auto:  # the same shape, the same card, the same run
        summary["tjx_over_nanogpt"] = auto["tokens_per_s"] / peer["tokens_per_s"]
        summary["tjx_over_nanogpt_pipelined"] = peer["pipelined_step_s"] / auto["pipelined_step_s"]
    save()


def markdown(summary: dict[str, Any], budget: int | None) -> str:
    """The section's tables: throughput rows and the peer, then the memory fits."""
    rows = summary.get("throughput", [])
    peer = summary.get("peer")
    table = [
        [
            r["config"],
            r["label"],
            r.get("attention_kernel"),
            r["tokens_per_step"],
            r["compile_s"],
            r["median_step_s"],
            r.get("pipelined_step_s"),
            f"{r['tokens_per_s']:,.0f}",
            fmt(r["mfu"] and 100 * r["mfu"], ".1f"),
            fmt(r.get("mfu_vs_measured") and 100 * r["mfu_vs_measured"], ".1f"),
            r.get("kernels_per_step"),
            fmt(r.get("est_step_s"), ".4f"),
            fmt(r.get("measured_over_est"), ".2f"),
            fmt(r.get("peak_bytes") and r["peak_bytes"] / GIB, ".2f"),
        ]
        for r in rows
    ]
    if peer:
        table.append(
            [
                "nanoGPT recipe (PyTorch " + str(peer.get("torch")) + ")",
                "peer",
                "SDPA",
                peer["batch"] * peer["seq"],
                fmt(peer.get("compile_s"), ".1f"),
                round(peer["median_step_s"], 4),
                fmt(peer.get("pipelined_step_s"), ".4f"),
                f"{peer['tokens_per_s']:,.0f}",
                None,
                None,
                None,
                None,
                None,
                fmt(peer.get("max_mem_gib"), ".2f"),
            ]
        )
    parts = [
        md_table(
            [
                "config",
                "row",
                "attention",
                "tokens/step",
                "compile s",
                "step s",
                "pipelined step s",
                "tokens/s",
                "MFU % (datasheet)",
                "MFU % (measured matmul)",
                "kernels/step",
                "est. step s",
                "measured / est.",
                "peak GiB",
            ],
            table,
        )
    ]
    ratio = summary.get("tjx_over_nanogpt")
    if ratio is not None:
        parts.append(
            f"tjx `auto` / nanoGPT recipe, same shape, same card, same run: **{ratio:.2f}×** "
            f"(steps each waited for; {summary['tjx_over_nanogpt_pipelined']:.2f}× pipelined)."
        )
    fits = [*summary.get("fits", []), *summary.get("batch_fit", [])]
    if fits:
        room = f"{budget / GIB:.1f} GiB" if budget else "n/a"
        parts.append(
            "Memory fit (compiled in a child, autotuning off; device memory for the step: "
            f"{room}). "
            f"Largest {summary.get('batch_config')} batch (× seq) whose step fits: "
            f"**{summary.get('largest_batch')}**."
        )
        parts.append(
            md_table(
                ["step", "peak GiB", "fits", "compile + plan s", "est. step s", "kernels/step",
                 "note"],
                [
                    [
                        f["step"],
                        fmt(f.get("peak_bytes") and f["peak_bytes"] / GIB, ".2f"),
                        f.get("fits"),
                        f.get("plan_s"),
                        fmt(f.get("est_step_s"), ".4f"),
                        f.get("kernels_per_step"),
                        f.get("error"),
                    ]
                    for f in fits
                ],
            )  # fmt: skip
        )
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """``python -m tjx_tools.gpu_suite.train_step fit CONFIG [SET ...] [--smoke]``: one memory
    fit (`fit_one`) as a JSON line (the child `fit_children` starts)."""
    args = list(sys.argv[1:] if argv is None else argv)
    smoke = "--smoke" in args
    args = [a for a in args if a != "--smoke"]
    if len(args) < 2 or args[0] != "fit":
        print("usage: python -m tjx_tools.gpu_suite.train_step fit CONFIG [SET ...] [--smoke]")
        return 2
    print(json.dumps(fit_one(args[1], args[2:], smoke), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
