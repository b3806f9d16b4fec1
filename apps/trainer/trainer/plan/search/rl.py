"""``--plan TARGET --search`` of an RL config (``data.format: prompts``): most samples per second.

An RL step is a rollout and the μ updates that use it (`trainer.plan.rollout_plan`), so the search
ranks by completions sampled and trained on per second, not by the update's time alone. Its
dimensions, and what each costs in compiles:

* the **rollout batch** (``data.batch_size``: completions per rollout, ``prompts × G``): every
  program's shape depends on it, so each is planned once, as ``--plan`` plans a run (the update,
  the rollout's prefill and decode step, its log-probability pass where μ > 1 or β > 0;
  `trainer.plan.target_plan.plan`): a batch is compiled once (`RlSearch.outcomes` holds it);
* remat: the plan's memory fit takes none, else full where none does not fit;
* the **update micro-batch** is not searched: GRPO's update steps on the whole rollout batch
  (``optimizer.accumulation_steps`` must be 1; `trainer.config.typed`), so the micro-batch is
  the rollout batch over the mesh's batch ways, and the search says so;
* the **group size** G: at a given rollout batch it changes no program (a rollout of B
  completions is B rows, whatever G), so it changes no estimate: it is kept as configured and
  the batches are multiples of it (more prompts per batch, or more completions per prompt, is a
  choice of signal, not of speed);
* a **sampler/trainer split** of the devices (``grpo.overlap`` with ``grpo.sampler_devices``)
  is not searched: each split is the config's, priced as the sequential rollout beside the
  update (overlapped, a step takes about the longer of the two plus the weights' copy:
  `trainer.step.grpo.overlap_estimate`), and the search says so;
* the mesh, the kernels and fp8 are the config's (the mesh search ranks by the update alone).

The chosen batch and the runner-up are said; the chosen is written as a YAML ``--config`` takes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from tjx.metrics import GIB, Target
from trainer.config.schema import ConfigError
from trainer.config.seams import Record
from trainer.config.typed import Config
from trainer.plan import target_plan
from trainer.plan.search.candidates import Candidate, candidate_of

__all__ = [
    "RlOutcome",
    "RlSearch",
    "batch_ways",
    "record",
    "rl_search",
    "rl_table",
    "rollout_batches",
    "winner_config",
]

Say = Callable[[str], None]
#: The default rollout batches: these multiples of the configured one.
DEFAULT_SCALES = (0.5, 1, 2, 4)
MICRO_LINE = (
    "update micro-batch: not searched: GRPO's update steps on the whole rollout batch "
    "(optimizer.accumulation_steps must be 1), so it is the rollout batch over the mesh"
)
SPLIT_LINE = (
    "sampler/trainer split: not searched: grpo.overlap and grpo.sampler_devices are the config's; "
    "overlapped, a step takes about the longer of the rollout and the update (plus the weights' "
    "copy), not their sum"
)


@dataclasses.dataclass
class RlOutcome:
    """One rollout batch planned: its figures, or why it cannot run.

    Attributes
    ----------
    batch : int
        ``data.batch_size``: completions per rollout.
    error : str or None
        Why it does not fit or compile (None: it fits).
    rollout : dict
        The plan's ``rollout`` record (`RolloutEstimate.record`), empty without one.
    fitted : dict
        The settings the plan's memory fit ended on: ``remat``, ``accumulation``,
        ``attention``.
    peak_bytes : int or None
        The largest compiled peak per device of the update and the rollout's programs.
    wall_s : float
        Seconds the plan took.
    """

    batch: int
    error: str | None
    rollout: Record = dataclasses.field(default_factory=dict)
    fitted: Record = dataclasses.field(default_factory=dict)
    peak_bytes: int | None = None
    wall_s: float = 0.0

    @property
    def fits(self) -> bool:
        """It compiled, fits and has a rollout estimate."""
        return self.error is None and bool(self.rollout)

    @property
    def samples_per_s(self) -> float:
        """Completions per second (0 where it does not fit)."""
        return float(self.rollout.get("samples_per_s", 0.0)) if self.fits else 0.0


@dataclasses.dataclass
class RlSearch:
    """An RL search's findings: each planned batch's outcome, in order, and how it ended."""

    outcomes: dict[int, RlOutcome]
    ran_out: bool
    elapsed: float

    def ranked(self) -> list[RlOutcome]:
        """The batches that fit, the most samples per second first."""
        fit = [o for o in self.outcomes.values() if o.fits]
        return sorted(fit, key=lambda o: (-o.samples_per_s, o.batch))


def batch_ways(run: Config, target: Target) -> int:
    """Into how many parts a batch's rows are split on the run's mesh over ``target``."""
    try:
        return candidate_of(run, target.count).mesh.batch_ways
    except ValueError as err:
        raise ConfigError(f"mesh: {err}") from None


def rollout_batches(text: str | None, run: Config, target: Target) -> list[int]:
    """The rollout batches (``data.batch_size``) to plan: ``text``'s (``"64,128"``), else the
    configured one times `DEFAULT_SCALES` where they split; each a multiple of the group size
    and of the mesh's batch ways.

    Raises
    ------
    ConfigError
        ``--search-rollouts``: a value that is no positive integer, or does not split.
    """
    group, ways = run.rollout.group_size, batch_ways(run, target)
    step = math.lcm(group, ways)
    if text is None:
        wanted = {int(run.data.batch_size * s) for s in DEFAULT_SCALES}
        return sorted(b for b in wanted if b > 0 and b % step == 0)
    found: list[int] = []
    for part in text.split(","):
        try:
            batch = int(part.strip())
        except ValueError:
            batch = 0
        if batch <= 0:
            raise ConfigError(
                f"--search-rollouts: expected rollout batches as positive integers separated by "
                f"commas (e.g. 64,128), got {part.strip()!r}"
            )
        if batch % step:
            raise ConfigError(
                f"--search-rollouts: {batch} completions do not split into groups of "
                f"grpo.group_size={group} over the mesh's {ways} batch ways; use multiples of "
                f"{step}"
            )
        found.append(batch)
    return sorted(set(found))


def _plan_batch(run: Config, batch: int, target: Target, text: str) -> RlOutcome:
    """``run`` with ``batch`` completions per rollout, planned (a rule's refusal is an error)."""
    started = time.perf_counter()
    sized = dataclasses.replace(run, data=dataclasses.replace(run.data, batch_size=batch))
    try:
        result = target_plan.plan(sized, target, text, lambda line: None)
    except ValueError as err:  # a ConfigError: a rule refused it
        return RlOutcome(batch, f"refused: {err}", wall_s=time.perf_counter() - started)
    data = result.data
    train = data.get("train", {})
    peaks = [train.get("peak_bytes")] + [p.get("peak_bytes") for p in data.get("programs", {})
                                         .values()]  # fmt: skip
    known = [p for p in peaks if p is not None]
    fitted = {
        "remat": train.get("remat", run.model.remat),
        "accumulation": train.get("accumulation_steps", run.optimizer.accumulation_steps),
        "attention": data.get("attention", {}).get("kernel", run.model.attention_impl),
    }
    error = result.error
    if error is None and "rollout" not in data:
        error = "no rollout estimate (a program did not compile)"
    return RlOutcome(batch, error, dict(data.get("rollout", {})), fitted,
                     max(known) if known else None, time.perf_counter() - started)  # fmt: skip


def rl_search(
    run: Config,
    target: Target,
    text: str,
    batches: list[int],
    *,
    budget_s: float,
    say: Say = lambda line: None,
    plan_batch: Callable[[Config, int, Target, str], RlOutcome] | None = None,
) -> RlSearch:
    """Plan each rollout batch once, smallest first, until all are planned or ``budget_s``
    seconds have passed (module doc); one progress line each."""
    plan_batch = plan_batch or _plan_batch
    started = time.perf_counter()
    outcomes: dict[int, RlOutcome] = {}
    ran_out = False
    for n, batch in enumerate(batches, 1):
        if time.perf_counter() - started >= budget_s:
            ran_out = True
            break
        o = outcomes[batch] = plan_batch(run, batch, target, text)
        say(f"search: [{n}] {_describe(run, o)} ({o.wall_s:.0f} s)")
    return RlSearch(outcomes, ran_out, time.perf_counter() - started)


def _describe(run: Config, o: RlOutcome) -> str:
    group = run.rollout.group_size
    what = f"rollout batch {o.batch} ({o.batch // group} prompts × {group})"
    if not o.fits:
        return f"{what}: {(o.error or '')[:160]}"
    r = o.rollout
    return (
        f"{what}: {r['step_s'] * 1e3:,.1f} ms per step (est.), the rollout "
        f"{r['rollout_share']:.0%} of it, {o.samples_per_s:,.0f} samples/s, "
        f"{(o.peak_bytes or 0) / GIB:.2f} GiB per device"
    )


def rl_table(run: Config, found: RlSearch, top: int = 5) -> list[str]:
    """The batches that fit, the most samples per second first, one row each (estimates)."""
    head = ("#", "rollout batch", "prompts × G", "remat", "rollout", "update", "step",
            "samples/s", "peak/device")  # fmt: skip
    rows = [head]
    group, ms = run.rollout.group_size, lambda s: f"{s * 1e3:,.1f} ms"
    for n, o in enumerate(found.ranked()[:top], 1):
        r = o.rollout
        update = (
            f"{r['iterations']} × {ms(r['update_s'])}" if r["iterations"] > 1 else ms(r["update_s"])
        )
        rows.append((
            str(n), str(o.batch), f"{o.batch // group} × {group}", str(o.fitted["remat"]),
            ms(r["seconds"]), update, ms(r["step_s"]), f"{o.samples_per_s:,.0f}",
            f"{(o.peak_bytes or 0) / GIB:.2f} GiB",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def winner_config(run: Config, o: RlOutcome, count: int) -> tuple[Config, Candidate]:
    """``run`` at ``o``'s rollout batch, and the search candidate of its fitted settings
    (`trainer.plan.search.write_winner` writes the two)."""
    sized = dataclasses.replace(run, data=dataclasses.replace(run.data, batch_size=o.batch))
    c = candidate_of(sized, count).replace(**o.fitted)
    return sized, c


def record(found: RlSearch) -> Record:
    """The RL search as JSON-ready data (``--plan-json``)."""

    def row(o: RlOutcome) -> Record:
        return {"batch": o.batch, "error": o.error, "fitted": o.fitted,
                "peak_bytes": o.peak_bytes, "samples_per_s": o.samples_per_s,
                "rollout": o.rollout, "wall_s": o.wall_s}  # fmt: skip

    ranked = found.ranked()
    return {
        "kind": "rl",
        "elapsed_s": found.elapsed,
        "ran_out": found.ran_out,
        "split": SPLIT_LINE,
        "micro_batch": MICRO_LINE,
        "planned": [row(o) for o in found.outcomes.values()],
        "chosen": row(ranked[0]) if ranked else None,
        "runner_up": row(ranked[1]) if len(ranked) > 1 else None,
    }
