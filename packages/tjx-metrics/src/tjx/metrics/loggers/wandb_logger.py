"""Weights & Biases logger (optional extra: ``pip install tjx-metrics[wandb]``).

Mode, in this order: the ``mode`` argument; else the ``WANDB_MODE`` environment variable; else
``"online"`` when an API key is configured (``WANDB_API_KEY`` set, or a netrc entry for the W&B host
as ``wandb login`` writes) and ``"offline"`` otherwise. ``mode="disabled"`` turns W&B off
(:func:`~tjx.metrics.make_logger` then does not even import wandb). Offline runs are written under
``<run_dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import netrc
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from tjx.metrics.loggers.base import Logger, Scalar, config_to_dict, finite_values

__all__ = ["WANDB_MODES", "WandbLogger", "resolve_wandb_mode", "wandb_api_key_configured"]

WANDB_MODES = ("online", "offline", "disabled")
_ENV_ALIASES = {"dryrun": "offline", "run": "online", "shared": "online"}


def wandb_api_key_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether W&B has an API key: ``WANDB_API_KEY`` or a netrc entry for the W&B API host."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY", "").strip():
        return True
    host = urlparse(env.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = env.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def resolve_wandb_mode(mode: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """Decide ``"online"``, ``"offline"`` or ``"disabled"`` (see the module notes).

    Raises
    ------
    ValueError
        For an unknown mode, or ``"online"`` without an API key (W&B would fail at once).
    """
    env = os.environ if environ is None else environ
    source = "mode"
    if mode is None and env.get("WANDB_MODE", "").strip():
        mode = env["WANDB_MODE"].strip().lower()
        mode = _ENV_ALIASES.get(mode, mode)
        source = "WANDB_MODE"
    if mode is None:
        return "online" if wandb_api_key_configured(env) else "offline"
    if mode not in WANDB_MODES:
        raise ValueError(f"{source} must be one of {WANDB_MODES}; got {mode!r}")
    if mode == "online" and not wandb_api_key_configured(env):
        raise ValueError(
            f"{source}='online' but no W&B API key is configured: set WANDB_API_KEY or run "
            "`wandb login`, or use mode 'offline' (sync later with `wandb sync`)"
        )
    return mode


def _import_wandb() -> Any:
    try:
        # An optional extra: keep Pants from making it a hard requirement of the wheel.
        import wandb  # pants: no-infer-dep
    except ImportError as err:
        raise ImportError(
            "the 'wandb' logger needs the wandb package: pip install tjx-metrics[wandb]"
        ) from err
    return wandb


class WandbLogger(Logger):
    """Log to a W&B run whose files live under ``run_dir/wandb``.

    Parameters
    ----------
    run_dir
        The run's folder; W&B writes ``run_dir/wandb/``.
    project, entity, run_name, run_id
        W&B identifiers. ``run_id`` resumes that run (``resume="allow"``), e.g. after a restart.
    config
        Run config (dataclass or mapping), stored with the run.
    mode
        ``"online"``, ``"offline"``, ``"disabled"`` or ``None`` (decide as in the module notes).
    settings
        Extra ``wandb.Settings`` fields (default: W&B does not capture the console).
    """

    name = "wandb"

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        project: str | None = None,
        entity: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
        config: Any = None,
        mode: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        explicit = mode is not None or bool(os.environ.get("WANDB_MODE", "").strip())
        self.mode = resolve_wandb_mode(mode)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.mode == "offline" and project is not None:
            why = (
                "W&B mode is 'offline'"
                if explicit
                else "no W&B API key is configured (WANDB_API_KEY unset, no netrc entry)"
            )
            warnings.warn(
                f"{why}: project {project!r} will be written offline under "
                f"{self.run_dir / 'wandb'}/offline-run-*; upload it later with "
                f"`wandb login` then `wandb sync {self.run_dir / 'wandb'}/offline-run-*`",
                UserWarning,
                stacklevel=2,
            )
        wandb = _import_wandb()
        self._wandb = wandb
        opts: dict[str, Any] = {"console": "off", "silent": True}
        opts.update(settings or {})
        self.run = wandb.init(
            project=project,
            entity=entity,
            name=run_name,
            id=run_id,
            resume="allow" if run_id else None,
            dir=str(self.run_dir),
            config=config_to_dict(config),
            mode=self.mode,
            reinit="create_new",  # this logger owns its run; never reuse another one
            settings=wandb.Settings(**opts),
        )
        self._texts: dict[str, list[list[Any]]] = {}
        self._closed = False

    @property
    def run_path(self) -> Path | None:
        """The run's local folder (``.../wandb/offline-run-*`` or ``run-*``), when known."""
        directory = getattr(getattr(self.run, "settings", None), "sync_dir", None)
        return Path(directory) if directory else None

    def _write_scalars(self, step: int, scalars: dict[str, Scalar]) -> None:
        self.run.log(dict(scalars), step=step)

    def _write_histograms(self, step: int, values: dict[str, np.ndarray]) -> None:
        payload = {}
        for key, arr in values.items():
            good = finite_values(arr)
            if good.size:
                payload[key] = self._wandb.Histogram(good)
        if payload:
            self.run.log(payload, step=step)

    def _write_text(self, step: int, key: str, text: str) -> None:
        # W&B tables are immutable once logged: log the whole (growing) table each time, the
        # pattern W&B documents for samples over training.
        rows = self._texts.setdefault(key, [])
        rows.append([step, text])
        table = self._wandb.Table(columns=["step", "text"], data=[list(r) for r in rows])
        self.run.log({key: table}, step=step)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.run.finish()
