"""``python -m tjx_tools.gpu_suite {run,prepare,fold}`` (see the package docstring)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PARTS = ("all", "kernels", "train", "startup", "full")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="gpu_suite", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure on this machine's GPU (or --smoke on CPU)")
    r.add_argument("--out", type=Path, required=True, help="folder for results.json/.md")
    r.add_argument(
        "--part",
        choices=PARTS,
        default="all",
        help="all (default): everything pending in ONE device call, most important first "
        "(one_call.py: the steps beside their PyTorch peers, attention against PyTorch's SDPA, "
        "fp8, the gated delta kernels, the search's winner, the other kernels, speculative "
        "decoding); kernels: correctness, tuning, attention speed; train: train step rows, the "
        "nanoGPT peer, memory fits and a real run; startup: time to the first step, cold and "
        "warm cache (one device call each); full: kernels, train and startup in turn",
    )
    r.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, interpreted Pallas")
    r.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-clock budget; later cells are skipped, not guessed (default: 510 "
        "on a GPU, none in a smoke run)",
    )
    r.add_argument("--run-steps", type=int, default=None, help="training run steps (GPU: 3000)")
    r.add_argument(
        "--run-seconds",
        type=float,
        default=180.0,
        help="training run time limit (0: no training run)",
    )
    r.add_argument(
        "--startup-limit-s",
        type=float,
        default=None,
        help="startup part: kill a start still short of step 1 after this (default 150 on a GPU)",
    )
    pr = sub.add_parser("prepare", help="build the folder the GPU machine needs (no network)")
    pr.add_argument("--carry", type=Path, default=Path(".gpu"))
    f = sub.add_parser("fold", help="fold run results into BENCHMARKS.md and the launch table")
    f.add_argument("outs", type=Path, nargs="+", help="the --out folders of one GPU session")
    f.add_argument("--benchmarks", type=Path, default=None)
    f.add_argument("--launch-tables", type=Path, default=None)
    f.add_argument(
        "--table",
        type=Path,
        action="append",
        default=[],
        help="a JSON-lines file measured in the same session (e.g. a peer's runs), as a table",
    )
    f.add_argument(
        "--no-fixture",
        action="store_true",
        help="append the measured steps to tools/calibration_measured.json only (no deviceless "
        "compile into tjx-metrics' calibration fixture)",
    )
    f.add_argument("--measured-cases", type=Path, default=None, help=argparse.SUPPRESS)
    f.add_argument("--allow-smoke", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Measure the chosen part; every section is saved as it ends; exit 1 on any failure."""
    import jax

    from tjx_tools.gpu_suite import (
        attention,
        environment,
        kernels,
        one_call,
        startup,
        train_run,
        train_step,
        tune,
    )
    from tjx_tools.gpu_suite.report import Report

    on_gpu = jax.default_backend() == "gpu"
    from tjx.kernels import enable_compilation_cache

    cache = enable_compilation_cache()  # GPU only: later calls skip compiling (and autotuning)
    if not on_gpu and not args.smoke:
        print(
            f"gpu_suite: no GPU here (JAX backend {jax.default_backend()!r}); --smoke runs "
            "the suite's CPU check",
            file=sys.stderr,
        )
        return 2
    budget = args.budget_s if args.budget_s is not None else (510.0 if on_gpu else 1e9)
    report = Report(args.out, smoke=args.smoke, budget_s=budget)
    report.meta = environment.describe()
    report.meta["compilation_cache"] = None if cache is None else str(cache)
    with report.section("environment") as sec:
        environment.run(sec, report.meta, args.smoke)
    if args.part == "all":  # the one prepared call (#68)
        one_call.run_all(report, args.smoke, report.meta, args.out)
    if args.part in ("kernels", "full"):
        with report.section("kernels") as sec:
            kernels.run(sec, args.smoke, time.perf_counter() + 0.25 * report.time_left())
        table = None
        with report.section("tune") as sec:
            share = max(30.0, min(150.0, 0.3 * report.time_left()))
            table = tune.run(sec, args.out, args.smoke, share, report.meta)
        if table is not None:  # the attention section runs with the tuned launches
            os.environ["TJX_FLASH_LAUNCH_TABLES"] = str(table.resolve())
            from tjx.kernels.launch import clear_launch_cache

            clear_launch_cache()
        # Only kernels measured correct here get times in the launch table ("auto" ranks by them).
        correct = kernels.correct_kernels(report.sections["kernels"].rows)
        with report.section("attention") as sec:
            deadline = time.perf_counter() + report.time_left() - 15
            attention.run(sec, args.smoke, deadline, correct)
    if args.part in ("train", "full"):
        # The real run needs its time limit plus about a minute to start (compile) and to save.
        reserve = args.run_seconds + 60 if args.run_seconds > 0 else 0
        if args.part == "full":
            reserve += 0.3 * report.time_left()  # the startup part's share
        with report.section("train_step") as sec:
            deadline = time.perf_counter() + report.time_left() - reserve
            train_step.run(sec, args.smoke, report.meta, deadline, args.out)
        if args.run_seconds > 0:
            with report.section("train_run") as sec:
                steps = args.run_steps or (16 if args.smoke else 3000)
                seconds = min(args.run_seconds, max(60.0, report.time_left() - 60))
                train_run.run(sec, args.out, args.smoke, steps, seconds)
    if args.part in ("startup", "full"):
        with report.section("startup") as sec:
            deadline = time.perf_counter() + report.time_left()
            startup.run(sec, args.out, args.smoke, deadline, args.startup_limit_s)
    print(Path(args.out, "results.md").read_text(encoding="utf-8"))
    if report.failed:
        bad = [n for n, s in report.sections.items() if s.status != "ok"]
        print(f"gpu_suite: FAILED sections: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch the subcommand."""
    args = parse(argv)
    if args.cmd == "run":
        return run(args)
    if args.cmd == "prepare":
        from tjx_tools.gpu_suite.prepare import prepare

        prepare(args.carry)
        return 0
    from tjx_tools.gpu_suite import fold

    fold.fold(
        args.outs,
        benchmarks=args.benchmarks or fold.BENCHMARKS,
        launch_tables=args.launch_tables or fold.LAUNCH_TABLES,
        allow_smoke=args.allow_smoke,
        tables=args.table,
        measured_cases=args.measured_cases or fold.MEASURED_CASES,
        fixture=None if args.no_fixture else fold.FIXTURE,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
