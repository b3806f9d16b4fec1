"""A replay's report in its folder: ``report.md`` (the proof of faithfulness, the layers whose
norms jump, the documents and tokens behind the step, a suggested ``data.exclude``), the plots
``loss.png`` (the run's logged loss around the range, the replayed steps marked) and
``norms.png`` (each layer's gradient norm over the probed steps), ``probes.json`` (every probed
value) and ``exclude.yaml`` (the suggested exclusion, as the data config takes it).

Each file is written whole (a temporary file renamed into place): a report is never half there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml  # type: ignore[import-untyped]
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tjx.core.standard_json import dumps_json
from trainer.start.replay.findings import (
    StepFindings,
    findings,
    layer_series,
    probe_values,
)
from trainer.start.replay.request import PROBES
from trainer.start.replay.runner import Replayed

REPORT = "report.md"
LOSS_PNG = "loss.png"
NORMS_PNG = "norms.png"
PROBES_JSON = "probes.json"
EXCLUDE_YAML = "exclude.yaml"
#: Logged steps shown around the replayed range in ``loss.png``, on each side (at least).
CONTEXT_STEPS = 20


def _write(path: Path, data: bytes) -> None:
    """``data`` into ``path`` whole: a temporary file in its folder (made as any file is, so
    the report's permissions are the user's usual ones) renamed over it."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        staged.write_bytes(data)
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def _figure(path: Path, draw: Callable[[Axes], None]) -> None:
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    draw(fig.add_subplot(1, 1, 1))
    fig.tight_layout()
    staged = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(staged)
    os.replace(staged, path)


def plot_loss(replayed: Replayed, focus: Sequence[int], path: Path) -> None:
    """The logged loss around the replayed steps, each replayed loss a dot, the focus steps'
    lines."""
    steps = sorted(replayed.steps)
    lo, hi = steps[0], steps[-1]
    span = max(CONTEXT_STEPS, hi - lo)
    near = replayed.request.logged.items()
    logged = sorted((s, v) for s, v in near if lo - span <= s <= hi + span)

    def draw(ax: Axes) -> None:
        if logged:
            ax.plot([s for s, _ in logged], [v for _, v in logged], lw=1, label="logged loss")
        ax.scatter(steps, [replayed.steps[s].loss for s in steps], s=14, color="C3",
                   zorder=3, label="replayed")  # fmt: skip
        for step in focus:
            ax.axvline(step, color="C1", lw=0.8, ls="--")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{replayed.request.config.name}: {replayed.request.asked}")
        ax.legend(loc="best", fontsize=8)

    _figure(path, draw)


def plot_norms(replayed: Replayed, focus: Sequence[int], path: Path, name: str) -> None:
    """Each layer's ``name`` (``grad_norms``) over the probed steps, one line a layer."""
    series = layer_series(replayed, name)

    def draw(ax: Axes) -> None:
        for layer, points in series.items():
            xs: list[float] = []
            ys: list[float] = []
            for step, value in points:  # a gap between segments is a gap in the line
                if xs and step != xs[-1] + 1:
                    xs, ys = [*xs, xs[-1] + 0.5], [*ys, float("nan")]
                xs, ys = [*xs, step], [*ys, value]
            ax.plot(xs, ys, marker="o", ms=3, lw=1, label=layer)
        for step in focus:
            ax.axvline(step, color="C1", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(name.replace("_", " "))
        ax.legend(loc="best", fontsize=7, ncol=2)

    _figure(path, draw)


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def _faithful(replayed: Replayed) -> list[str]:
    compared = [r for r in replayed.steps.values() if r.logged is not None]
    starts = ", ".join("the run's start" if s == 0 else f"step {s}'s checkpoint"
                       for s in replayed.starts)  # fmt: skip
    lines = [
        "## Faithful",
        "",
        f"Restored {starts}; replayed steps {min(replayed.steps)}–{max(replayed.steps)} with the "
        f"run's own config and compiled step on {replayed.device} in {replayed.seconds:.1f} s. "
        f"**Every one of the {len(compared)} logged losses in the range was replayed bit for "
        "bit** (compared as `metrics.jsonl` holds them).",
        "",
        "| step | replayed loss | logged loss |",
        "|---:|---:|---:|",
    ]
    for number in sorted(replayed.steps):
        record = replayed.steps[number]
        logged = "" if record.logged is None else repr(record.logged)
        lines.append(f"| {number} | {record.loss!r} | {logged} |")
    return lines


def _step_section(item: StepFindings, replayed: Replayed) -> list[str]:
    lines = [f"## Step {item.step}", "", f"Loss {item.loss:.6g}."]
    if item.token_mean is not None:
        lines[-1] += f" Mean token loss in the batch {item.token_mean:.4g} nats."
    if item.layers:
        lines += [
            "",
            "### Layers whose norms jump",
            "",
            "Ratios: the norm at this step over its median at the other probed steps.",
            "",
            "| layer | grad norm | × | update norm | × | max activation | max attention logit |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for f in item.layers:
            lines.append(
                f"| {f.layer} | {_num(f.grad)} | {_num(f.grad_ratio, 3)} | {_num(f.update)} | "
                f"{_num(f.update_ratio, 3)} | {_num(f.activation)} | {_num(f.attention)} |"
            )
    if item.documents:
        lines += [
            "",
            "### Documents behind the loss",
            "",
            "Excess: the document's summed token loss above the batch's mean token loss.",
            "",
            "| # | document | where | tokens | mean loss | excess | text |",
            "|---:|---:|---|---:|---:|---:|---|",
        ]
        for rank, d in enumerate(item.documents, 1):
            lines.append(
                f"| {rank} | {d.number} | {_cell(d.where)} | {d.tokens} | {d.mean_loss:.4g} | "
                f"{d.excess:.4g} | `{_cell(d.snippet)}` |"
            )
    if item.sequences:
        worst = sorted(range(len(item.sequences)), key=lambda r: -item.sequences[r])[:5]
        said = ", ".join(f"row {r}: {item.sequences[r]:.4g}" for r in worst)
        lines += ["", f"Highest sequence losses: {said}."]
    if item.tokens:
        lines += [
            "",
            "### Tokens with the largest loss",
            "",
            "| loss | token | after the text | row, column | document |",
            "|---:|---|---|---|---:|",
        ]
        for t in item.tokens:
            doc = "" if t.document < 0 else str(t.document)
            lines.append(
                f"| {t.loss:.4g} | `{_cell(t.token)}` | `{_cell(t.before)}` | {t.row}, {t.column} "
                f"| {doc} |"
            )
    if item.exclude:
        numbers = ", ".join(map(str, item.exclude))
        run = replayed.request.run_dir
        lines += [
            "",
            "### Suggested exclusion",
            "",
            f"Documents {numbers} ({EXCLUDE_YAML}): their tokens would no longer be trained on; "
            "the batches stay otherwise the same, so the run resumes with them:",
            "",
            "```bash",
            f"python -m trainer --config {run}/config.yaml --run-dir {run} --resume "
            f"--set 'data.exclude=[{numbers}]'",
            "```",
        ]
    return lines


def write_report(replayed: Replayed, out: Path) -> Path:
    """The report's files in ``out`` (created); the path of ``report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    found = findings(replayed)
    focus = [f.step for f in found]
    request = replayed.request
    lines = [
        f"# Replay of {request.run_dir}: {request.asked}",
        "",
        f"Run `{request.config.name}`; probes: "
        + ", ".join(f"{p} ({PROBES[p]})" for p in request.probes)
        + ".",
        "",
        f"![loss]({LOSS_PNG})",
        "",
    ]
    plot_loss(replayed, focus, out / LOSS_PNG)
    norms = next((n for n in ("grad_norms", "update_norms") if n in request.probes), None)
    if norms is not None:
        plot_norms(replayed, focus, out / NORMS_PNG, norms)
        lines += [f"![{norms.replace('_', ' ')}]({NORMS_PNG})", ""]
    lines += _faithful(replayed)
    for item in found:
        lines += ["", *_step_section(item, replayed)]
    excluded = sorted({n for f in found for n in f.exclude})
    if excluded:
        text = "# the documents the replay found behind the loss (data.exclude takes them)\n"
        text += yaml.safe_dump({"data": {"exclude": excluded}}, sort_keys=False)
        _write(out / EXCLUDE_YAML, text.encode())
    _write(out / PROBES_JSON, dumps_json(probe_values(replayed), indent=1).encode())
    report = out / REPORT
    _write(report, ("\n".join(lines) + "\n").encode())
    return report
