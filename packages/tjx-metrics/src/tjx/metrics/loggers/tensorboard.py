"""TensorBoard logger through tensorboardX.

An optional extra: ``pip install tjx-metrics[tensorboard]``.

Event files go to ``<run_dir>/tensorboard/``; view them with ``tensorboard --logdir <run_dir>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tjx.metrics.loggers.base import Logger, Scalar, config_to_dict, finite_values

__all__ = ["TensorBoardLogger"]


def _import_summary_writer() -> Any:
    try:
        # An optional extra: keep Pants from making it a hard requirement of the wheel.
        from tensorboardX import SummaryWriter  # pants: no-infer-dep
    except ImportError as err:
        raise ImportError(
            "the 'tensorboard' logger needs tensorboardX: pip install tjx-metrics[tensorboard]"
        ) from err
    return SummaryWriter


class TensorBoardLogger(Logger):
    """Write scalars, histograms and text to TensorBoard event files.

    Parameters
    ----------
    log_dir
        Folder for the event files (created).
    config
        Optional run config, written once as JSON text under the tag ``config``.
    flush_secs
        How often tensorboardX flushes in the background; :meth:`flush` / :meth:`close` force it.
    purge_step
        A resumed run's first step: TensorBoard drops the events of this step and later ones
        that earlier event files of the folder hold (a run that stopped between two saves logged
        them, and the resume logs them again), so each step shows once. None: nothing dropped.
    """

    name = "tensorboard"

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        config: Any = None,
        flush_secs: int = 30,
        purge_step: int | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        writer_cls = _import_summary_writer()
        self.writer = writer_cls(
            logdir=str(self.log_dir), flush_secs=flush_secs, purge_step=purge_step
        )
        if config is not None:
            text = json.dumps(config_to_dict(config), indent=2, sort_keys=True)
            # Four-space indent: TensorBoard renders text as markdown, so this shows as code.
            self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)
        self._closed = False

    def _write_scalars(self, step: int, scalars: dict[str, Scalar]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def _write_histograms(self, step: int, values: dict[str, np.ndarray]) -> None:
        for key, arr in values.items():
            good = finite_values(arr)
            if good.size:
                self.writer.add_histogram(key, good, step)

    def _write_text(self, step: int, key: str, text: str) -> None:
        self.writer.add_text(key, text, step)

    def flush(self) -> None:
        if not self._closed:
            self.writer.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()
