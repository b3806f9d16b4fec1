"""``python -m experiments STUDY [--scale smoke|cpu|gpu] [--seeds N] [--out DIR]
[--runs-dir DIR] [--fresh]``."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from experiments.registry import STUDIES
from experiments.spec import SCALES, Row, RunSpec, Study

#: The kinds of study whose configs run once per seed (``--seeds`` applies).
SEEDED = ("train", "grpo")


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="experiments",
        description="Run a named study of tjx and write its report (README, plots, raw JSONL).",
        epilog="studies: " + ", ".join(STUDIES),
    )
    parser.add_argument("study", choices=[*STUDIES, "list"], help="a study name, or 'list'")
    parser.add_argument(
        "--scale",
        choices=SCALES,
        default="cpu",
        help="smoke: two configs, one seed, a few steps; cpu: 3 seeds, sized for <= 20 min on "
        "2 cores; gpu: a lent GPU",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="run each config with seeds 0..N-1 instead of the scale's (training studies only)",
    )
    parser.add_argument(
        "--out", default="docs/experiments", help="reports go to OUT/<study>/ (default %(default)s)"
    )
    parser.add_argument(
        "--runs-dir",
        default="runs/experiments",
        help="run directories (a rerun skips finished configs and resumes half-finished ones)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete this study's run directories at this scale first and measure every config "
        "again (otherwise finished configs are skipped)",
    )
    return parser


def execute(
    study: Study, scale: str, runs_dir: Path, seeds: tuple[int, ...] | None = None
) -> list[tuple[RunSpec, Path, Row]]:
    """Run every config of ``study`` (in this process) and return (spec, run dir, row)."""
    if study.kind == "memory":
        from experiments.memory import run_memory

        return run_memory(study, scale, runs_dir)
    if study.kind == "nanogpt":
        from experiments.side import run_side

        return run_side(study, scale, runs_dir)
    if study.kind == "grpo":
        from experiments.studies_grpo import run_grpo

        return run_grpo(study, scale, runs_dir, seeds)
    from experiments.runner import run_study

    return run_study(study, scale, runs_dir, seeds)


def main(argv: list[str] | None = None) -> int:
    """Run the study, write the report; 1 if the study's own check failed, 2 on bad input."""
    args = build_parser().parse_args(argv)
    if args.study == "list":
        for name, study in STUDIES.items():
            print(f"{name:16} {study.question}")
        return 0
    from experiments.report import write_report
    from experiments.runner import StudyError

    study = STUDIES[args.study]
    seeds = None if args.seeds is None else tuple(range(args.seeds))
    if seeds is not None and (not seeds or study.kind not in SEEDED):
        print(
            f"experiments: error: --seeds {args.seeds}: "
            + ("give at least 1" if not seeds else f"the {study.kind} study sets its own seeds")
            + "; leave --seeds out for the scale's default",
            file=sys.stderr,
        )
        return 2
    if args.fresh:
        shutil.rmtree(Path(args.runs_dir) / study.name / args.scale, ignore_errors=True)
    try:
        runs = execute(study, args.scale, Path(args.runs_dir), seeds)
    except StudyError as err:
        print(f"experiments: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) / study.name
    path = write_report(study, args.scale, runs, out)
    print(f"report: {path}")
    if study.kind == "nanogpt":
        from experiments.side import noise_check

        diff, noise, ok = noise_check([row for _, _, row in runs])
        if not ok:
            print(
                f"experiments: error: tjx's final validation loss is worse than nanoGPT's by "
                f"{diff:.4f} nats, more than 2 × the noise ({noise:.4f}); see {path}",
                file=sys.stderr,
            )
            return 1
    return 0
