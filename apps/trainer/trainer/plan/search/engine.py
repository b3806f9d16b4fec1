"""The search's loop: candidates planned for the target, best first, within a time budget.

Each candidate is planned as ``--plan`` plans a run (`trainer.plan.target_plan.plan`: compiled for
the target's abstract devices, fitted to its memory, estimated by the calibrated model), in this
process or in up to two worker processes (`Planner`). The plan's memory fit may make a candidate
lighter (full remat, more micro-steps): its result is kept under the candidate it became too, so
a later candidate equal to that is not compiled again (``reused``).

The order is a hill climb from the run as configured: the next candidates change one dimension
of the best found so far (the fastest that fits; while none fits, the one nearest to fitting),
each dimension's values in the space's order, the dimensions taken in turn. It ends when no such
change is left (``converged``) or the budget runs out (``ran_out``: compiles under way are
stopped and said).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import jax

from tjx import kernels, parallel
from tjx.metrics import CompileFindings, Target
from trainer.config.typed import Config
from trainer.plan import target_plan
from trainer.plan.search.candidates import Candidate, MeshChoice, Space, apply, candidate_of

__all__ = ["Outcome", "Planner", "SearchResult", "evaluate", "search"]

Say = Callable[[str], None]
#: The dimensions a hill-climbing step changes, in turn.
DIMENSIONS = ("mesh", "remat", "accumulation", "attention", "loss", "matmul")


@dataclasses.dataclass
class Outcome:
    """What planning one candidate found.

    Attributes
    ----------
    error : str or None
        Why it cannot run (does not compile, does not fit, refused by a rule); None: it fits.
    fitted : dict
        The settings the plan's memory fit and kernel choice ended on (``remat``,
        ``accumulation``, ``attention``): the candidate it became.
    peak_bytes, seconds, tokens_per_s, mfu, label
        The compiled peak per device and the estimate (None where the plan did not get there).
    wall_s : float
        Seconds the plan took.
    lines : list of str
        The plan's own lines.
    """

    error: str | None
    fitted: dict[str, Any] = dataclasses.field(default_factory=dict)
    peak_bytes: int | None = None
    seconds: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    label: str = ""
    wall_s: float = 0.0
    lines: list[str] = dataclasses.field(default_factory=list)

    @property
    def fits(self) -> bool:
        """Whether it compiled, fits and has an estimate."""
        return self.error is None and self.seconds is not None


def evaluate(run: Config, target: Target, text: str) -> Outcome:
    """``run`` planned on ``target`` (``text``: as given), its lines kept, never raising for a
    run that cannot be planned (a rule's refusal is the outcome's error)."""
    lines: list[str] = []
    started = time.perf_counter()
    try:
        result = target_plan.plan(run, target, text, lines.append)
    except (ValueError, kernels.KernelCompileError) as err:  # a ConfigError: a rule refused it
        return Outcome(f"refused: {err}", wall_s=time.perf_counter() - started, lines=lines)
    except jax.errors.JaxRuntimeError as err:  # the compiler stopped outside the step's compile
        first = (str(err).strip() or type(err).__name__).splitlines()[0]
        return Outcome(f"failed: {first}", wall_s=time.perf_counter() - started, lines=lines)
    data, train = result.data, result.data.get("train", {})
    est = data.get("estimate") or {}
    fitted = {
        "remat": train.get("remat", run.model.remat),
        "accumulation": train.get("accumulation_steps", run.optimizer.accumulation_steps),
        "attention": data.get("attention", {}).get("kernel", run.model.attention_impl),
    }
    calls = train.get("custom_calls")
    reads_loss = "cross_entropy_impl" not in type(run.model).unused_fields
    if reads_loss and run.model.cross_entropy_impl == "auto" and calls is not None:  # auto's: the
        # fused loss is its own kernels (tjx_ce_fwd, _dx, _dw) in the compiled program, the row
        # kernel's tjx_ce_rows
        fused = any(name.startswith(("tjx_ce_fwd", "tjx_ce_dx", "tjx_ce_dw")) for name in calls)
        rows = any(name.startswith("tjx_ce_rows") for name in calls)
        fitted["loss"] = "pallas" if fused else ("pallas_rows" if rows else "xla")
    return Outcome(
        result.error,
        fitted,
        train.get("peak_bytes"),
        est.get("seconds"),
        est.get("tokens_per_s"),
        est.get("mfu"),
        str(est.get("label", "")),
        time.perf_counter() - started,
        lines,
    )


# A worker process's target, opened once (its abstract devices are the process's own).
_WORKER: dict[str, Any] = {}

#: A worker's work: one candidate's run planned on the target the worker opened.
Work = Callable[[Config], Outcome]


def _open_worker(text: str, findings: CompileFindings | None) -> None:
    _WORKER["text"] = text
    try:
        opened = target_plan.open_target(text, parallel.abstract_devices)
        # The search's own folder of compiles' findings (its run's setting), not the default's
        _WORKER["target"] = dataclasses.replace(opened, findings=findings)
    except (ValueError, ImportError) as err:  # each candidate then fails with this line
        _WORKER["error"] = f"failed: a worker cannot open {text}: {err}"


def _evaluate_in_worker(run: Config) -> Outcome:
    if "error" in _WORKER:
        return Outcome(_WORKER["error"])
    return evaluate(run, _WORKER["target"], _WORKER["text"])


def _serve(
    conn: Connection, text: str, findings: CompileFindings | None, work: Work, log: str
) -> None:
    """A worker process: open the target, then plan each run the parent sends until it sends
    None. Its stderr (start-up chatter, and a Python error's traceback if it dies) goes to
    ``log``, which the parent reads when the process dies."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 2)
    os.close(fd)
    _open_worker(text, findings)
    while (run := conn.recv()) is not None:
        conn.send(work(run))


@dataclasses.dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    log: Path


def _death(worker: _Worker) -> str:
    """One line on how a worker process ended mid-plan, with the last line it wrote."""
    worker.process.join(timeout=10)
    code = worker.process.exitcode
    how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
           else f"exit code {code}")  # fmt: skip
    try:
        said = [ln.strip() for ln in worker.log.read_text(errors="replace").splitlines()]
    except OSError:
        said = []
    # A Python error's last traceback line. A compile's native output is not here: the plan
    # keeps fd 2 in a scratch file while it compiles (tjx.metrics.quiet_native_stderr), and
    # libtpu writes its fatal checks to /tmp/tpu_logs.
    last = next((ln for ln in reversed(said) if ln), "")
    return f"failed: the planning process died ({how})" + (f": {last[:300]}" if last else "")


class Planner:
    """Plans candidates' runs: in this process (``workers`` 0) or in up to ``workers`` spawned
    processes, each opening the target itself. `submit` queues one; `next_done` waits for one.

    A worker that dies mid-plan (libtpu aborts, the kernel kills it for memory) fails its own
    candidate with how it died (and its last stderr line), and the next submit starts a new one: no
    plan is lost and the search does not wait out its budget for one (a pool's lost task did).
    """

    def __init__(self, target: Target, text: str, workers: int, work: Work = _evaluate_in_worker):
        self.target, self.text, self.workers, self.work = target, text, workers, work
        self.done: queue.Queue[tuple[Candidate, Outcome]] = queue.Queue()
        self.running: set[Candidate] = set()
        self.context = multiprocessing.get_context("spawn")  # jax does not survive a fork
        self.idle: list[_Worker] = []
        self.busy: dict[_Worker, Candidate] = {}

    @property
    def slots(self) -> int:
        """How many more candidates may run now."""
        return max(self.workers, 1) - len(self.running)

    def _spawn(self) -> _Worker:
        fd, log = tempfile.mkstemp(prefix="tjx-search-worker-", suffix=".log")
        os.close(fd)
        conn, child = self.context.Pipe()
        process = self.context.Process(
            target=_serve,
            args=(child, self.text, self.target.findings, self.work, log),
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(process, conn, Path(log))

    def submit(self, c: Candidate, run: Config) -> None:
        """Plan ``run`` (candidate ``c``); in this process, at once."""
        self.running.add(c)
        if self.workers <= 0:
            self.done.put((c, evaluate(run, self.target, self.text)))
            return
        while self.idle and not self.idle[-1].process.is_alive():  # died while idle
            self._stop(self.idle.pop())
        worker = self.idle.pop() if self.idle else self._spawn()
        self.busy[worker] = c
        with contextlib.suppress(OSError):  # a broken pipe: it died just now; next_done says how
            worker.conn.send(run)

    def next_done(self, timeout: float) -> tuple[Candidate, Outcome] | None:
        """The next finished candidate, or None after ``timeout`` seconds."""
        if self.workers > 0 and self.done.empty():
            waits: list[Any] = [w.conn for w in self.busy] + [w.process.sentinel for w in self.busy]
            ready = set(wait(waits, timeout=max(timeout, 0.0)))
            for worker in list(self.busy):
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                c = self.busy.pop(worker)
                try:
                    outcome: Outcome = worker.conn.recv()
                except (EOFError, OSError):  # it died before answering
                    self.done.put((c, Outcome(_death(worker))))
                    self._stop(worker)
                else:
                    self.done.put((c, outcome))
                    self.idle.append(worker)
        try:
            found = self.done.get_nowait()
        except queue.Empty:
            return None
        self.running.discard(found[0])
        return found

    def _stop(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.terminate()
        worker.process.join(timeout=10)
        worker.conn.close()
        worker.log.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the workers, whatever they are compiling."""
        for worker in [*self.idle, *self.busy]:
            self._stop(worker)
        self.idle, self.busy = [], {}


@dataclasses.dataclass
class SearchResult:
    """A search's findings.

    Attributes
    ----------
    space : Space
        The candidates' values and what was pruned.
    base : Candidate or None
        The run as configured (None: its mesh does not cover the target).
    outcomes : dict
        Every planned candidate's `Outcome`, and each fitted candidate's (the same object).
    order : list of Candidate
        The candidates in the order they were planned.
    reused : int
        Candidates answered by an earlier plan (the same program: no compile).
    ran_out : bool
        The budget ended the search; ``stopped`` compiles were cut off.
    elapsed : float
        Seconds the search took.
    """

    space: Space
    base: Candidate | None
    outcomes: dict[Candidate, Outcome]
    order: list[Candidate]
    reused: int
    ran_out: bool
    stopped: int
    elapsed: float

    def ranked(self) -> list[tuple[Candidate, Outcome]]:
        """The planned candidates that fit, fastest first (each fitted program once)."""
        seen: set[Candidate] = set()
        out = []
        for c in self.order:
            o = self.outcomes[c]
            fitted = fitted_candidate(c, o)
            if o.fits and fitted not in seen:
                seen.add(fitted)
                out.append((fitted, o))
        return sorted(out, key=lambda co: (co[1].seconds, co[0]))


def fitted_candidate(c: Candidate, o: Outcome) -> Candidate:
    """The candidate ``c`` became under its plan's memory fit and kernel choice."""
    return c.replace(**o.fitted) if o.fitted else c


def _neighbours(space: Space, anchor: Candidate) -> Iterator[Candidate]:
    """The candidates that change one dimension of ``anchor``: first value of each dimension in
    turn, then the second, and so on."""
    values: dict[str, list[Any]] = {
        "mesh": space.meshes,
        "remat": space.remats,
        "accumulation": space.accumulations,
        "attention": space.attentions,
        "loss": space.losses,
        "matmul": space.matmuls,
    }
    for rank in range(max(len(v) for v in values.values())):
        for dim in DIMENSIONS:
            if rank < len(values[dim]) and values[dim][rank] != getattr(anchor, dim):
                yield anchor.replace(**{dim: values[dim][rank]})


def _other_kernel(
    space: Space, c: Candidate, outcomes: dict[Candidate, Outcome], running: set[Candidate]
) -> list[Candidate]:
    """``c`` with each other attention kernel of the space not yet planned, in order."""
    alternatives = (c.replace(attention=k) for k in space.attentions if k != c.attention)
    return [a for a in alternatives if a not in outcomes and a not in running]


def _start(space: Space, base: Candidate | None) -> Candidate | None:
    """Where the climb starts: the run as configured, else its settings on the first mesh the
    space keeps (with the fewest micro-steps it allows)."""
    kept = base is not None and base.mesh in space.meshes
    if kept and base is not None and space.prune_pair(base.mesh, base.accumulation) is None:
        return base
    template = base or Candidate(space.meshes[0], space.remats[0], 1, "auto", "auto")
    for mesh in space.meshes:
        for accumulation in sorted({template.accumulation, *space.accumulations}):
            if space.prune_pair(mesh, accumulation) is None:
                return template.replace(mesh=mesh, accumulation=accumulation)
    return None


def search(
    run: Config,
    target: Target,
    text: str,
    space: Space,
    *,
    budget_s: float,
    workers: int = 2,
    say: Say = lambda line: None,
) -> SearchResult:
    """Plan ``run``'s candidates on ``target`` best first (module doc) until no single change of
    the best is left or ``budget_s`` seconds have passed.

    Parameters
    ----------
    run : Config
        The run as configured, its vocabulary resolved (`trainer.plan.target_plan.plan_vocab`).
    target, text
        The target and its name as given.
    space : Space
        The values each dimension may take (`Space.of`).
    budget_s : float
        Seconds the search may take.
    workers : int
        Worker processes (0: plan in this process).
    say : callable
        Where the progress lines go (one per planned candidate).

    Returns
    -------
    SearchResult
    """
    started = time.perf_counter()
    deadline = started + budget_s
    try:
        base: Candidate | None = candidate_of(run, target.count)
    except ValueError:
        base = None
    outcomes: dict[Candidate, Outcome] = {}
    order: list[Candidate] = []
    reused_by: set[Candidate] = set()
    # Splits the compiler failed on, with the kernel: (mesh, attention) -> the failure. libtpu's
    # RET_CHECK on a context split over a slice's hosts fails every remat and micro-batch alike;
    # each compile of an 8B is minutes, so the climb moves to other splits instead.
    broken: dict[tuple[MeshChoice, str], str] = {}
    start = _start(space, base)
    queued: list[Candidate] = [] if start is None else [start]
    auto_start = start is not None and "auto" in (start.attention, start.loss)
    if base is not None and base != start:
        say(f"search: the run as configured ({base.mesh.describe()}) was pruned; starting from "
            f"{start.mesh.describe() if start else 'nothing'}")  # fmt: skip
    planner = Planner(target, text, workers)

    def anchor() -> Candidate | None:
        fitting = [(o.seconds, c) for c, o in outcomes.items() if o.fits]
        if fitting:
            return fitted_candidate(min(fitting)[1], outcomes[min(fitting)[1]])
        sized = [(o.peak_bytes, c) for c, o in outcomes.items() if o.peak_bytes is not None]
        return fitted_candidate(min(sized)[1], outcomes[min(sized)[1]]) if sized else start

    def next_candidate() -> Candidate | None:
        if queued:
            return queued.pop(0)
        if not outcomes and planner.running and auto_start:
            # Until the first plan says what its "auto" kernels are, a candidate naming a kernel
            # could be the same program under another name: compiled twice at once
            return None
        best = anchor()
        if best is None:
            return None
        if best in outcomes and best not in order:
            reused_by.add(best)  # the program a planned candidate became: its own plan
        for c in _neighbours(space, best):
            if c in outcomes and c not in order and outcomes[c].peak_bytes is not None:
                reused_by.add(c)  # the program an earlier candidate became: not compiled again
            if c in outcomes or c in planner.running:
                continue
            failed = broken.get((c.mesh, _kernel(space, c)))
            if failed is not None:
                space.pruned.add(f"the compiler failed on the split ({failed[:100]})",
                                 f"mesh {c.mesh.describe()}, {c.remat}")  # fmt: skip
                outcomes[c] = Outcome(f"pruned: the compiler failed on mesh {c.mesh.describe()}")
                continue
            why = space.prune_pair(c.mesh, c.accumulation)
            if why is not None:
                space.pruned.add(why, f"mesh {c.mesh.describe()} with {c.accumulation} micro-steps")
                outcomes[c] = Outcome(f"pruned: {why}")  # counted once, never planned
                continue
            return c
        return None

    ran_out = False
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline:
                ran_out = bool(planner.running) or next_candidate() is not None
                break
            while planner.slots > 0:
                c = next_candidate()
                if c is None:
                    break
                planner.submit(c, apply(run, c))
            if not planner.running:
                break  # converged: no single change of the best is left
            found = planner.next_done(deadline - time.perf_counter())
            if found is None:
                continue
            c, o = found
            outcomes[c] = o
            order.append(c)
            say(_progress(len(order), c, o))
            fitted = fitted_candidate(c, o)
            if fitted != c and fitted not in outcomes:  # the program another candidate is
                outcomes[fitted] = o
            if _compiler_failed(o):
                broken.setdefault((c.mesh, _kernel(space, c)), _failure(o))
            if f"attention: {c.attention} failed" in (o.error or ""):
                # A kernel that does not lower on this split (cuDNN's partitioner on some
                # meshes): the same change with the next kernel, before the climb goes on
                queued.extend(_other_kernel(space, c, outcomes, planner.running)[:1])
        stopped = len(planner.running)
    finally:
        planner.close()
    return SearchResult(
        space, base, outcomes, order, len(reused_by), ran_out, stopped,
        time.perf_counter() - started,
    )  # fmt: skip


def _kernel(space: Space, c: Candidate) -> str:
    """The attention kernel ``c`` compiles: ``auto`` is the space's one kernel where it has one
    (a TPU's ``xla``), so a failure under one name is not compiled again under the other."""
    return (
        space.attentions[0] if c.attention == "auto" and len(space.attentions) == 1 else c.attention
    )


def _compiler_failed(o: Outcome) -> bool:
    """Whether the compiler itself failed (not a rule's refusal, not memory, not a fused
    attention kernel that does not lower: that is retried with the next kernel)."""
    error = o.error or ""
    crashed = error.startswith("failed:") or "does not compile" in error
    return crashed and o.peak_bytes is None and "attention:" not in error


def _failure(o: Outcome) -> str:
    """The compiler's failure in a few words: its error after the plan's own prefix."""
    error = o.error or ""
    return error.split("does not compile: ", 1)[-1].removeprefix("failed: ")


def _progress(n: int, c: Candidate, o: Outcome) -> str:
    """One planned candidate in a line."""
    what = f"[{n}] {c.mesh.describe()}, remat {c.remat}, {c.accumulation} micro-step" + (
        "s" if c.accumulation > 1 else ""
    )
    what += f", {c.attention}/{c.loss}"
    if o.fits:
        assert o.seconds is not None and o.peak_bytes is not None
        found = f"{o.seconds * 1e3:.1f} ms (est.), {o.peak_bytes / 2**30:.2f} GiB"
        changed = {k: v for k, v in o.fitted.items() if getattr(c, k) != v}
        if changed:
            found += " as " + ", ".join(f"{k} {v}" for k, v in changed.items())
    else:
        found = (o.error or "")[:160]
    return f"search: {what}: {found} ({o.wall_s:.0f} s)"
