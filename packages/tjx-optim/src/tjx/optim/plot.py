"""Plot a learning-rate schedule to a PNG (matplotlib imported lazily: an optional extra)."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["plot_schedule", "schedule_values"]


def schedule_values(schedule: optax.Schedule, steps: int) -> np.ndarray:
    """``schedule(t)`` for ``t = 0 .. steps - 1`` as a float64 numpy array."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}; allowed values: an integer >= 1")
    values = jax.vmap(schedule)(jnp.arange(steps, dtype=jnp.int32))
    return np.asarray(values, dtype=np.float64)


def plot_schedule(
    schedule: optax.Schedule, steps: int, path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Draw ``schedule`` over ``steps`` steps and save it as a PNG at ``path``.

    Parameters
    ----------
    schedule
        Any ``step -> lr`` function (e.g. from ``build_schedule``).
    steps
        Number of steps to draw (>= 1).
    path
        Output file; parent folders are created.
    title
        Optional plot title.

    Returns
    -------
    Path
        The written file.
    """
    # Figure + Agg canvas directly: no pyplot global state, no GUI backend needed.
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # pants: no-infer-dep
        from matplotlib.figure import Figure  # pants: no-infer-dep
    except ImportError as err:  # pragma: no cover - matplotlib is installed wherever tests run
        raise ImportError("plot_schedule needs matplotlib: pip install 'tjx-optim[plot]'") from err

    values = schedule_values(schedule, steps)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.arange(steps), values)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out
