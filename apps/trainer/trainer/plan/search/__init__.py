"""``python -m trainer --config X --plan TARGET --search``: the fastest config that fits a target.

From a run and a target that is not here (`trainer.plan.target_plan`), the search lists the
candidates (`trainer.plan.search.candidates`: mesh splits over the axes the trainer has, remat
policies, micro-batch × accumulation for the configured batch, attention and loss kernels),
prunes what cannot shard or cannot fit before compiling (one line per reason, counted), plans
the rest as ``--plan`` does, best first within a time budget (`trainer.plan.search.engine`), ranks
them by the estimated step time (calibrated where the device table has a calibration; the
collectives priced at the table's link bandwidth) and writes the winner as a YAML ``--config``
takes. fp8 products (``model.precision.matmul``) are a dimension where the target has float8
units and the model can take them (no MoE, a bf16/fp16 run). An RL config (``data.format:
prompts``) is searched for the most samples per second instead (`trainer.plan.search.rl`: the
rollout batch, its rollout estimated beside the update).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path
from typing import NamedTuple

from tjx import parallel
from tjx.metrics import GIB, Target, quiet_native_stderr
from trainer.config.grpo_settings import is_grpo
from trainer.config.schema import ConfigError
from trainer.config.settings import load_config
from trainer.config.typed import Config
from trainer.plan import target_plan
from trainer.plan.run_plan import error_exit, output_file
from trainer.plan.search import rl
from trainer.plan.search.candidates import Candidate, Space, apply, describe
from trainer.plan.search.engine import Outcome, SearchResult, search

__all__ = ["DEFAULT_BUDGET_MIN", "WORKERS", "record", "search_from_args", "table", "write_winner"]

#: ``--search-budget``'s default, minutes.
DEFAULT_BUDGET_MIN = 10.0
#: Worker processes planning candidates at once (this project's CPU machines: 2 cores, 24 GiB;
#: a deviceless llama_small compile holds ~0.7 GiB).
WORKERS = 2
#: Rows of the table.
TOP = 5


def table(result: SearchResult, top: int = TOP) -> list[str]:
    """The fastest ``top`` candidates that fit, one row each (estimates, labelled so)."""
    head = ("#", "mesh", "remat", "micro-batch", "kernels", "peak/device", "est. step",
            "tokens/s", "MFU")  # fmt: skip
    rows = [head]
    batch = result.space.run.data.batch_size
    for n, (c, o) in enumerate(result.ranked()[:top], 1):
        words = describe(c)
        assert o.seconds is not None and o.peak_bytes is not None
        rows.append((
            str(n), words["mesh"], words["remat"], f"{batch // c.accumulation} × {c.accumulation}",
            words["kernels"], f"{o.peak_bytes / GIB:.2f} GiB", f"{o.seconds * 1e3:.1f} ms",
            f"{o.tokens_per_s or 0:,.0f}", f"{o.mfu or 0:.0%}",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]  # fmt: skip


def write_winner(run: Config, c: Candidate, path: Path, note: str) -> Config:
    """Write ``run`` with candidate ``c``'s settings as a config file ``--config`` takes, check
    that it loads back to the same settings, and return the loaded config.

    Raises
    ------
    ConfigError
        The written file does not load back to the winner (a bug: said, not hidden).
    """
    winner = apply(run, c)
    path.write_text(f"# {note}\n{winner.to_yaml()}")  # config.yaml's one rendering
    loaded = load_config(str(path), [])
    if loaded.to_dict() != winner.to_dict():
        raise ConfigError(f"--search: {path} does not load back to the winner's settings")
    return loaded


def _baseline(result: SearchResult) -> str:
    """The run as configured, in a line beside the winner."""
    base = result.base
    if base is None:
        return "as configured: its mesh does not cover the target's devices"
    o: Outcome | None = result.outcomes.get(base)
    if o is None:
        return "as configured: pruned or not planned within the budget"
    if not o.fits:
        return f"as configured: {(o.error or '')[:160]}"
    assert o.seconds is not None and o.peak_bytes is not None
    return (f"as configured: {o.seconds * 1e3:.1f} ms per step (est.), {o.peak_bytes / GIB:.2f} "
            f"GiB per device, {o.tokens_per_s or 0:,.0f} tokens/s")  # fmt: skip


class Outputs(NamedTuple):
    """Where the search writes its winner (``--search-out``) and its record (``--plan-json``),
    checked before it began (`trainer.plan.run_plan.output_file`)."""

    winner: Path
    record: Path | None


def _minutes(text: str | None) -> float:
    """``--search-budget``'s minutes (the default when not given)."""
    if text is None:
        return DEFAULT_BUDGET_MIN
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--search-budget: expected minutes (a number), got {text!r}") from None


def search_from_args(args: argparse.Namespace) -> int:
    """``--plan TARGET --search``: the exit code (0, or 2 with one error line)."""
    say = functools.partial(print, flush=True)
    try:
        if args.plan is None:
            raise ConfigError("--search: needs --plan TARGET (e.g. --plan 8xh100 --search)")
        budget = _minutes(args.search_budget)
        if not budget > 0:
            raise ConfigError(f"--search-budget: must be more than 0 minutes, got {budget:g}")
        if args.resume or args.init_from:  # its winner is a --config file of the preset's model
            raise ConfigError(
                "--search: searches a fresh run of the config's model; drop --resume / "
                "--init-from (--plan alone plans an --init-from start)"
            )
        # The files it writes at the end, checked before minutes of compiles
        winner, plan_json = (
            output_file(text, flag, example) if text else None
            for text, flag, example in (
                (args.search_out, "--search-out", "search.yaml"),
                (args.plan_json, "--plan-json", "search.json"),
            )
        )
        sets = [*args.overrides, *([] if args.data is None else [f"data.source={args.data}"])]
        with quiet_native_stderr():
            run = target_plan.plan_vocab(load_config(args.config, sets))
            if args.search_samplers is not None and not is_grpo(run.data):
                raise ConfigError(
                    f"--search-samplers: applies to an RL config (data.format: prompts); "
                    f"{run.name!r} trains on data.format={run.data.format!r}, which samples "
                    "nothing; drop --search-samplers"
                )
            # Checked against the target's count before its compiler is opened
            samplers = rl.parse_samplers(
                args.search_samplers, target_plan.target_count(args.plan), args.plan
            )
            target = target_plan.open_target(
                args.plan,
                parallel.abstract_devices,
                compilation_cache=run.train.compilation_cache,
            )
            if winner is None:  # the default: named after the run and the target
                name = f"{run.name}-{args.plan}-search.yaml"
                winner = output_file(name, "--search-out", "search.yaml")
            # An RL step is a rollout and its updates: its own search (search.rl)
            for flag, value in (("--search-rollouts", args.search_rollouts),
                                ("--search-groups", args.search_groups)):  # fmt: skip
                if value is not None and not is_grpo(run.data):
                    raise ConfigError(
                        f"{flag}: applies to an RL config (data.format: prompts); "
                        f"{run.name!r} trains on data.format={run.data.format!r}, whose search "
                        f"has no rollout; drop {flag}"
                    )
            groups = rl.parse_groups(args.search_groups, run) if is_grpo(run.data) else []
            # Each group size's rollout batches (the configured one's alone by default)
            batches = (
                sorted({b for g in groups for b in rl.rollout_batches(
                    args.search_rollouts, rl.with_group(run, g), target)})
                if is_grpo(run.data) else None
            )  # fmt: skip
            space = Space.of(run, target) if batches is None else None
        if batches is not None:
            outputs = Outputs(winner, plan_json)
            return _rl_search(args, run, target, batches, budget, say, outputs, samplers, groups)
        assert space is not None
        say(f"search: {run.name} on {target.describe()}, each candidate compiled without the "
            f"device; budget {budget:g} min, {WORKERS} worker processes")  # fmt: skip
        say(
            f"search: {len(space.meshes)} mesh splits, {len(space.remats)} remat policies, "
            f"{len(space.accumulations)} accumulation steps, attention {'/'.join(space.attentions)}"
            f", loss {'/'.join(space.losses)}, matmul {'/'.join(space.matmuls)}"
        )
        for line in space.pruned.lines():
            say(f"search: {line}")
        if not space.meshes:
            raise ConfigError(
                f"--plan {args.plan} --search: every mesh split was pruned (above); lower "
                "data.batch_size or data.seq_len, or plan more devices"
            )
        with quiet_native_stderr():
            result = search(run, target, args.plan, space, budget_s=budget * 60,
                            workers=WORKERS, say=say)  # fmt: skip
    except (ValueError, ImportError) as err:  # a ConfigError, or a target that cannot be planned
        return error_exit(str(err))
    return _report(args, run, target, result, budget, say, Outputs(winner, plan_json))


def _report(
    args: argparse.Namespace, run: Config, target: Target, result: SearchResult,
    budget: float, say: target_plan.Say, outputs: Outputs,
) -> int:  # fmt: skip
    """The search's table, its end, the winner's file; the exit code."""
    planned = len(result.order)
    if result.ran_out:
        say(f"search: the budget ({budget:g} min) ran out after {result.elapsed:.0f} s and "
            f"{planned} plans ({result.stopped} compiles stopped); the best so far is below "
            "(raise --search-budget to look further)")  # fmt: skip
    else:
        say(f"search: converged after {result.elapsed:.0f} s and {planned} plans: no single "
            "change of the winner is faster")  # fmt: skip
    if result.reused:
        say(f"search: {result.reused} candidates reused an earlier compile (the same program)")
    ranked = result.ranked()
    if not ranked and result.ran_out:
        # The budget ended the search: what was not planned may fit, so the fix is a longer one.
        return error_exit(
            f"--plan {args.plan} --search: no candidate fitted among the {planned} planned before "
            f"the budget ({budget:g} min) ran out ({result.stopped} compiles stopped); raise "
            "--search-budget, or lower data.batch_size or data.seq_len"
        )
    if not ranked:
        return error_exit(
            f"--plan {args.plan} --search: no candidate fits ({planned} planned); lower "
            "data.batch_size or data.seq_len, or plan more devices"
        )
    for line in result.space.pruned.lines():  # the pairs the climb met (meshes: said first)
        if "micro-batch" in line:
            say(f"search: {line}")
    label = ranked[0][1].label or "estimate"
    say(f"search: the fastest that fit ({label}; collectives at the device table's "
        f"{target.device.link_bandwidth / 1e9:.0f} GB/s per link):")  # fmt: skip
    for line in table(result):
        say(f"  {line}")
    say(f"search: {_baseline(result)}")
    winner, outcome = ranked[0]
    path = outputs.winner
    assert outcome.seconds is not None
    note = (f"--plan {args.plan} --search's winner for {run.name}: {outcome.seconds * 1e3:.1f} ms "
            f"per step ({label})")  # fmt: skip
    try:
        write_winner(run, winner, path, note)
    except (OSError, ValueError) as err:
        return error_exit(f"--search-out: {err}")
    say(f"search: wrote {path} (python -m trainer --config {path})")
    if outputs.record is not None:
        try:
            outputs.record.write_text(json.dumps(record(result), indent=1) + "\n")
        except OSError as err:  # checked writable before the search: a full disk, ...
            where = str(outputs.record)
            return error_exit(f"--plan-json: cannot write {where!r} ({err.strerror or err})")
    return 0


def _rl_search(
    args: argparse.Namespace, run: Config, target: Target, batches: list[int], budget: float,
    say: target_plan.Say, outputs: Outputs, samplers: list[int] | None = None,
    groups: list[int] | None = None,
) -> int:  # fmt: skip
    """An RL config's search (`trainer.plan.search.rl`): its lines, table, chosen and runner-up,
    the winner's file; the exit code (raises `ConfigError` for bad input before compiling)."""
    group = run.rollout.group_size
    if not batches:
        step = math.lcm(group, rl.batch_ways(run, target))
        raise ConfigError(
            f"--search: no rollout batch near data.batch_size={run.data.batch_size} splits into "
            f"groups of grpo.group_size={group} over the mesh; give --search-rollouts with "
            f"multiples of {step}"
        )
    say(f"search: {run.name} on {target.describe()}, an RL search for the most samples per "
        "second (completions sampled and trained on) that fit; each rollout batch compiled once "
        f"without the device; budget {budget:g} min")  # fmt: skip
    say(f"search: rollout batches {', '.join(map(str, batches))} (data.batch_size: completions "
        "per rollout), each with remat none, else full where none does not fit (the plan's "
        "memory fit)")  # fmt: skip
    if groups and groups != [group]:
        say(f"search: group sizes {', '.join(map(str, groups))} (grpo.group_size, "
            f"--search-groups): {rl.GROUPS_LINE}")  # fmt: skip
    else:
        say(f"search: group size {group} kept: at a given rollout batch it changes no program "
            "(B completions are B rows whatever the group size), so no estimate; "
            "--search-groups tries others")  # fmt: skip
    say(f"search: {rl.micro_line(run)}")
    link = target.device.link_bandwidth / 1e9
    said = samplers if samplers is not None else rl.default_samplers(target.count)
    say(f"search: sampler/trainer split: overlap 0 (every device samples, then trains) at each "
        f"rollout batch, then at the {rl.SPLIT_BATCHES} best of those overlap 1 with N sampler "
        f"devices, N = {', '.join(map(str, said)) or 'none'} (the trainer's mesh the rest), "
        "each at the largest rollout batch up to that one which the group size and both "
        "sides' devices divide; a split's step is max(the rollout on the sampler's devices, "
        "the update on the trainer's) + the policy's copy at "
        f"{link:.0f} GB/s, each program compiled for the devices it runs on (the sampler's: the "
        "policy replicated, the rows split over the N)")  # fmt: skip
    with quiet_native_stderr():
        found = rl.rl_search(run, target, args.plan, batches, budget_s=budget * 60, say=say,
                             samplers=samplers, groups=groups)  # fmt: skip
    if found.no_split:
        say(f"search: sampler/trainer split: not searched: {found.no_split}")
    batches_planned = sorted({o.batch for o in found.outcomes.values()})
    planned = ", ".join(map(str, batches_planned))
    ranked = found.ranked()
    if found.ran_out:
        say(f"search: the budget ({budget:g} min) ran out after {found.elapsed:.0f} s and "
            f"{len(found.outcomes)} plans of rollout batches and splits (raise --search-budget "
            "to plan the rest)")  # fmt: skip
    if not ranked:
        more = "raise --search-budget, or " if found.ran_out else ""
        return error_exit(
            f"--plan {args.plan} --search: no rollout batch fits ({len(batches_planned)} planned: "
            f"{planned}); {more}lower grpo.max_new_tokens or data.seq_len, or plan more devices"
        )
    chosen = ranked[0]
    label = chosen.rollout.get("label", "estimate")
    say(f"search: the most samples/s that fit ({label}):")
    for line in rl.rl_table(run, found, target.count):
        say(f"  {line}")
    for word, o in (("chosen", chosen), ("runner-up", ranked[1] if len(ranked) > 1 else None)):
        if o is None:
            say(f"search: {word}: none (one rollout batch and split fits)")
            continue
        g = o.group or group
        say(f"search: {word}: rollout batch {o.batch} ({o.batch // g} prompts × {g}), "
            f"{rl.split_words(o.sampler_devices, target.count)}, remat {o.fitted['remat']}, "
            f"{rl.micro_words(o)}: "
            f"{o.samples_per_s:,.0f} samples/s (est.), the rollout "
            f"{o.rollout['rollout_share']:.0%} of the step")  # fmt: skip
    sized, c = rl.winner_config(run, chosen, target.count)
    if sized.eval.batch_size != run.eval.batch_size:  # with_split's: the trainers split it
        say(f"search: eval.batch_size {run.eval.batch_size} → {sized.eval.batch_size} in the "
            f"winner: the held-out completions run on its {target.count - chosen.sampler_devices} "
            "trainer devices, which must split them")  # fmt: skip
    note = (f"--plan {args.plan} --search's winner for {run.name}: {chosen.samples_per_s:,.0f} "
            f"samples/s ({label})")  # fmt: skip
    try:
        write_winner(sized, c, outputs.winner, note)
    except (OSError, ValueError) as err:
        return error_exit(f"--search-out: {err}")
    say(f"search: wrote {outputs.winner} (python -m trainer --config {outputs.winner})")
    if outputs.record is not None:
        try:
            outputs.record.write_text(json.dumps(rl.record(found), indent=1) + "\n")
        except OSError as err:  # checked writable before the search: a full disk, ...
            where = str(outputs.record)
            return error_exit(f"--plan-json: cannot write {where!r} ({err.strerror or err})")
    return 0


def record(result: SearchResult) -> dict[str, object]:
    """The search as JSON-ready data (``--plan-json``): every planned candidate, in order."""

    def row(c: Candidate, o: Outcome) -> dict[str, object]:
        fields = ("error", "peak_bytes", "seconds", "tokens_per_s", "mfu", "label", "wall_s")
        return {**describe(c), "fitted": o.fitted, **{k: getattr(o, k) for k in fields}}

    base = result.base
    return {
        "elapsed_s": result.elapsed,
        "ran_out": result.ran_out,
        "stopped": result.stopped,
        "reused": result.reused,
        "pruned": dict(result.space.pruned.counts),
        "planned": [row(c, result.outcomes[c]) for c in result.order],
        "ranked": [row(c, o) for c, o in result.ranked()],
        "base": row(base, result.outcomes[base]) if base in result.outcomes else None,
    }
