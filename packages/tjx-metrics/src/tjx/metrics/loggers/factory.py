"""``make_logger``: build the fan-out logger from a list of backend names."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tjx.metrics.loggers.base import Logger, MultiLogger
from tjx.metrics.loggers.console import ConsoleLogger
from tjx.metrics.loggers.jsonl import JSONL_NAME, JsonlLogger
from tjx.metrics.loggers.urls import is_url

__all__ = ["LOGGER_NAMES", "check_logger_packages", "make_logger"]

#: Backend names accepted by :func:`make_logger`.
LOGGER_NAMES = ("console", "jsonl", "wandb", "tensorboard")

_log = logging.getLogger(__name__)

#: Optional loggers: the package each one imports and the tjx-metrics extra that installs it.
_OPTIONAL = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


def _parse_names(names: Sequence[str] | str) -> list[str]:
    raw = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for name in raw:
        if not isinstance(name, str):
            raise ValueError(f"logger names must be strings from {LOGGER_NAMES}; got {name!r}")
        key = name.strip().lower()
        if not key:
            continue
        if key not in LOGGER_NAMES:
            raise ValueError(f"unknown logger {name!r}; known loggers: {', '.join(LOGGER_NAMES)}")
        if key not in out:
            out.append(key)
    return out


def check_logger_packages(names: Sequence[str] | str, *, wandb_mode: str | None = None) -> None:
    """Check, before anything is written, that every named logger can be built here.

    ``wandb`` is skipped when its mode resolves to ``"disabled"`` (:func:`make_logger` skips it
    then too); ``"online"`` without an API key is refused here as well.

    Raises
    ------
    ValueError
        Naming the logger, the missing package and the install command, or the W&B problem.
    """
    for name in _parse_names(names):
        if name not in _OPTIONAL:
            continue
        if name == "wandb":
            from tjx.metrics.loggers.wandb_logger import resolve_wandb_mode

            if resolve_wandb_mode(wandb_mode) == "disabled":
                continue
        module, extra = _OPTIONAL[name]
        if importlib.util.find_spec(module) is None:
            raise ValueError(
                f"logger {name!r} needs the {module} package, which is not installed: "
                f"pip install 'tjx-metrics[{extra}]' (or {module}), or drop {name!r} from the "
                "loggers"
            )


def _is_primary() -> bool:
    import jax

    return jax.process_index() == 0


def make_logger(
    names: Sequence[str] | str,
    run_dir: str | os.PathLike[str],
    *,
    config: Any = None,
    project: str | None = None,
    entity: str | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    wandb_mode: str | None = None,
    console_keys: Sequence[str] | None = None,
    console_total: int | None = None,
    jsonl_name: str = JSONL_NAME,
    primary_only: bool = True,
    resumed_at: int | None = None,
) -> MultiLogger:
    """Build one logger that fans out to several backends.

    Parameters
    ----------
    names
        Backends from ``("console", "jsonl", "wandb", "tensorboard")``, as a list or a
        comma-separated string; duplicates are ignored, an empty list gives a logger that drops
        everything.
    run_dir
        The run's folder: ``metrics.jsonl``, ``tensorboard/`` and ``wandb/`` go there.
    config
        Run config (dataclass or mapping) for W&B and TensorBoard.
    project, entity, run_name, run_id
        W&B identifiers (``run_id`` resumes a run).
    wandb_mode
        ``"online"``, ``"offline"``, ``"disabled"`` (the one flag that turns W&B off) or ``None``:
        ``WANDB_MODE`` if set, else online with an API key and offline without.
    console_keys
        Scalars the console line shows, in order (default: all).
    console_total
        The run's last step: the console line shows ``step N/total`` and the time left.
    jsonl_name
        File name of the JSONL log inside ``run_dir``.
    primary_only
        Log only on JAX process 0 (other hosts get a logger that drops everything), so a
        multi-host run writes one log.
    resumed_at
        A resumed run's checkpoint step: what the run logged after it before it stopped is
        logged again, so the JSONL log first moves those records to ``metrics.rewound.jsonl``
        (`JsonlLogger`'s ``rewind_after``; its ``rewound`` counts them) and TensorBoard drops
        them (``purge_step``). W&B resumes by ``run_id``. None: a run from its start.

    Returns
    -------
    MultiLogger
        ``.log_scalars(step, dict)``, ``.log_histograms(step, dict)``, ``.log_text(step, key,
        text)``, ``.flush()``, ``.close()``; accepts jax arrays and fetches each call's values with
        one ``jax.device_get``. Call it every N steps, not every step.

    Raises
    ------
    ValueError
        For an unknown logger name (the message lists the known ones) or a bad W&B mode.

    Examples
    --------
    >>> import tempfile
    >>> with make_logger(["jsonl"], tempfile.mkdtemp()) as logger:
    ...     logger.log_scalars(10, {"loss": 2.5})
    """
    selected = _parse_names(names)
    check_logger_packages(selected, wandb_mode=wandb_mode)
    if primary_only and not _is_primary():
        return MultiLogger([])
    remote = is_url(run_dir)
    local_only = [n for n in selected if n in _OPTIONAL]
    if remote and local_only:
        raise ValueError(
            f"{', '.join(local_only)} write(s) files into a local folder, and the run directory "
            f"{os.fspath(run_dir)} is in object storage: log to console,jsonl there (the JSONL "
            "log is written to the store), or use a local run directory"
        )
    base: Any = os.fspath(run_dir).rstrip("/") if remote else Path(run_dir)
    loggers: list[Logger] = []
    try:
        for name in selected:
            if name == "console":
                loggers.append(ConsoleLogger(keys=console_keys, total_steps=console_total))
            elif name == "jsonl":
                path = f"{base}/{jsonl_name}" if remote else base / jsonl_name
                loggers.append(JsonlLogger(path, rewind_after=resumed_at))
            elif name == "tensorboard":
                from tjx.metrics.loggers.tensorboard import TensorBoardLogger

                purge = None if resumed_at is None else resumed_at + 1
                loggers.append(
                    TensorBoardLogger(base / "tensorboard", config=config, purge_step=purge)
                )
            else:
                from tjx.metrics.loggers.wandb_logger import WandbLogger, resolve_wandb_mode

                if resolve_wandb_mode(wandb_mode) == "disabled":
                    _log.info("W&B logging is disabled (wandb_mode / WANDB_MODE); skipping it")
                    continue
                loggers.append(
                    WandbLogger(
                        base,
                        project=project,
                        entity=entity,
                        run_name=run_name,
                        run_id=run_id,
                        config=config,
                        mode=wandb_mode,
                    )
                )
    except BaseException:
        for logger in loggers:  # don't leak open files / runs when a later backend fails
            logger.close()
        raise
    return MultiLogger(loggers)
