"""``python -m eval --checkpoint RUN --tasks ...``: lm-evaluation-harness on a run's decoder.

lm-eval is optional for the evaluator: it is imported only here (and in ``harness_model``), and
without it ``--tasks`` says what to install. Everything is checked before anything is written:
the flags, the task names (with the harness's own matcher, ``--include-path`` folders included)
and the run (a causal decoder).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from eval.hf_checkpoint import load_checkpoint
from eval.runs import RunError
from tjx.core import standard_json
from tjx.core.lazy import lazy_imports

# lm-evaluation-harness (an optional dependency: its absence is `_task_manager`'s one line) and
# JAX load on first use: the command line checks its flags first.
with lazy_imports(globals()):
    import lm_eval
    import lm_eval.tasks
    import lm_eval.utils

    from eval import harness_model

#: The one-line fix when lm-eval is missing (apps/eval's requirements pin the same range).
INSTALL = "pip install 'lm-eval>=0.4.13,<0.5'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The harness flags of the evaluator's parser."""
    parser.add_argument(
        "--tasks",
        default=None,
        metavar="T1,T2",
        help="run lm-evaluation-harness tasks (e.g. hellaswag,lambada_openai) on the run's decoder",
    )
    parser.add_argument("--num-fewshot", type=int, default=None, metavar="K")
    parser.add_argument(
        "--limit", type=float, default=None, metavar="N", help="documents per task (< 1: a share)"
    )
    parser.add_argument(
        "--include-path", default=None, metavar="DIR", help="a folder of your own task YAMLs"
    )


def check_arguments(args: argparse.Namespace) -> list[str]:
    """The task names of ``--tasks``; `RunError` (one line) for a bad harness flag."""
    if args.tasks is None:
        for flag in ("num_fewshot", "limit", "include_path"):
            if getattr(args, flag) is not None:
                name = "--" + flag.replace("_", "-")
                raise RunError(f"{name}: applies to --tasks; name the harness tasks to run")
        return []
    if args.compare:
        raise RunError("--tasks: runs on one --checkpoint, not on --compare")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise RunError(f"--num-fewshot: must be >= 0, got {args.num_fewshot}")
    if args.limit is not None and not args.limit > 0:
        raise RunError(f"--limit: must be > 0 (a count, or a share below 1), got {args.limit:g}")
    if args.include_path is not None and not Path(args.include_path).is_dir():
        raise RunError(f"--include-path: no such folder {args.include_path!r}")
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise RunError("--tasks: give task names, e.g. --tasks hellaswag,lambada_openai")
    return names


def _task_manager(args: argparse.Namespace, names: list[str]) -> Any:
    """The harness's task manager, after checking every name against it."""
    try:
        lm_eval.tasks.TaskManager  # noqa: B018  (present: the manager below can be built)
    except ImportError:
        raise RunError(f"--tasks: needs lm-evaluation-harness; {INSTALL}") from None
    manager = _indexed(args.include_path, _yaml_stamp(args.include_path))
    missing = [name for name in names if not manager.match_tasks([name])]
    if missing:
        # The harness's own message (lm_eval.config.evaluate_config), and where names come from.
        raise RunError(
            f"--tasks: Tasks not found: {', '.join(missing)} (list them with `lm-eval ls tasks`; "
            "your own task YAMLs go in --include-path DIR)"
        )
    return manager


def _yaml_stamp(folder: str | None) -> tuple[tuple[str, int], ...]:
    """The task YAMLs under ``folder`` with their modification times: a folder edited since the
    last call indexes again."""
    if folder is None:
        return ()
    files = sorted(Path(folder).rglob("*.yaml"))
    return tuple((str(f), f.stat().st_mtime_ns) for f in files)


@functools.cache
def _indexed(include_path: str | None, stamp: tuple[tuple[str, int], ...]) -> Any:
    """The harness's task manager for ``include_path`` (``stamp``: its YAMLs, see `_yaml_stamp`).

    Building one indexes every task YAML the harness ships (11-14 s on one core, measured
    2026-11-27 with lm-eval 0.4.13); the index is read-only afterwards (task files are read when a
    task is loaded), so one process (the tests, a notebook) builds it once per folder.
    """
    return lm_eval.tasks.TaskManager(include_path=include_path)


def load_tasks(manager: Any, names: list[str]) -> list[Any]:
    """The harness's tasks of ``names`` built with their data (a group whole, a tag as its
    tasks), for ``simple_evaluate``, which takes them as built.

    A task builds by reading its data: the Hugging Face hub's dataset, or the files its YAML
    names. Data that cannot be read (the hub out of reach, offline mode with nothing cached, a
    missing file) is `RunError`'s one line naming the task, before the model is built, instead of
    the harness's traceback.
    """
    built: list[Any] = []
    for name in names:
        try:
            loaded = manager.load([name])
        except OSError as err:  # datasets: ConnectionError (the hub), FileNotFoundError (a file)
            raise RunError(
                f"--tasks: {name}: its data could not be read ({type(err).__name__}: {err}); a "
                "hub dataset needs the network once (datasets keeps a copy for offline runs, "
                "HF_DATASETS_OFFLINE=1), a task YAML's data_files must exist"
            ) from None
        groups = loaded["groups"]
        built.extend([groups[name]] if name in groups else loaded["tasks"].values())
    return built


def results_path(run: Any) -> Path:
    """Where the JSON goes: the run directory, next to its other evaluation output."""
    return Path(run.run_dir) / f"lm_eval_step{run.step}.json"


def run_tasks(args: argparse.Namespace, names: list[str]) -> Path:
    """Run the tasks on ``args.checkpoint``; print the harness's table; write and return the JSON.

    Parameters
    ----------
    args : argparse.Namespace
        The evaluator's arguments (``checkpoint``, ``step``, ``batch_size``, ``seed`` and the
        harness flags).
    names : list of str
        Checked task names (``check_arguments``).

    Returns
    -------
    Path
        The JSON written (the harness's results, without per-sample logs).
    """
    manager = _task_manager(args, names)
    run = load_checkpoint(Path(args.checkpoint), args.step)
    harness_model.check_decoder(run)
    tasks = load_tasks(manager, names)
    model = harness_model.TjxLM(run=run, batch_size=args.batch_size, seed=args.seed)
    print(f"run {run.run_dir} at step {run.step}: lm-evaluation-harness {', '.join(names)}")
    results = lm_eval.simple_evaluate(
        model=model,
        tasks=tasks,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        task_manager=manager,
        log_samples=False,
        random_seed=args.seed,
        numpy_random_seed=args.seed,
        fewshot_random_seed=args.seed,
    )
    print(lm_eval.utils.make_table(results))
    if results.get("groups"):
        print(lm_eval.utils.make_table(results, "groups"))
    results["tjx"] = {"run_dir": str(run.run_dir), "step": run.step, "compiles": model.compiles}
    path = results_path(run)
    # lm-eval reports an undefined stderr (one sample) as NaN: standard JSON names it instead
    unknown = lm_eval.utils.handle_non_serializable
    text = standard_json.dumps_json(results, indent=2, default=unknown)
    path.write_text(text + "\n")
    print(f"scoring compiled {model.compiles} time(s) (length buckets); results → {path}")
    return path
