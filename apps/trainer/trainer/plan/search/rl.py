"""``--plan TARGET --search`` of an RL config (``data.format: prompts``): most samples per second.

An RL step is a rollout and the μ updates that use it (`trainer.plan.rollout_plan`), so the search
ranks by completions sampled and trained on per second, not by the update's time alone. Its
dimensions, and what each costs in compiles:

* the **rollout batch** (``data.batch_size``: completions per rollout, ``prompts × G``): every
  program's shape depends on it, so each is planned once, as ``--plan`` plans a run (the update,
  the rollout's prefill and decode step, its log-probability pass where μ > 1 or β > 0;
  `trainer.plan.target_plan.plan`): a batch is compiled once (`RlSearch.outcomes` holds it);
* remat: the plan's memory fit takes none, else full where none does not fit;
* the **update micro-batch** (``optimizer.accumulation_steps``: the update's k micro-batches,
  each scored with the whole rollout batch's counts, so their sum is the batch's loss and
  gradient for every loss type; trainer.step.grpo): at each rollout batch and split, the
  plan's memory fit continues past full remat with 2, 4, ... micro-batches (while they split
  over the trainer's batch ways) until the update fits, so a rollout batch whose whole-batch
  update did not fit may; the estimate is of the step compiled with those k micro-batches
  (more micro-batches never estimate faster, so the fewest that fit is the dimension's best).
  Not with ``grpo.top_entropy_quantile < 1`` (its quantile is the whole batch's: `micro_line`);
* the **group size** G (``--search-groups``; default the configured one alone): at a given
  rollout batch it changes no program (a rollout of B completions is B rows, whatever G), so it
  changes no estimate, and a (batch, split) planned for one G is reused for another, not
  compiled again; what it changes is which batches can run: a multiple of G and of the mesh's
  batch ways, and on a split of G, the N sampler devices and the trainer's ways (2 + 6 near 256:
  240 with G = 8 or 16, 252 with G = 4). Each G is planned at the batches it divides; on a tie
  the configured G, then the smaller, is chosen (more prompts per batch or more completions per
  prompt is otherwise a choice of signal, not of speed);
* the **sampler/trainer split** of the devices: ``grpo.overlap: 0`` (every device samples,
  then trains) at each rollout batch; then, at the `SPLIT_BATCHES` batches with the most
  samples per second that way (and the largest whose update fits but whose sequential rollout
  does not: the sampler's devices keep no optimizer state), ``grpo.overlap: 1`` with N
  sampler devices for each N of `default_samplers` (on 8 devices every N from 1 to 7), the
  fewest first: the trainer's mesh the other devices (the config's, data parallel by default,
  over any count: 6 + 2 and 3 + 5 as 4 + 4), each N at the largest rollout batch up to
  the overlap-0 one that the group size, the N sampler devices (they split the rollout's rows)
  and the trainer's batch ways all divide (`split_step`, `split_batch`: 240 for 256
  completions of groups of 8 on 2 + 6); a split whose trainer count the config's mesh does
  not cover is not tried.
  Each split is planned as ``--plan`` plans it (`trainer.plan.target_plan.plan`): the update
  compiled for the trainer's devices, the rollout for the sampler's, where the policy is
  replicated and the rows split, its programs compiled once per batch and N (a cache by label
  and N); its step is the longer of the rollout and the update plus the policy's copy over a
  link (`trainer.plan.rollout_plan`), and both sides' peaks must fit;
* the mesh, the kernels and fp8 are the config's (the mesh search ranks by the update alone).

The chosen batch and split and the runner-up are said; the chosen is written as a YAML
``--config`` takes (with its ``grpo.overlap`` and ``grpo.sampler_devices``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from tjx.metrics import GIB, Compiled, Target
from trainer.config.schema import ConfigError
from trainer.config.seams import Record
from trainer.config.typed import Config
from trainer.plan import target_plan
from trainer.plan.search.candidates import Candidate, candidate_of

__all__ = [
    "GROUPS_LINE",
    "RlOutcome",
    "RlSearch",
    "batch_ways",
    "default_samplers",
    "micro_line",
    "micro_words",
    "parse_groups",
    "parse_samplers",
    "record",
    "rl_search",
    "rl_table",
    "rollout_batches",
    "sampler_counts",
    "split_batch",
    "split_step",
    "split_words",
    "winner_config",
    "with_group",
]

Say = Callable[[str], None]
#: The default rollout batches: these multiples of the configured one.
DEFAULT_SCALES = (0.5, 1, 2, 4)
#: The overlap-0 batches (the most samples per second first) whose splits are planned.
SPLIT_BATCHES = 2
MICRO_LINE = (
    "update micro-batch: at each rollout batch and split, the whole batch, else (after full "
    "remat) 2, 4, ... micro-batches (optimizer.accumulation_steps: each divided by the whole "
    "batch's completions and tokens, so they sum to its loss and gradient for every loss type) "
    "until the update fits; the estimate prices the k micro-batch programs, and the fewest "
    "that fit are the fastest"
)
#: Where the update cannot take micro-batches (`micro_line`).
MICRO_MASKED = (
    "update micro-batch: not searched: grpo.top_entropy_quantile < 1 masks by the whole "
    "rollout batch's entropy quantile, which a micro-batch cannot see; so it is the rollout "
    "batch over the mesh"
)


#: What the search says of the group sizes it tries (`_rl_search`), after their list.
GROUPS_LINE = (
    "at one rollout batch a group size changes no program (B completions are B rows), so a "
    "batch and split planned for one is reused for the others; each is planned at the batches "
    "it divides (with a split's devices too), the configured one chosen on a tie"
)


def micro_line(run: Config) -> str:
    """What the search says of the update micro-batch for ``run`` (`MICRO_LINE`, or
    `MICRO_MASKED` where the entropy mask keeps the update whole)."""
    return MICRO_MASKED if run.grpo.top_entropy_quantile < 1.0 else MICRO_LINE


def micro_words(o: RlOutcome) -> str:
    """An outcome's update micro-batch in words: ``micro-batch 32 × 2`` (rows × steps)."""
    steps = int(o.fitted.get("accumulation", 1))
    return f"micro-batch {o.batch // steps} × {steps}"


@dataclasses.dataclass
class RlOutcome:
    """One rollout batch planned: its figures, or why it cannot run.

    Attributes
    ----------
    batch : int
        ``data.batch_size``: completions per rollout.
    sampler_devices : int
        ``grpo.sampler_devices`` of an overlapped split (``grpo.overlap: 1``); 0: every device
        samples, then trains.
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
    update_fits : bool
        The update compiled and fitted (where the outcome errs: a rollout program did not).
    """

    batch: int
    error: str | None
    rollout: Record = dataclasses.field(default_factory=dict)
    fitted: Record = dataclasses.field(default_factory=dict)
    peak_bytes: int | None = None
    wall_s: float = 0.0
    sampler_devices: int = 0
    #: The update fitted the trainer's devices (only a rollout program did not, where it errs).
    update_fits: bool = False
    #: ``grpo.group_size`` (0: the config's, as planned; a search sets it).
    group: int = 0

    @property
    def key(self) -> tuple[int, int]:
        """The outcome's plan: (rollout batch, sampler devices), whatever its group size."""
        return self.batch, self.sampler_devices

    @property
    def slot(self) -> tuple[int, int, int]:
        """Its place in a search: (rollout batch, sampler devices, group size)."""
        return self.batch, self.sampler_devices, self.group

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

    outcomes: dict[tuple[int, int, int], RlOutcome]
    ran_out: bool
    elapsed: float
    #: The sampler devices each split tried (empty: no split could be searched) and why not.
    splits: list[int] = dataclasses.field(default_factory=list)
    no_split: str | None = None
    #: What was searched of the update micro-batch (`micro_line`).
    micro: str = MICRO_LINE
    #: The group sizes tried, the configured one first.
    groups: list[int] = dataclasses.field(default_factory=list)

    def ranked(self) -> list[RlOutcome]:
        """The (batch, split, group) that fit, the most samples per second first (the smaller
        batch, the fewer sampler devices, then overlap 0, then the configured group size and
        the smaller, on a tie)."""
        fit = [o for o in self.outcomes.values() if o.fits]
        first = self.groups[0] if self.groups else 0
        return sorted(fit, key=lambda o: (-o.samples_per_s, o.batch, o.sampler_devices,
                                          o.group != first, o.group))  # fmt: skip


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
    for part, batch in _integers(text, 0):
        if batch <= 0:
            raise ConfigError(
                f"--search-rollouts: expected rollout batches as positive integers separated by "
                f"commas (e.g. 64,128), got {part!r}"
            )
        if batch % step:
            raise ConfigError(
                f"--search-rollouts: {batch} completions do not split into groups of "
                f"grpo.group_size={group} over the mesh's {ways} batch ways; use multiples of "
                f"{step}"
            )
        found.append(batch)
    return sorted(set(found))


def parse_groups(text: str | None, run: Config) -> list[int]:
    """``--search-groups``' group sizes (``"4,8,16"``), the configured ``grpo.group_size``
    first; None: the configured one alone.

    Raises
    ------
    ConfigError
        A value that is no integer of at least 2 (GRPO's advantages compare a group's rows).
    """
    first = run.rollout.group_size
    if text is None:
        return [first]
    found: list[int] = []
    for part, g in _integers(text, 0):
        if g < 2:
            raise ConfigError(
                f"--search-groups: {part!r} is no group size (grpo.group_size: "
                "completions per prompt, at least 2); give integers of at least 2 separated by "
                "commas (e.g. 4,8,16)"
            )
        found.append(g)
    return sorted(set(found), key=lambda g: (g != first, g))


def _integers(text: str, bad: int) -> list[tuple[str, int]]:
    """Each comma-separated part of ``text``, stripped, and its integer (``bad`` where it is
    none): a flag's list, which its caller checks."""
    found = []
    for part in (p.strip() for p in text.split(",")):
        try:
            found.append((part, int(part)))
        except ValueError:
            found.append((part, bad))
    return found


def with_group(run: Config, group: int) -> Config:
    """``run`` with ``grpo.group_size`` ``group`` (the rollout batch is left as it is)."""
    if group == run.rollout.group_size:
        return run
    return dataclasses.replace(run, rollout=dataclasses.replace(run.rollout, group_size=group))


def parse_samplers(text: str | None, count: int, where: str) -> list[int] | None:
    """``--search-samplers``' counts of sampler devices (``"1,4"``), each leaving a trainer;
    ``"0"``: none (overlap 0 only, an empty list); None: the default (`default_samplers`).

    Raises
    ------
    ConfigError
        A value that is no integer from 1 to ``count - 1`` (``where`` names the target).
    """
    if text is None:
        return None
    if text.strip() == "0":
        return []
    found: list[int] = []
    for part, n in _integers(text, -1):
        if n < 1 or n >= count:
            raise ConfigError(
                f"--search-samplers: {part!r} is no count of sampler devices of "
                f"--plan {where}'s {count}: each must leave a trainer; give integers from 1 to "
                f"{count - 1} separated by commas (0 alone: no split)" if count > 1 else
                f"--search-samplers: --plan {where} is one device, which cannot be split into "
                "sampler and trainer devices; drop --search-samplers or plan more devices"
            )  # fmt: skip
        found.append(n)
    return sorted(set(found))


#: Up to this many devices every split is tried; beyond, sampler counts below it and those that
#: leave the trainer a half, a quarter, ... of the devices (`default_samplers`).
EVERY_SPLIT_BELOW = 8


def default_samplers(count: int) -> list[int]:
    """The sampler devices a split of ``count`` devices tries by default: every N from 1 to
    ``count - 1`` on up to `EVERY_SPLIT_BELOW` devices; beyond, 1 to ``EVERY_SPLIT_BELOW - 1``
    (few samplers: a decode step reads the whole policy on each, so its time barely falls with
    more of them) and those that leave the trainer a half, a quarter, ... of the devices."""
    wanted = set(range(1, min(count, EVERY_SPLIT_BELOW)))
    trainers = count // 2
    while trainers >= 1:
        wanted.add(count - trainers)
        trainers //= 2
    return sorted(n for n in wanted if 1 <= n < count)


def split_step(run: Config, target: Target, sampler: int) -> int:
    """The smallest rollout batch a split with ``sampler`` sampler devices runs: a multiple of
    the group size, of the N sampler devices (they split the rollout's rows) and of the
    trainer's batch ways (the config's mesh over the other devices); 0 where that mesh does
    not cover them (a fixed axis the trainer's device count does not divide)."""
    try:
        ways = candidate_of(run, target.count - sampler).mesh.batch_ways
    except ValueError:  # e.g. mesh.fsdp=2 over 5 trainer devices
        return 0
    return math.lcm(run.rollout.group_size, sampler, ways)


def split_batch(near: int, step: int) -> int:
    """The largest multiple of ``step`` at most ``near`` (at least ``step``): the rollout batch
    a split is planned at beside an overlap-0 batch of ``near`` completions. Not above it:
    where a step's time barely moves with its rows (a decode bound by reading the weights), a
    larger batch alone would win, and the split would be credited with it."""
    return max(step, near // step * step)


def sampler_counts(
    run: Config, target: Target, batch: int, wanted: list[int] | None = None
) -> tuple[list[tuple[int, int]], str | None]:
    """The splits of ``target`` planned beside the overlap-0 rollout ``batch``: for each N of
    ``wanted`` (default `default_samplers`), N sampler devices at the largest rollout batch up
    to ``batch`` that both sides divide (`split_step`, `split_batch`), as (N, batch), the fewest
    sampler devices first; and why none, if none."""
    count = target.count
    if count < 2:
        return [], f"one device ({target.describe()}): nothing to split"
    if wanted == []:
        return [], "--search-samplers 0: overlap 0 only"
    wanted = default_samplers(count) if wanted is None else wanted
    found: list[tuple[int, int]] = []
    for sampler in wanted:
        step = split_step(run, target, sampler)
        if step:
            found.append((sampler, split_batch(batch, step)))
    if not found:
        tried = ", ".join(str(count - n) for n in wanted)
        return [], (
            f"the config's mesh ({run.mesh.describe()}) covers none of {tried} trainer devices"
        )
    return found, None


def split_words(sampler: int, count: int) -> str:
    """A split in words (the chosen line, a row)."""
    if not sampler:
        return f"overlap 0 (all {count} devices sample, then train)"
    return f"overlap 1: {sampler} sampler + {count - sampler} trainer devices"


def with_split(run: Config, sampler: int, count: int) -> Config:
    """``run`` overlapped on ``sampler`` of ``count`` devices (0: sequential), its held-out
    batch (``eval.batch_size``, the greedy completions the trainer's mesh runs) the largest
    multiple of the trainer's batch ways at most the configured one, where those do not split
    it (6 trainers and 32 rows: 30): the rollout's estimate does not read it."""
    rollout = dataclasses.replace(run.rollout, overlap=int(sampler > 0), sampler_devices=sampler)
    split = dataclasses.replace(run, rollout=rollout)
    if not sampler:
        return split
    ways = candidate_of(split, count - sampler).mesh.batch_ways
    rows = run.eval.batch_size
    if rows % ways == 0:
        return split
    held = dataclasses.replace(run.eval, batch_size=max(ways, rows // ways * ways))
    return dataclasses.replace(split, eval=held)


PlanBatch = Callable[[Config, int, Target, str, int, dict[str, Compiled]], RlOutcome]


def _plan_batch(
    run: Config, batch: int, target: Target, text: str, sampler: int, cache: dict[str, Compiled]
) -> RlOutcome:
    """``run`` with ``batch`` completions per rollout on the split ``sampler``, planned (a
    rule's refusal is an error); ``cache`` keeps the sampler's programs (by batch and N)."""
    started = time.perf_counter()
    sized = with_split(
        dataclasses.replace(run, data=dataclasses.replace(run.data, batch_size=batch)),
        sampler,
        target.count,
    )
    try:
        result = target_plan.plan(sized, target, text, lambda line: None, cache)
    except ValueError as err:  # a ConfigError: a rule refused it
        return RlOutcome(batch, f"refused: {err}", wall_s=time.perf_counter() - started,
                         sampler_devices=sampler)  # fmt: skip
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
    update_fits = bool(train.get("compiles")) and bool(data.get("memory", {}).get("fits"))
    return RlOutcome(batch, error, dict(data.get("rollout", {})), fitted,
                     max(known) if known else None, time.perf_counter() - started,
                     sampler, update_fits)  # fmt: skip


def rl_search(
    run: Config,
    target: Target,
    text: str,
    batches: list[int],
    *,
    budget_s: float,
    say: Say = lambda line: None,
    plan_batch: PlanBatch | None = None,
    samplers: list[int] | None = None,
    groups: list[int] | None = None,
) -> RlSearch:
    """Plan each rollout batch once with overlap 0, smallest first, then the splits of the best
    `SPLIT_BATCHES` (module doc), until all are planned or ``budget_s`` seconds have passed;
    one progress line each. ``samplers``: the splits' sampler devices (default
    `default_samplers`). ``groups``: the group sizes (`parse_groups`; default the configured
    one), each at the ``batches`` it and the mesh divide; a (batch, split) planned for one is
    reused for the others (the same programs)."""
    plan_batch = plan_batch or _plan_batch
    started = time.perf_counter()
    groups = groups or [run.rollout.group_size]
    found = RlSearch({}, False, 0.0, micro=micro_line(run), groups=groups)
    cache: dict[str, Compiled] = {}  # the sampler's programs, by label and N
    plans: dict[tuple[int, int], RlOutcome] = {}  # by (batch, N): whatever the group size

    def plan_one(grouped: Config, batch: int, sampler: int) -> bool:
        group = grouped.rollout.group_size
        if (batch, sampler, group) in found.outcomes:  # two batches round to one for a split
            return True
        reused = (batch, sampler) in plans
        if not reused and time.perf_counter() - started >= budget_s:
            found.ran_out = True
            return False
        o = plans.get((batch, sampler)) or plan_batch(grouped, batch, target, text, sampler, cache)
        plans[o.key] = o
        o = dataclasses.replace(o, group=group, rollout=_regrouped(o.rollout, batch, group))
        found.outcomes[o.slot] = o
        took = "the same programs as planned" if reused else f"{o.wall_s:.0f} s"
        say(f"search: [{len(found.outcomes)}] {_describe(grouped, o, target.count)} ({took})")
        return True

    for group in groups:
        grouped, ways = with_group(run, group), batch_ways(run, target)
        for batch in batches:
            if batch % math.lcm(group, ways) == 0 and not plan_one(grouped, batch, 0):
                break
    best = list(dict.fromkeys(o.batch for o in found.ranked()))[:SPLIT_BATCHES]
    # The largest batch whose update fits but whose sequential rollout does not (its devices
    # keep the optimizer state while sampling): a sampler's devices hold the policy alone.
    unfit = [o.batch for o in found.outcomes.values() if not o.fits and o.update_fits]
    if unfit and max(unfit) not in best:
        best.append(max(unfit))
    for batch in best:
        for group in groups:
            if found.ran_out or (batch, 0, group) not in found.outcomes:
                continue
            grouped = with_group(run, group)
            counts, why = sampler_counts(grouped, target, batch, samplers)
            found.no_split = found.no_split or why
            for sampler, near in counts:
                if sampler not in found.splits:
                    found.splits.append(sampler)
                if not plan_one(grouped, near, sampler):
                    break
    found.elapsed = time.perf_counter() - started
    return found


def _regrouped(rollout: Record, batch: int, group: int) -> Record:
    """A plan's ``rollout`` record (`RolloutEstimate.record`) for ``group``: the same figures."""
    return rollout | {"group_size": group, "prompts": batch // group} if rollout else rollout


def _describe(run: Config, o: RlOutcome, count: int) -> str:
    group = o.group or run.rollout.group_size
    what = (f"rollout batch {o.batch} ({o.batch // group} prompts × {group}), "
            f"{split_words(o.sampler_devices, count)}")  # fmt: skip
    if not o.fits:
        return f"{what}: {(o.error or '')[:160]}"
    r = o.rollout
    return (
        f"{what}, {micro_words(o)}: {r['step_s'] * 1e3:,.1f} ms per step (est.), the rollout "
        f"{r['rollout_share']:.0%} of it, {o.samples_per_s:,.0f} samples/s, "
        f"{(o.peak_bytes or 0) / GIB:.2f} GiB per device"
    )


def rl_table(run: Config, found: RlSearch, count: int, top: int = 6) -> list[str]:
    """The (batch, split) pairs that fit, the most samples per second first, one row each
    (estimates); a split's ``sampler + trainer`` devices of the ``count``."""
    head = ("#", "rollout batch", "prompts × G", "split", "remat", "micro-batch", "rollout",
            "update", "copy", "step", "samples/s", "peak/device")  # fmt: skip
    rows = [head]
    ms = lambda s: f"{s * 1e3:,.1f} ms"
    for n, o in enumerate(found.ranked()[:top], 1):
        r, group = o.rollout, o.group or run.rollout.group_size
        update = (
            f"{r['iterations']} × {ms(r['update_s'])}" if r["iterations"] > 1 else ms(r["update_s"])
        )
        split = (f"{o.sampler_devices} + {count - o.sampler_devices}" if o.sampler_devices
                 else "sequential")  # fmt: skip
        copy = ms(r.get("copy_s", 0.0)) if o.sampler_devices else "-"
        rows.append((
            str(n), str(o.batch), f"{o.batch // group} × {group}", split, str(o.fitted["remat"]),
            micro_words(o).removeprefix("micro-batch "), ms(r["seconds"]), update, copy,
            ms(r["step_s"]), f"{o.samples_per_s:,.0f}", f"{(o.peak_bytes or 0) / GIB:.2f} GiB",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def winner_config(run: Config, o: RlOutcome, count: int) -> tuple[Config, Candidate]:
    """``run`` at ``o``'s rollout batch, group size and split (``grpo.overlap``,
    ``grpo.sampler_devices``), and the search candidate of its fitted settings
    (`trainer.plan.search.write_winner` writes the two)."""
    run = with_group(run, o.group or run.rollout.group_size)
    sized = with_split(
        dataclasses.replace(run, data=dataclasses.replace(run.data, batch_size=o.batch)),
        o.sampler_devices,
        count,
    )
    # The mesh over the devices that train (a split's run builds it over the others)
    c = candidate_of(sized, count - o.sampler_devices).replace(**o.fitted)
    return sized, c


def record(found: RlSearch) -> Record:
    """The RL search as JSON-ready data (``--plan-json``)."""

    def row(o: RlOutcome) -> Record:
        return {"batch": o.batch, "group_size": o.group, "sampler_devices": o.sampler_devices,
                "overlap": int(o.sampler_devices > 0), "error": o.error, "fitted": o.fitted,
                "peak_bytes": o.peak_bytes, "samples_per_s": o.samples_per_s,
                "rollout": o.rollout, "wall_s": o.wall_s,
                "accumulation_steps": int(o.fitted.get("accumulation", 1)),
                "micro_batch": o.batch // int(o.fitted.get("accumulation", 1))}  # fmt: skip

    ranked = found.ranked()
    return {
        "kind": "rl",
        "elapsed_s": found.elapsed,
        "ran_out": found.ran_out,
        "splits": found.splits,
        "no_split": found.no_split,
        "micro_batch": found.micro,
        "groups": found.groups,
        "planned": [row(o) for o in found.outcomes.values()],
        "chosen": row(ranked[0]) if ranked else None,
        "runner_up": row(ranked[1]) if len(ranked) > 1 else None,
    }
