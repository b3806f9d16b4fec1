"""What a ``--replay`` command asks for (`ReplayRequest`), read and checked before JAX is used:
the run directory, its config and logged losses, the steps, the probes and the report's folder.
Every problem is one `ConfigError` line naming the flag and the fix; nothing is written.

``--steps A:B`` names logged steps, both included (the step numbers of ``metrics.jsonl``): a
replay restores the newest checkpoint of a step before ``A`` (or the run's start), re-runs the
run's own steps from there to ``B`` (on to the next logged step when ``train.log_every`` skipped
``B``, so that the last one is checked too), and compares each logged loss with the replayed one.
``--spikes`` replays each step the run marked (``loss_spike``, ``train.spike_sigma``) with the
`SPIKE_CONTEXT` steps before it, whose norms the spike's are compared with.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tjx import ckpt
from tjx.ckpt import RunFileError, RunFileNotFoundError, storage
from tjx.ckpt.storage import StoragePath
from tjx.core.lazy import lazy_imports
from trainer.config.folder import RunDir
from trainer.config.schema import ConfigError
from trainer.config.settings import parse_pair
from trainer.config.typed import Config, read_config
from trainer.loop.resume import as_written

with lazy_imports(globals()):  # it loads jax, which the command line must not wait for
    from tjx import metrics

#: The probes a replay computes, by name (``--probe``; all of them by default).
PROBES: dict[str, str] = {
    "grad_norms": "each layer's gradient norm",
    "update_norms": "each layer's update norm: the optimizer's step",
    "activations": "each layer's largest absolute output",
    "attention": "each layer's largest attention logit: scaled q·k, before any soft cap",
    "documents": "each sequence's and document's loss in the batch, documents named by origin",
    "tokens": "the tokens with the largest loss",
}
#: The probes that read the batch's documents (a text source's shards).
DOCUMENT_PROBES = ("documents", "tokens")
#: The probes that trace the model layer by layer.
LAYER_PROBES = ("activations", "attention")
#: Steps before a marked spike that ``--spikes`` replays with it (their norms are the baseline).
SPIKE_CONTEXT = 2
#: The logged metric a spike is marked with (trainer.loop.training).
SPIKE_KEY = "loss_spike"

#: The flags of a run that a replay, which uses the run's own config, refuses.
_RUN_FLAGS = ("config", "overrides", "data", "resume", "init_from", "run_dir", "plan", "search",
              "export_peft", "profile_steps", "print_config", "show_config")  # fmt: skip


@dataclass(frozen=True)
class Segment:
    """One stretch a replay re-runs: from the state after step ``start`` (a checkpoint's, 0: the
    run's start) through step ``stop``; probes at ``probed`` steps, the spikes among them
    ``spikes`` (the steps the report looks into)."""

    start: int
    stop: int
    probed: tuple[int, ...]
    spikes: tuple[int, ...] = ()


@dataclass(frozen=True)
class ReplayRequest:
    """A checked ``--replay`` command."""

    run_dir: StoragePath  # a local Path or an epath.Path (gs://, s3://)
    config: Config
    #: The loss each logged step recorded, as `tjx.metrics.read_jsonl` reads it (the last one of
    #: a step logged twice: a resumed run's).
    logged: Mapping[int, float]
    segments: tuple[Segment, ...]
    probes: tuple[str, ...]
    out: Path
    #: What the command asked for, in the report's words (``--steps 10:12``, ``--spikes``).
    asked: str
    #: Committed checkpoint steps, ascending.
    checkpoints: tuple[int, ...] = field(default=())

    @property
    def first(self) -> int:
        """The first probed step."""
        return min(s for seg in self.segments for s in seg.probed)

    @property
    def last(self) -> int:
        """The last probed step."""
        return max(s for seg in self.segments for s in seg.probed)


def refused_flags(args: argparse.Namespace) -> None:
    """A run's flag beside ``--replay`` (which replays with the run's own config): one line."""
    for name in _RUN_FLAGS:
        value = getattr(args, name, None)
        if value:
            flag = "--set" if name == "overrides" else "--" + name.replace("_", "-")
            raise ConfigError(
                f"{flag}: --replay re-runs the run's steps with its own config and data; drop "
                f"{flag} (a changed run would not replay its logged losses)"
            )
    if args.steps is not None and args.spikes:
        raise ConfigError("--spikes: replays the marked steps; drop --steps, or --spikes")
    if args.steps is None and not args.spikes:
        raise ConfigError("--replay: name the steps to replay: --steps A:B, or --spikes")


def parse_steps(text: str) -> tuple[int, int]:
    """``"10:12"`` → (10, 12): logged steps, both included, 1 <= A <= B."""
    first, last = parse_pair("--steps", text, "A:B, the first and last step to replay (integers)")
    if not 1 <= first <= last:
        raise ConfigError(
            f"--steps: expected 1 <= A <= B (the first and last step, both replayed), got {text!r}"
        )
    return first, last


def parse_probes(text: str | None) -> tuple[str, ...]:
    """``--probe a,b`` → the names, in `PROBES` order; None: every probe."""
    if text is None:
        return tuple(PROBES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROBES]
    if unknown or not names:
        what = f"unknown probe {unknown[0]!r}" if unknown else "no probe named"
        raise ConfigError(f"--probe: {what}; choose from {', '.join(PROBES)} (comma-separated)")
    return tuple(n for n in PROBES if n in names)


def run_location(text: str) -> StoragePath:
    """The run directory ``--replay`` names: it must hold a run (its ``config.yaml``)."""
    path = RunDir(text).path if "://" in text else Path(text).expanduser()
    if "://" not in text and not path.is_dir():
        raise ConfigError(f"--replay: no run directory {text!r}; give a run's folder (RUN_DIR)")
    return path


def read_logged(run_dir: StoragePath) -> dict[int, float]:
    """Each logged step's loss (``metrics.jsonl``); the last record of a step logged twice."""
    path = run_dir / "metrics.jsonl"
    try:
        records = metrics.read_jsonl(path)
    except FileNotFoundError:
        raise ConfigError(
            f"--replay: {str(path)!r} is missing: a replay checks its losses against the run's "
            "logged ones (logging.sinks with jsonl)"
        ) from None
    except ValueError as err:
        raise ConfigError(f"--replay: {err}") from None
    return {int(r["step"]): r["loss"] for r in records if "loss" in r and "step" in r}


def marked_spikes(run_dir: StoragePath) -> list[int]:
    """The steps the run marked as loss spikes (``loss_spike`` records), ascending."""
    records = metrics.read_jsonl(run_dir / "metrics.jsonl")
    return sorted({int(r["step"]) for r in records if SPIKE_KEY in r})


def saved_config(run_dir: StoragePath) -> Config:
    """The run's config as saved (``config.yaml``), as a resume that changes nothing reads it."""
    folder = RunDir(run_dir)
    try:
        saved = folder.read_config()
    except RunFileError as err:  # a missing file is one too (RunFileNotFoundError)
        missing = isinstance(err, RunFileNotFoundError)
        problem = "is missing" if missing else f"is not a readable run config ({err.reason})"
        raise ConfigError(
            f"--replay: {str(folder.config_file)!r} {problem}, so what the run trained is "
            "unknown; give a run's folder (it holds config.yaml, metrics.jsonl, checkpoints/)"
        ) from None
    try:
        return read_config(as_written(saved))
    except ConfigError as err:
        raise ConfigError(
            f"--replay: {RunDir(run_dir).config_file} is no config this trainer reads ({err})"
        ) from None


@dataclass(frozen=True)
class Objective:
    """An objective a replay covers: its name in a refusal, the probes that apply to its batch,
    and why the others do not."""

    name: str
    probes: tuple[str, ...]
    #: Why a probe outside ``probes`` does not apply (a refusal's middle); "" when all do.
    why: str = ""


#: The objectives a replay covers, by ``data.format`` (of the language-model task): each step is
#: the run's own compiled step whatever the objective, so the loss replays bit for bit; only the
#: probes differ, by what the batch carries.
OBJECTIVES: dict[str, Objective] = {
    "text": Objective("the language-model objective on text", tuple(PROBES)),
    # A chat batch's rows are conversations, each padded on its own: no packed stream, so no
    # document number or origin (``documents``); its targets still score tokens (``tokens``).
    "chat": Objective(
        "SFT (data.format chat)",
        ("grad_norms", "update_norms", "activations", "attention", "tokens"),
        "a chat batch's rows are conversations, not a text source's documents",
    ),
    # A preference batch's loss is the DPO loss of its pairs against the reference, not a token's
    # cross-entropy: only the run's own step with a probe (its gradients and update) reads it.
    "preference": Objective(
        "DPO (data.format preference)",
        ("grad_norms", "update_norms"),
        "a preference batch's loss is its pairs' DPO loss, not its tokens' cross-entropy",
    ),
    # GRPO's step is a rollout (sampled with the step's key, scored on the host) and an update
    # on it: a replay samples it again as the run did; its loss is the completions' GRPO loss.
    "prompts": Objective(
        "GRPO (data.format prompts)",
        ("grad_norms", "update_norms"),
        "a rollout batch's loss is its completions' GRPO loss, not its tokens' cross-entropy",
    ),
}


def objective_of(cfg: Config) -> Objective:
    """The run's `Objective`; one that a replay does not cover is one line naming it."""
    fmt = cfg.data.format
    if cfg.task == "lm" and fmt in OBJECTIVES:
        return OBJECTIVES[fmt]
    what = f"{cfg.task} ({cfg.kind})"
    covered = ", ".join(f"{o.name}" for o in OBJECTIVES.values())
    raise ConfigError(
        f"--replay: the run trains {what}; a replay covers decoder models (gpt2, llama, ...) "
        f"with {covered}"
    )


def check_objective(cfg: Config, probes: Sequence[str], *, asked: bool = True) -> tuple[str, ...]:
    """A replay covers the decoder objectives of `OBJECTIVES` (text: one source or a mixture);
    any other objective is one line naming it. The probes that apply to the run: ``probes`` when
    ``asked`` (one that does not is one line), else those of them that do (the default)."""
    objective = objective_of(cfg)
    if not asked:
        skip = set(PROBES) - set(objective.probes)
        skip |= set(DOCUMENT_PROBES) if cfg.data.sources is not None else set()
        split = cfg.mesh.context != 1  # the batch's tokens in the split's order
        skip |= set(LAYER_PROBES) | set(DOCUMENT_PROBES) if split else set()
        probes = [p for p in probes if p not in skip]
    other = [p for p in probes if p not in objective.probes]
    if other:
        raise ConfigError(
            f"--probe: {other[0]} does not apply to {objective.name}: {objective.why}; choose "
            f"from {', '.join(objective.probes)}"
        )
    documents = [p for p in probes if p in DOCUMENT_PROBES]
    if documents and cfg.data.sources is not None:
        raise ConfigError(
            f"--probe: {documents[0]} names the documents of one data.source; this run reads the "
            "mixture data.sources: choose from grad_norms, update_norms, activations, attention"
        )
    whole = [p for p in probes if p in LAYER_PROBES or p in DOCUMENT_PROBES]
    if whole and cfg.mesh.context != 1:
        raise ConfigError(
            f"--probe: {whole[0]} reads whole sequences; this run splits them "
            "(mesh.context): choose from grad_norms, update_norms"
        )
    return tuple(probes)


def segments_of(
    wanted: Sequence[tuple[int, int, tuple[int, ...]]],
    logged: Mapping[int, float],
    checkpoints: Sequence[int],
    started_from: str | None,
) -> tuple[Segment, ...]:
    """Each ``(first, last, spikes)`` range as the `Segment` that replays it: from the newest
    checkpoint before ``first`` (the run's start if none, unless it started from another
    model's weights) through the first logged step at or after ``last``; ranges that share
    their start are one segment."""
    out: dict[int, Segment] = {}
    for first, last, spikes in wanted:
        before = [c for c in checkpoints if c < first]
        if not before and started_from is not None:
            raise ConfigError(
                f"--steps: no checkpoint before step {first} is left, and the run started from "
                f"{started_from} (--init-from), which a replay does not load again; replay "
                f"steps after a checkpoint ({', '.join(map(str, checkpoints)) or 'none kept'})"
            )
        start = before[-1] if before else 0
        stop = min((s for s in logged if s >= last), default=None)
        if stop is None:
            top = max(logged, default=0)
            raise ConfigError(
                f"--steps: the run logged its loss up to step {top}; replay steps up to {top}"
            )
        probed = tuple(range(first, last + 1))
        if start in out:
            seg = out[start]
            probed = tuple(sorted(set(seg.probed) | set(probed)))
            spikes = tuple(sorted(set(seg.spikes) | set(spikes)))
            stop = max(stop, seg.stop)
        out[start] = Segment(start, stop, probed, spikes)
    return tuple(out[k] for k in sorted(out))


def build_request(args: argparse.Namespace) -> ReplayRequest:
    """The checked request of a ``--replay`` command line (nothing written, JAX not used).

    Raises
    ------
    ConfigError
        One line naming the flag and what to do.
    """
    refused_flags(args)
    run_dir = run_location(args.replay)
    cfg = saved_config(run_dir)
    probes = check_objective(cfg, parse_probes(args.probe), asked=args.probe is not None)
    logged = read_logged(run_dir)
    if not logged:
        raise ConfigError(f"--replay: {str(run_dir / 'metrics.jsonl')!r} holds no logged loss")
    folder = RunDir(run_dir).checkpoints
    try:
        checkpoints = tuple(ckpt.CheckpointManager(folder, read_only=True).all_steps())
    except ckpt.CheckpointError:
        checkpoints = ()  # no checkpoint kept: a replay from the run's start
    init = RunDir(run_dir).read_init()
    started_from = None if init is None else str(init.get("init_from"))
    wanted: list[tuple[int, int, tuple[int, ...]]]
    if args.spikes:
        spikes = marked_spikes(run_dir)
        if not spikes:
            raise ConfigError(
                f"--spikes: the run marked no loss spike ({SPIKE_KEY} in its metrics); train "
                "with train.spike_sigma set (e.g. 4), or replay --steps A:B"
            )
        wanted = [(max(1, s - SPIKE_CONTEXT), s, (s,)) for s in spikes]  # each with its context
        asked = "--spikes (" + ", ".join(f"step {s}" for s in spikes) + ")"
    else:
        first, last = parse_steps(args.steps)
        top = max(max(logged), max(checkpoints, default=0))
        if last > top:
            raise ConfigError(
                f"--steps: the run reached step {top}; replay steps up to {top} (got {args.steps})"
            )
        wanted = [(first, last, ())]
        asked = f"--steps {first}:{last}"
    segments = segments_of(wanted, logged, checkpoints, started_from)
    first_probed = min(s for seg in segments for s in seg.probed)
    last_probed = max(s for seg in segments for s in seg.probed)
    out = report_folder(args.out, run_dir, first_probed, last_probed)
    return ReplayRequest(run_dir, cfg, logged, segments, probes, out, asked, checkpoints)


def report_folder(text: str | None, run_dir: StoragePath, first: int, last: int) -> Path:
    """``--out DIR`` (made when the report is written), else ``RUN/replay-A-B`` beside a local
    run's files (a folder of its own: the run's files, and a trainer that holds the run, are
    never touched). A run in object storage needs ``--out``."""
    if text is None:
        if storage.is_remote(run_dir):
            raise ConfigError(
                f"--out: the run is in object storage ({run_dir}); name a local folder for the "
                "report (--out DIR)"
            )
        path = Path(run_dir) / f"replay-{first}-{last}"
    else:
        path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out: {str(path)!r} is a file; name a folder for the report")
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        raise ConfigError(
            f"--out: the folder {str(folder)!r} does not exist; create it or choose another folder"
        )
    try:
        ckpt.check_can_create(folder)
    except ckpt.NotCreatableError as err:
        raise ConfigError(f"--out: {err}") from None
    return path
