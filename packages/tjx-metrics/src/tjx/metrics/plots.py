"""Training curves (loss, learning rate, …) from a JSONL log to a PNG, with matplotlib's Agg canvas
(no display, no pyplot global state — safe in training processes and threads).

:func:`plot_curves` raises on a bad log; :func:`plot_run` is the end-of-run convenience that
never does (a finished run must not fail over its picture)."""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tjx.metrics.loggers.jsonl import JSONL_NAME, read_jsonl
from tjx.metrics.loggers.urls import is_url, read_bytes, write_bytes

__all__ = ["load_curves", "plot_curves", "plot_run"]

KeySpec = str | Sequence[str]
#: A curve with at most this many points is drawn with a marker at each point.
SPARSE_POINTS = 30


def load_curves(
    jsonl_path: str | os.PathLike[str], keys: Sequence[str]
) -> dict[str, tuple[list[int], list[float]]]:
    """``{key: (steps, values)}`` from a JSONL log, sorted by step.

    When a step appears more than once for a key (a run resumed from an earlier checkpoint logs
    those steps again) the last record wins, so the curve shows the run that continued.
    """
    latest: dict[str, dict[int, float]] = {k: {} for k in keys}
    for record in read_jsonl(jsonl_path):
        step = record.get("step")
        if not isinstance(step, int):
            continue
        for key in keys:
            value = record.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                latest[key][step] = float(value)
    return {
        key: ([s for s in sorted(points)], [points[s] for s in sorted(points)])
        for key, points in latest.items()
        if points
    }


class NothingLoggedError(ValueError):
    """The log holds no scalar at all (a run stopped before its first logged step)."""


def plot_curves(
    jsonl_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    keys: Sequence[KeySpec] = ("loss", "learning_rate"),
    *,
    title: str | None = None,
    log_y: Sequence[str] = (),
    dpi: int = 100,
) -> Path | str:
    """Plot curves from a JSONL log to a PNG, one panel per key (shared step axis).

    Parameters
    ----------
    jsonl_path
        Log written by :class:`~tjx.metrics.JsonlLogger`.
    png_path
        Output image (parent folders created).
    keys
        Scalars to plot. An entry may be a tuple of keys drawn in the same panel, e.g.
        ``(("loss", "eval_loss"), "learning_rate")``. Keys missing from the log are left out.
    title
        Figure title (default: the log's file name).
    log_y
        Keys whose panel uses a log-scale y axis (non-positive values are dropped there).
    dpi
        Resolution.

    Returns
    -------
    Path or str
        ``png_path`` (a ``gs://`` / ``s3://`` URL as given: the PNG is written as one object).

    Raises
    ------
    FileNotFoundError
        If the log does not exist.
    ValueError
        If none of the keys has a numeric value in the log (the message lists the keys it has;
        `NothingLoggedError` when it has none).
    """
    if not keys:
        raise ValueError("keys must name at least one scalar to plot")
    panels = [[k] if isinstance(k, str) else list(k) for k in keys]
    flat = [k for panel in panels for k in panel]
    curves = load_curves(jsonl_path, flat)
    panels = [[k for k in panel if k in curves] for panel in panels]
    panels = [panel for panel in panels if panel]
    if not panels:
        available = sorted(
            {
                k
                for r in read_jsonl(jsonl_path)
                for k, v in r.items()
                if k not in ("step", "time") and isinstance(v, int | float)
            }
        )
        if not available:  # a run stopped before its first log step
            raise NothingLoggedError(f"{jsonl_path} holds no scalar yet (keys {flat})")
        raise ValueError(
            f"none of the keys {flat} has values in {jsonl_path}; it has: {', '.join(available)}"
        )

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 2.6 * len(panels)), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels, strict=True):
        logscale = any(k in log_y for k in panel)
        for key in panel:
            steps, values = curves[key]
            if logscale:
                pairs = [(s, v) for s, v in zip(steps, values, strict=True) if v > 0]
                steps, values = [p[0] for p in pairs], [p[1] for p in pairs]
            # NaN / inf values make gaps in the line instead of disappearing silently.
            ys = [v if math.isfinite(v) else math.nan for v in values]
            # A sparse curve (validation every few hundred steps; one point for a short run) gets
            # markers: a line through one point draws nothing.
            marker = "o" if len(steps) <= SPARSE_POINTS else None
            ax.plot(steps, ys, label=key, linewidth=1.2, marker=marker, markersize=4)
        if logscale:
            ax.set_yscale("log")
        ax.set_ylabel(panel[0] if len(panel) == 1 else "value")
        if len(panel) > 1:
            ax.legend(loc="best", fontsize="small")
        ax.grid(True, alpha=0.3)
        if not logscale:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    axes[-1].set_xlabel("step")
    fig.suptitle(title or os.fspath(jsonl_path).rstrip("/").rsplit("/", 1)[-1])
    if is_url(png_path):  # object storage: the picture is one object, written whole
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        write_bytes(png_path, buffer.getvalue())
        return os.fspath(png_path)  # the URL as given
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def plot_run(
    run_dir: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    keys: Sequence[KeySpec] = ("loss", "learning_rate"),
    *,
    jsonl_name: str = JSONL_NAME,
    title: str | None = None,
) -> Path | str | None:
    """Plot a run's JSONL log (the one :func:`~tjx.metrics.make_logger` writes), never raising.

    Meant for the end of a run, or a rebuild of its files: the picture is a convenience, so a
    problem with it is one warning line on stderr, not an error.

    Parameters
    ----------
    run_dir
        The run's folder, holding ``jsonl_name``.
    png_path
        Output image (see :func:`plot_curves`).
    keys
        Scalars to plot, one panel per entry (see :func:`plot_curves`).
    jsonl_name
        The log's file name in ``run_dir`` (``make_logger``'s ``jsonl_name``).
    title
        Figure title (default: the log's file name).

    Returns
    -------
    Path, str or None
        ``png_path`` (``run_dir`` and ``png_path`` may be ``gs://`` / ``s3://`` URLs); ``None``
        when the run has no log or no scalar in it (nothing was logged yet, or no JSONL sink:
        nothing is said) or the plot failed (none of the keys logged, a full disk: one
        ``warning: could not plot ...`` line on stderr).
    """
    if is_url(run_dir):
        jsonl: Any = f"{os.fspath(run_dir).rstrip('/')}/{jsonl_name}"
        try:
            read_bytes(jsonl)
        except FileNotFoundError:
            return None
    else:
        jsonl = Path(run_dir) / jsonl_name
        if not jsonl.is_file():
            return None
    try:
        return plot_curves(jsonl, png_path, keys, title=title)
    except NothingLoggedError:  # stopped before its first log step: no picture, nothing wrong
        return None
    except Exception as err:  # the plot is a convenience; never fail a finished run over it
        name = os.fspath(png_path).rstrip("/").rsplit("/", 1)[-1]
        print(f"warning: could not plot {name}: {err}", file=sys.stderr)
        return None
