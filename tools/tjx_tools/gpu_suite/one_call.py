"""``run --part all``: everything a GPU still has to measure (#68), in ONE call of ≤ 10 minutes.

The GPU lent to a session comes for about 15 device-minutes, its start included, and one command
may run 10 minutes, so the whole pending list is one prepared call. From the development
machine, with ``tools/gpu_suite prepare`` run once (it builds ``.gpu/``, 11 MiB of the 64 MiB the
device tool carries beside the tree), the device tool's call is::

    run(command="PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false tools/gpu_suite run
        --part all --out $OUT", carry=[".gpu"], timeout_s=600)

then ``tools/gpu_suite fold <files_at>`` here. The cells, most important first; each starts only
while the budget (``--budget-s``, 510 s by default: the call's 600 s less the start and the
copy back) has its usual cost left (`COST`), else it is listed as skipped, never guessed:

``steps``
    gpt2_small's train step as it ships with ``auto`` (a 3-step profile for the calibration
    refit) beside nanoGPT's recipe in PyTorch; llama_small's beside a PyTorch Llama of its
    shape (``tools/tjx_tools/torch_peers/torch_llama.py``: torchtitan's Llama structure,
    ``torch.compile``, SDPA, fused AdamW, bf16 autocast). Same card, same call. Then both
    steps with tokamax's Mosaic GPU attention (``model.attention_impl=tokamax``; GPU only),
    where ``auto`` did not take it already.
``attention_vs_torch``
    attention alone at s 1,024 d 64 and s 4,096 d 128, causal: tjx's kernels against PyTorch's
    SDPA (flash and cuDNN backends), and the HLO of jax's cuDNN attention for the diagnosis
    (`versus_torch`).
``environment``
    (first, it is cheap) the device, driver, jax's CUDA libraries (cuDNN, cuBLAS, runtime:
    `environment.cuda_libraries`) and a measured matmul peak; PyTorch's in ``attention_vs_torch``.
``speculative``
    speculative decoding (one two-token verification pass a step) against greedy decoding,
    tokens/s, on a random and a copying MTP model (`speculative`); a divergence from greedy's
    tokens is diagnosed (the H200's random model parted from them on 2026-11-30).
``kernel_sets``
    gpt2_small's and llama_small's steps with each attention kernel ``auto`` did not take.
``search``
    ``--plan h100 --search``'s winner for llama_small (`SEARCH_CONFIG`, a config file as the
    search writes it) against the preset's step measured in ``steps``; the estimate's ratio
    beside the measured one.
``tokamax_parts``
    tokamax's layer/RMS norm (Pallas Triton) and gated linear unit (Mosaic GPU) against XLA's
    fusion of the same formulas, at gpt2_small's and llama_small's shapes: correct, and worth
    offering as candidates or not (`tokamax_parts`).
``ce_rows``
    the loss head's row kernel (``cross_entropy_impl: pallas_rows``) compiled: correctness
    against float64, then gpt2_small's head timed with it and with XLA's two passes (`ce_rows`;
    ``auto`` does not take it).
``fp8``
    ``model.precision.matmul=fp8`` against bf16: llama_small (its bf16 step is ``steps``') and a
    4-layer Llama-3-8B proxy (`PROXY_8B`: the 8B's layers, 4 × 4,096 tokens), each step's GEMMs
    counted by operand types in the GPU's own compile (float8 kept or not).
``gated_delta``
    the gated delta rule's Pallas kernels compiled: correctness against XLA's scan, then both
    timed (`delta_rule`); the fold turns the times into the launch table's ``gdelta-bf16``
    timings, which ``auto`` needs before it takes the kernels.
(The search, ``tokamax_parts`` and ``ce_rows`` were measured on the H200 on 2026-11-30, ``fp8``
and ``gated_delta`` on 2026-11-28; they come last, after what is still open.)

Every step row is the trainer's own jitted step compiled once (`train_step.measure_row`): its
median step waited for, its pipelined step, tokens/s, MFU, its launches and the calibrated
estimate of that very program (tjx-metrics), the GEMMs by operand types; the fold appends each
to the calibration fixture (``tools/calibration_fixture.py``) and says which fall outside ±10 %.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tjx_tools.gpu_suite import (
    ce_rows,
    delta_rule,
    speculative,
    tokamax_parts,
    train_step,
    versus_torch,
)
from tjx_tools.gpu_suite.report import Report, Section, fmt, md_table

GPT2, LLAMA = "gpt2_small", "llama_small"
#: ``--plan h100 --search``'s winner for llama_small, as the search writes it (the header says
#: where it came from); `SEARCH_ESTIMATE` is what the search estimated for it and the preset.
SEARCH_CONFIG = Path(__file__).resolve().with_name("configs") / "llama_small-h100-search.yaml"
SEARCH_ESTIMATE: dict[str, Any] = {
    "winner_s": 0.0404, "preset_s": 0.0428,
    "source": "BENCHMARKS.md, Searched plans (2026-11-26, deviceless H100)",
}  # fmt: skip
FP8 = ["model.precision.matmul=fp8"]
#: A 4-layer proxy of Llama-3-8B (its layers and vocabulary; 4 × 4,096 tokens): BENCHMARKS.md's
#: deviceless fp8 row "Llama-3-8B layers (4 of 32)" (1.11× estimated).
PROXY_8B = ("llama3_8b", ["model.num_layers=4", "data.seq_len=4096", "data.batch_size=4"])
LLAMA_PEER = Path(__file__).resolve().parents[1] / "torch_peers" / "torch_llama.py"
#: The smoke run's shapes: gpt2_small's step is tiny's (train_step.SMOKE_SETS); the Llamas
#: shrink the same way (one key/value head for the two query heads).
LLAMA_SMOKE = [*train_step.SMOKE_SETS, "model.num_kv_heads=1", "model.vocab_size=512"]
#: What a cell usually costs on an H100 (compile + steps; a peer: torch.compile + steps): a cell
#: starts only with that much of the budget left, so the call ends inside the device tool's limit.
COST = {"step": 30.0, "profiled step": 40.0, "peer": 50.0, "8b step": 50.0, "attention": 80.0,
        "gated delta": 45.0, "speculative": 30.0, "tokamax parts": 40.0,
        "ce rows": 40.0}  # fmt: skip


@dataclasses.dataclass
class Call:
    """One ``--part all`` call: the report (its budget), where files go, the step rows measured
    so far by key (later sections compare with earlier rows)."""

    report: Report
    smoke: bool
    meta: dict[str, Any]
    out: Path
    rows: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def starts(self, sec: Section, what: str, cost: str) -> bool:
        """Whether a cell of ``cost``'s kind still fits the budget; if not, a note says so."""
        if self.smoke or self.report.time_left() >= COST[cost]:
            return True
        sec.notes.append(f"skipped (time budget): {what}")
        return False

    def deadline(self, reserve: float) -> float:
        """A ``perf_counter`` deadline ``reserve`` seconds before the budget's end."""
        return time.perf_counter() + self.report.time_left() - (0.0 if self.smoke else reserve)

    def step(
        self,
        sec: Section,
        key: str,
        label: str,
        config: str | Path,
        sets: list[str],
        *,
        cost: str = "step",
        steps: int | None = None,
        profile: Path | None = None,
    ) -> dict[str, Any] | None:
        """One train-step row (`train_step.measure_row`), kept under ``key``; None if skipped
        or failed (the cell's note says which)."""
        name = config.stem if isinstance(config, Path) else config
        if not self.starts(sec, f"{name} {label}", cost):
            return None
        n = 2 if self.smoke else steps or 20
        with sec.cell(f"{name} {label}"):
            row = train_step.measure_row(label, str(config), sets, n, self.smoke, self.meta,
                                         profile)  # fmt: skip
            # The name in tables; the argument as given, repository-relative where it is a file
            # of the tree (the fold's calibration cases compile it again, elsewhere).
            row["config"], row["config_arg"] = name, config_arg(config)
            self.rows[key] = row
            self.added(sec, row)
            return row
        return None

    def added(self, sec: Section, row: dict[str, Any]) -> None:
        """Keep ``row`` in the section, its table redrawn, the report saved (a call cut off at
        its limit still returns every row measured and a table of them)."""
        sec.rows.append(row)
        sec.markdown = step_markdown(sec.rows, self.smoke)
        if sec.saver is not None:
            sec.saver()

    def peer(self, sec: Section, what: str, script: Path, spec: dict[str, Any]) -> None:
        """A PyTorch peer's row (a child process), or the note of why not."""
        if not train_step.torch_available():
            sec.notes.append(train_step.torch_missing_note(what))
            return
        if not self.starts(sec, what, "peer"):
            return
        with sec.cell(what):
            # Killed at what is left of the budget (a stalled compile must not cost the call).
            limit = 300.0 if self.smoke else min(240.0, max(60.0, self.report.time_left()))
            found = train_step.run_torch(script, spec, limit)[-1]
            self.added(sec, {**found, "label": "peer", "config": what})


def config_arg(config: str | Path) -> str:
    """``--config``'s argument for ``config``: a preset's name, or a file's path relative to the
    repository when it lies in it."""
    if not isinstance(config, Path):
        return config
    root = Path(__file__).resolve().parents[3]
    return str(config.relative_to(root)) if config.is_relative_to(root) else str(config)


def llama_peer_spec(smoke: bool) -> dict[str, Any]:
    """The PyTorch Llama's shape and recipe, read from tjx's own resolved llama_small config."""
    from bench_train import load, vocab_of

    from trainer import resolve

    cfg = load(LLAMA, LLAMA_SMOKE if smoke else [])
    cfg = resolve(cfg, vocab_of(cfg))
    m, opt = cfg.model, cfg.optimizer
    assert opt.schedule is not None, "the Llama peer's preset has a warmup schedule"
    return {
        "batch": cfg.data.batch_size, "seq": cfg.data.seq_len, "vocab": m.vocab_size,
        "d": m.d_model, "layers": m.num_layers, "heads": m.num_heads, "kv_heads": m.num_kv_heads,
        "mlp": m.mlp.dim, "rope_theta": m.position.rope_theta, "norm_eps": m.norm.eps,
        "lr": opt.schedule.peak_lr, "betas": [opt.b1, opt.b2], "weight_decay": opt.weight_decay,
        "clip": opt.clip_norm or 0.0, "warmup": 1 if smoke else 4, "steps": 3 if smoke else 30,
        "compile": not smoke, "device": "cpu" if smoke else "cuda",
    }  # fmt: skip


def shapes(smoke: bool) -> dict[str, tuple[str | Path, list[str]]]:
    """(config, sets) of each step the call measures."""
    gpt2 = ("tiny", list(train_step.SMOKE_SETS)) if smoke else (GPT2, [])
    llama = (LLAMA, list(LLAMA_SMOKE)) if smoke else (LLAMA, [])
    proxy = (PROXY_8B[0], [*LLAMA_SMOKE, "model.num_layers=1"]) if smoke else PROXY_8B
    # A CPU has no cuDNN: the smoke run measures the winner's file with XLA attention.
    winner = (SEARCH_CONFIG, [*LLAMA_SMOKE, "model.attention_impl=xla"] if smoke else [])
    return {"gpt2": gpt2, "llama": llama, "proxy": proxy, "winner": winner}


def run_all(report: Report, smoke: bool, meta: dict[str, Any], out: Path) -> None:
    """The sections of ``--part all``, in order (module doc); the environment is the caller's."""
    call = Call(report, smoke, meta, out)
    shape = shapes(smoke)
    with report.section("steps") as sec:
        run_steps(call, sec, shape)
    with report.section("attention_vs_torch") as sec:
        if call.starts(sec, "attention against PyTorch", "attention"):
            versus_torch.run(sec, smoke, call.deadline(10.0), out)
    # What is still open comes first, so that a call that runs out of budget loses a repeat, not
    # a first measurement: speculative decoding's divergence on the H200 (2026-11-30: diagnosed
    # since), the kernel sets' rows no GPU has timed, then what the H200 calls measured
    # (2026-11-30: the search, tokamax's parts, the loss head's row kernel; 2026-11-28: fp8, the
    # gated delta kernels, whose timings are in the launch table already).
    module_cell(call, "speculative", "speculative decoding vs greedy", "speculative",
                speculative.run, 30.0)  # fmt: skip
    with report.section("kernel_sets") as sec:
        run_kernel_sets(call, sec, shape)
    with report.section("search") as sec:
        run_search(call, sec, shape)
    module_cell(call, "tokamax_parts", "tokamax's norms and gated linear unit", "tokamax parts",
                tokamax_parts.run, 10.0)  # fmt: skip
    module_cell(call, "ce_rows", "the loss head's row kernel", "ce rows", ce_rows.run, 20.0)
    with report.section("fp8") as sec:
        run_fp8(call, sec, shape)
    module_cell(call, "gated_delta", "the gated delta kernels", "gated delta", delta_rule.run, 20.0)


def module_cell(
    call: Call,
    name: str,
    what: str,
    cost: str,
    run: Callable[[Section, bool, float], None],
    reserve: float,
) -> None:
    """Section ``name``: one module's ``run(sec, smoke, deadline)``, started only while the budget
    has ``cost``'s usual time left (else ``what`` is said skipped), its deadline ``reserve``
    seconds before the budget's end."""
    with call.report.section(name) as sec:
        if call.starts(sec, what, cost):
            run(sec, call.smoke, call.deadline(reserve))


def run_steps(call: Call, sec: Section, shape: dict[str, Any]) -> None:
    """gpt2_small ``auto`` (profiled) and nanoGPT; llama_small ``auto`` and the PyTorch Llama."""
    prof = Path(tempfile.mkdtemp(prefix="tjx-gpu-suite-prof-"))
    config, sets = shape["gpt2"]
    if call.step(sec, "gpt2 auto", "auto", config, sets, cost="profiled step", profile=prof):
        train_step.keep_profile(prof, call.out, sec.notes)
    call.peer(sec, "nanoGPT recipe", train_step.PEER, train_step.cases(call.smoke)["peer"])
    config, sets = shape["llama"]
    call.step(sec, "llama auto", "auto", config, sets)
    call.peer(sec, "PyTorch Llama", LLAMA_PEER, llama_peer_spec(call.smoke))
    # tokamax's Mosaic GPU attention (wgmma, TMA; sm90/sm100 only) in the whole step, beside
    # ``auto``'s: the Hopper-native kernel #68 asks about. A CPU cannot run it (smoke: a note).
    # Where ``auto`` took tokamax already (the H200's launch table) its row is that step: not
    # compiled and timed twice (the 2026-11-30 call spent 148 s so, and skipped five cells).
    if call.smoke:
        sec.notes.append("tokamax rows: GPU only (sm90/sm100), not in the smoke run")
    else:
        for name in ("gpt2", "llama"):
            if (call.rows.get(f"{name} auto") or {}).get("attention_kernel") == "tokamax":
                sec.notes.append(f"{name} tokamax: the auto row ran tokamax (not timed twice)")
                continue
            config, sets = shape[name]
            call.step(sec, f"{name} tokamax", "tokamax", config,
                      [*sets, "model.attention_impl=tokamax"])  # fmt: skip
    peers = {r["config"]: r for r in sec.rows if r["label"] == "peer"}
    summary: dict[str, Any] = {}
    for key, peer in (
        ("gpt2 auto", "nanoGPT recipe"),
        ("llama auto", "PyTorch Llama"),
        ("gpt2 tokamax", "nanoGPT recipe"),
        ("llama tokamax", "PyTorch Llama"),
    ):
        mine, theirs = call.rows.get(key), peers.get(peer)
        if mine and theirs:
            summary[f"{key} / {peer}"] = {
                "waited": theirs["median_step_s"] / mine["median_step_s"],
                "pipelined": theirs["pipelined_step_s"] / mine["pipelined_step_s"],
            }
    sec.summary = summary
    sec.markdown = step_markdown(sec.rows, call.smoke, ratios=summary)


def run_fp8(call: Call, sec: Section, shape: dict[str, Any]) -> None:
    """llama_small in fp8 (bf16: the ``steps`` row), then the 8B proxy in bf16 and in fp8."""
    config, sets = shape["llama"]
    call.step(sec, "llama fp8", "fp8", config, [*sets, *FP8])
    config, sets = shape["proxy"]
    n = 10  # the 8B proxy's steps are ~200 ms: fewer of them
    call.step(sec, "8b bf16", "bf16", config, sets, cost="8b step", steps=n)
    call.step(sec, "8b fp8", "fp8", config, [*sets, *FP8], cost="8b step", steps=n)
    pairs = {"llama_small": ("llama auto", "llama fp8"), "Llama-3-8B proxy": ("8b bf16", "8b fp8")}
    summary: dict[str, Any] = {}
    for name, (base, fp8) in pairs.items():
        a, b = call.rows.get(base), call.rows.get(fp8)
        if a and b:
            summary[name] = {
                "bf16_step_s": a["median_step_s"], "fp8_step_s": b["median_step_s"],
                "fp8_speedup": a["median_step_s"] / b["median_step_s"],
                "float8_gemms": float8_gemms(b), "gemms": sum(b["gemm_operands"].values()),
            }  # fmt: skip
    sec.summary = summary
    keys = ("llama auto", "llama fp8", "8b bf16", "8b fp8")
    sec.markdown = step_markdown([call.rows[k] for k in keys if k in call.rows], call.smoke,
                                 fp8=summary)  # fmt: skip


def run_search(call: Call, sec: Section, shape: dict[str, Any]) -> None:
    """The search's winner against the preset (the ``steps`` row of llama_small ``auto``)."""
    config, sets = shape["winner"]
    winner = call.step(sec, "search winner", "search winner", config, sets)
    preset = call.rows.get("llama auto")
    summary: dict[str, Any] = {"config": str(SEARCH_CONFIG.name), "estimate": SEARCH_ESTIMATE}
    if winner and preset:
        summary["measured_winner_over_preset"] = winner["median_step_s"] / preset["median_step_s"]
        summary["estimated_winner_over_preset"] = (
            SEARCH_ESTIMATE["winner_s"] / SEARCH_ESTIMATE["preset_s"]
        )
    sec.summary = summary
    rows = [r for r in (preset, winner) if r]
    sec.markdown = step_markdown(rows, call.smoke, search=summary)


def run_kernel_sets(call: Call, sec: Section, shape: dict[str, Any]) -> None:
    """Each config's step with every attention kernel its ``auto`` row did not take."""
    # Smoke (CPU: auto is XLA): one interpreted Pallas row checks the path.
    kernels = ("pallas",) if call.smoke else ("pallas", "cudnn", "xla")
    for name in ("gpt2",) if call.smoke else ("gpt2", "llama"):
        config, sets = shape[name]
        taken = (call.rows.get(f"{name} auto") or {}).get("attention_kernel")
        for kernel in kernels:
            if (
                kernel == taken
                or f"{name} {kernel}" in call.rows
                or (name == "llama" and kernel == "cudnn" and "search winner" in call.rows)
            ):  # the winner is llama_small with cuDNN
                continue  # fmt: skip
            call.step(sec, f"{name} {kernel}", kernel, config,
                      [*sets, f"model.attention_impl={kernel}"])  # fmt: skip
    sec.markdown = step_markdown(sec.rows, call.smoke)


def float8_gemms(row: dict[str, Any]) -> int:
    """How many of a row's GEMMs (its compiled step's) multiply float8 operands."""
    return sum(n for k, n in (row.get("gemm_operands") or {}).items() if k.startswith("f8"))


def step_markdown(
    rows: list[dict[str, Any]],
    smoke: bool,
    *,
    ratios: dict[str, Any] | None = None,
    fp8: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
) -> str:
    """The step rows (and peers) as one table, with the section's ratios under it."""
    label = ("Smoke run (CPU, tiny shapes): a harness check, not performance. " if smoke else
             "**Measured** in one call on this GPU (median of steps each waited for; pipelined: "
             "dispatched back to back). ")  # fmt: skip
    table = []
    for r in rows:
        if r["label"] == "peer":
            table.append([r["config"] + f" (PyTorch {r.get('torch')})", "peer", "SDPA",
                          r["batch"] * r["seq"], fmt(r.get("compile_s"), ".1f"),
                          fmt(1e3 * r["median_step_s"], ".2f"),
                          fmt(r.get("pipelined_step_s") and 1e3 * r["pipelined_step_s"], ".2f"),
                          f"{r['tokens_per_s']:,.0f}", None, None, None, None, None,
                          fmt(r.get("max_mem_gib"), ".2f")])  # fmt: skip
            continue
        cal = r.get("calibrated_step_s")
        table.append([
            r["config"], r["label"], r.get("attention_kernel"), r["tokens_per_step"],
            r["compile_s"], fmt(1e3 * r["median_step_s"], ".2f"),
            fmt(r.get("pipelined_step_s") and 1e3 * r["pipelined_step_s"], ".2f"),
            f"{r['tokens_per_s']:,.0f}", fmt(r["mfu"] and 100 * r["mfu"], ".1f"),
            r.get("kernels_per_step"),
            f"{float8_gemms(r)} of {sum((r.get('gemm_operands') or {}).values())}",
            fmt(cal and 1e3 * cal, ".2f"), fmt(cal and cal / r["median_step_s"], ".2f"),
            fmt(r.get("peak_bytes") and r["peak_bytes"] / 2**30, ".2f"),
        ])  # fmt: skip
    parts = [label + "Launches, GEMMs and the calibrated estimate are of the step XLA compiled "
             "here (tjx-metrics).",
             md_table(["config", "row", "attention", "tokens/step", "compile s", "step ms",
                       "pipelined ms", "tokens/s", "MFU %", "launches", "float8 GEMMs",
                       "calibrated est. ms", "est. / measured", "peak GiB"], table)]  # fmt: skip
    for name, r in (ratios or {}).items():
        parts.append(
            f"{name}: **{r['waited']:.2f}×** the peer's speed (steps waited for), "
            f"{r['pipelined']:.2f}× pipelined; same shape, same card, same call."
        )
    for name, r in (fp8 or {}).items():
        parts.append(
            f"{name}: fp8 **{r['fp8_speedup']:.2f}×** bf16's speed "
            f"({1e3 * r['bf16_step_s']:.2f} → {1e3 * r['fp8_step_s']:.2f} ms); "
            f"{r['float8_gemms']} of {r['gemms']} GEMMs float8 in this compile."
        )
    if search and "measured_winner_over_preset" in search:
        measured = search["measured_winner_over_preset"]
        estimated = search["estimated_winner_over_preset"]
        parts.append(f"The search's winner ({search['config']}) takes **{measured:.2f}×** the "
                     f"preset's step (measured); the search estimated {estimated:.2f}× "
                     f"({search['estimate']['source']}).")  # fmt: skip
    return "\n\n".join(parts)
