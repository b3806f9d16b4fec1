"""The logger interface, host conversion, and the fan-out logger.

Logging is kept off the hot path: loggers accept jax arrays as they come out of a jitted step and
convert them only inside a log call, with **one** ``jax.device_get`` for the whole dict (one
device→host transfer and one sync, not one per value). Call the loggers every N steps (e.g.
``if step % log_every == 0``); between log calls nothing here touches the device.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from tjx.metrics.loggers.histograms import path_name, weights_to_host

__all__ = [
    "Logger",
    "MultiLogger",
    "config_to_dict",
    "finite_values",
    "histograms_to_host",
    "scalars_to_host",
    "select_weights",
]

Scalar = int | float


def _to_step(step: Any) -> int:
    """A host step number (already fetched) as a non-negative int."""
    value = np.asarray(step)
    if value.ndim != 0 or not (np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_):
        if (
            value.ndim == 0
            and np.issubdtype(value.dtype, np.floating)
            and float(value).is_integer()
        ):
            value = value.astype(np.int64)
        else:
            raise ValueError(f"step must be a non-negative integer; got {step!r}")
    out = int(value)
    if out < 0:
        raise ValueError(f"step must be a non-negative integer; got {out}")
    return out


def scalars_to_host(metrics: Mapping[str, Any]) -> dict[str, Scalar]:
    """Fetch a dict of scalars (jax/numpy/python) to Python numbers with one ``jax.device_get``.

    ``None`` values are dropped (e.g. an MFU that is unknown on this device). Booleans become ints.

    Raises
    ------
    ValueError
        If a key is not a string or a value is not a scalar (size-1 arrays are accepted).
    """
    return _fetch_scalars(0, metrics)[1]


def _fetch_scalars(step: Any, metrics: Mapping[str, Any]) -> tuple[int, dict[str, Scalar]]:
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"metrics must be a mapping of name -> scalar; got {type(metrics).__name__}"
        )
    keep = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"metric names must be non-empty strings; got {key!r}")
        if value is not None:
            keep[key] = value
    # One transfer (and one sync) for the step and every device value in the dict.
    host_step, host = jax.device_get((step, keep))
    out: dict[str, Scalar] = {}
    for key, value in host.items():
        arr = np.asarray(value)
        if arr.size != 1 or arr.dtype.kind not in "biuf":
            raise ValueError(
                f"metric {key!r} must be a numeric scalar; got shape {arr.shape} dtype {arr.dtype}"
            )
        item = arr.reshape(()).item()
        out[key] = int(item) if arr.dtype.kind in "biu" else float(item)
    return _to_step(host_step), out


def histograms_to_host(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Fetch a dict of arrays to flat float32 numpy arrays with one ``jax.device_get``."""
    return _fetch_histograms(0, values)[1]


def _fetch_histograms(step: Any, values: Mapping[str, Any]) -> tuple[int, dict[str, np.ndarray]]:
    if not isinstance(values, Mapping):
        raise ValueError(f"values must be a mapping of name -> array; got {type(values).__name__}")
    for key in values:
        if not isinstance(key, str) or not key:
            raise ValueError(f"histogram names must be non-empty strings; got {key!r}")
    host_step, host = jax.device_get((step, dict(values)))
    out: dict[str, np.ndarray] = {}
    for key, value in host.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf" and arr.dtype.name != "bfloat16":
            raise ValueError(f"histogram {key!r} must be numeric; got dtype {arr.dtype}")
        out[key] = arr.astype(np.float32).reshape(-1)
    return _to_step(host_step), out


def finite_values(values: np.ndarray) -> np.ndarray:
    """The finite entries of ``values`` (histogram binning is undefined for NaN/inf)."""
    return values[np.isfinite(values)]


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a config (dataclass, mapping, or object with ``__dict__``)."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        raw: Any = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        raw = dict(config)
    elif hasattr(config, "__dict__"):
        raw = dict(vars(config))
    else:
        raise ValueError(
            f"config must be a dataclass, mapping or object; got {type(config).__name__}"
        )
    # Round-trip through JSON so every backend receives plain data (unknown objects → str).
    result: dict[str, Any] = json.loads(json.dumps(raw, default=str))
    return result


def select_weights(tree: Any, patterns: Sequence[str] | str) -> dict[str, Any]:
    """Pick arrays from a pytree by regular expression on their dotted path, for histograms.

    Parameters
    ----------
    tree
        Any pytree (params dict, ``nnx.State``, …).
    patterns
        One regex or several; a leaf is kept when any pattern matches (``re.search``) its path,
        e.g. ``"blocks.0.attn"`` or ``r"mlp.*kernel"``.

    Returns
    -------
    dict
        ``{dotted.path: array}`` (arrays untouched — still on device; see
        :func:`~tjx.metrics.weights_to_host` to fetch them, named ``a/b/c``).
    """
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    compiled = [re.compile(p) for p in pats]
    out: dict[str, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = path_name(path, ".")
        if any(p.search(name) for p in compiled) and hasattr(leaf, "shape"):
            out[name] = leaf
    return out


class Logger:
    """Base logger: public methods convert to host values once, backends implement ``_write_*``.

    Use as a context manager or call :meth:`close`. Backends receive Python numbers (scalars),
    flat float32 numpy arrays (histograms) and strings (text).
    """

    name = "logger"

    def log_scalars(self, step: Any, metrics: Mapping[str, Any]) -> None:
        """Log scalars (python, numpy or jax; ``None`` values skipped) at ``step``."""
        self._write_scalars(*_fetch_scalars(step, metrics))

    def log_histograms(self, step: Any, values: Mapping[str, Any]) -> None:
        """Log value distributions (e.g. from :func:`select_weights`) at ``step``."""
        self._write_histograms(*_fetch_histograms(step, values))

    def log_weights(
        self, step: Any, tree: Any, patterns: Sequence[str] | str | None = None
    ) -> None:
        """Log the histogram of every array of a params pytree, named by its path.

        The names are :func:`~tjx.metrics.weights_to_host`'s (``blocks/0/attn/q/kernel``). In a
        multi-host run call it on **every** process, also those whose logger drops everything
        (``make_logger(primary_only=True)``): an array spanning processes is all-gathered, a
        collective they must all join.

        Parameters
        ----------
        step
            The step.
        tree
            A params pytree (pure dict, ``nnx.State``, ...).
        patterns
            Optional regexes on the path names; ``None`` logs every array.
        """
        self.log_histograms(step, weights_to_host(tree, patterns))

    def log_text(self, step: Any, key: str, text: str) -> None:
        """Log a text sample (e.g. generated text) under ``key`` at ``step``."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"text key must be a non-empty string; got {key!r}")
        if not isinstance(text, str):
            raise ValueError(f"text must be a string; got {type(text).__name__}")
        self._write_text(_to_step(jax.device_get(step)), key, text)

    def _write_scalars(self, step: int, scalars: dict[str, Scalar]) -> None:
        pass

    def _write_histograms(self, step: int, values: dict[str, np.ndarray]) -> None:
        pass

    def _write_text(self, step: int, key: str, text: str) -> None:
        pass

    def flush(self) -> None:
        """Push buffered output to its destination."""

    def close(self) -> None:
        """Flush and release files / runs. Idempotent."""

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MultiLogger(Logger):
    """Fan-out: converts each call's values once, then hands them to every child logger.

    A failing child does not stop the others from receiving the record; the first error is raised
    after all children were called.
    """

    name = "multi"

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def _each(self, method: str, *args: Any) -> None:
        first: BaseException | None = None
        for logger in self.loggers:
            try:
                getattr(logger, method)(*args)
            except Exception as err:  # re-raised below, after the others ran
                first = first or err
        if first is not None:
            raise first

    def _write_scalars(self, step: int, scalars: dict[str, Scalar]) -> None:
        self._each("_write_scalars", step, scalars)

    def _write_histograms(self, step: int, values: dict[str, np.ndarray]) -> None:
        self._each("_write_histograms", step, values)

    def _write_text(self, step: int, key: str, text: str) -> None:
        self._each("_write_text", step, key, text)

    def flush(self) -> None:
        self._each("flush")

    def close(self) -> None:
        self._each("close")

    def __len__(self) -> int:
        return len(self.loggers)
