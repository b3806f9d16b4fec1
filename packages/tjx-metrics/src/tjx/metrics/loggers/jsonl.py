"""JSONL logger: one JSON object per line, appended (a resumed run continues the same file).

Record shapes (``time`` is Unix seconds):

* scalars: ``{"step": 100, "time": 1.7e9, "loss": 3.2, "learning_rate": 0.0003}``
* histograms: ``{"step": 100, "time": ..., "histograms": {"w": {"count", "nonfinite", "mean",
  "std", "min", "max", "bin_edges", "counts"}}}`` — ``numpy.histogram`` of the finite values in
  ``bins`` (64) equal-width bins, edges ``bins + 1`` floats (see
  :func:`~tjx.metrics.loggers.histograms.histogram_summary`)
* text: ``{"step": 100, "time": ..., "text": {"sample": "..."}}``

Every line is standard JSON (jq, browsers and strict parsers read it). A diverged loss must stay
visible in the log, so a non-finite scalar is written as ``null`` and named, with what it was, in
the record's ``"nonfinite"`` entry (see :mod:`tjx.core.standard_json`)::

    {"step": 7, "time": 1.7e9, "loss": null, "nonfinite": {"loss": "NaN"}}

:func:`read_jsonl` gives the record back as logged (``loss`` NaN), also from logs written before,
whose lines held bare ``NaN`` / ``Infinity`` tokens.

In object storage (a ``gs://`` / ``s3://`` path) nothing can be appended: the logger keeps the
log's text in memory (a resumed run first reads the object back) and writes it as one whole
object, at most every ``upload_every`` seconds (60 by default) when a record came, and at every
``flush()`` and ``close()`` (the trainer flushes at each checkpoint and at the end). A reader sees
the previous version or the new one, never half a line; a crash loses the records since the last
upload (at most ``upload_every`` seconds of them; a local log loses at most a torn last line).
Each upload rewrites the whole log: ~200 bytes a record, so a 100,000-record log is ~20 MB a
minute, which a store takes in well under a second.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from tjx.core.standard_json import NONFINITE_KEY, dumps_json, from_standard_json
from tjx.metrics.loggers.base import Logger, Scalar
from tjx.metrics.loggers.histograms import HISTOGRAM_BINS, histogram_summary
from tjx.metrics.loggers.urls import is_url, read_bytes, write_bytes

__all__ = ["JSONL_NAME", "JsonlLogger", "read_jsonl"]

#: The log's file name in a run's folder (``make_logger``'s ``jsonl_name`` default).
JSONL_NAME = "metrics.jsonl"
#: Seconds between two uploads of a log in object storage (see the module docstring).
UPLOAD_EVERY = 60.0


class JsonlLogger(Logger):
    """Append records to ``path`` (created with its parent folders), or keep them for a
    ``gs://`` / ``s3://`` object written whole (see the module docstring).

    Parameters
    ----------
    path
        The ``.jsonl`` file, or a ``gs://`` / ``s3://`` URL.
    fsync
        Also ``os.fsync`` after each record (durable across power loss; slower). Local only.
    bins
        Equal-width bins of each histogram record.
    upload_every
        Object storage: the most seconds between two uploads while records come.
    """

    name = "jsonl"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = False,
        bins: int = HISTOGRAM_BINS,
        upload_every: float = UPLOAD_EVERY,
    ) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1; got {bins}")
        self.bins = bins
        self.fsync = fsync
        self.upload_every = upload_every
        self._file: IO[str] | None = None
        self._lines: list[str] | None = None
        self._pending = False
        self._uploaded = time.monotonic()
        if is_url(path):
            self.path: Any = os.fspath(path)
            try:
                text = read_bytes(self.path).decode("utf-8")
            except FileNotFoundError:
                text = ""
            # A torn last line cannot be in an object; keep what is there, whole lines.
            self._lines = [line + "\n" for line in text.splitlines()]
            return
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def _upload(self) -> None:
        assert self._lines is not None
        write_bytes(self.path, "".join(self._lines).encode("utf-8"))
        self._pending, self._uploaded = False, time.monotonic()

    def _write(self, record: dict[str, Any]) -> None:
        if self._lines is not None:
            self._lines.append(dumps_json(record) + "\n")
            self._pending = True
            if time.monotonic() - self._uploaded >= self.upload_every:
                self._upload()
            return
        if self._file is None:
            raise ValueError(f"JsonlLogger for {self.path} is closed")
        # One write call per line: a crash leaves at most one torn *last* line (readers skip it).
        self._file.write(dumps_json(record) + "\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def _write_scalars(self, step: int, scalars: dict[str, Scalar]) -> None:
        clash = {"step", "time", "histograms", "text", NONFINITE_KEY} & set(scalars)
        if clash:
            raise ValueError(f"metric names {sorted(clash)} are reserved in the JSONL log")
        self._write({"step": step, "time": time.time(), **scalars})

    def _write_histograms(self, step: int, values: dict[str, np.ndarray]) -> None:
        summary = {key: histogram_summary(arr, self.bins) for key, arr in values.items()}
        self._write({"step": step, "time": time.time(), "histograms": summary})

    def _write_text(self, step: int, key: str, text: str) -> None:
        self._write({"step": step, "time": time.time(), "text": {key: text}})

    def flush(self) -> None:
        if self._lines is not None and self._pending:
            self._upload()
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        self.flush()
        self._lines = None
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL log written by :class:`JsonlLogger`.

    A torn last line (a crash mid-write) is skipped; a malformed line elsewhere raises. Values
    the writer named in a ``"nonfinite"`` entry are floats again (``NaN``, ``inf``); bare
    ``NaN`` / ``Infinity`` tokens of older logs are read too.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a line other than the last is not a JSON object.
    """
    if is_url(path):
        try:
            lines = read_bytes(path).decode("utf-8").splitlines()
        except FileNotFoundError:
            raise FileNotFoundError(f"no JSONL log at {os.fspath(path)}") from None
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no JSONL log at {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                break  # torn final line from an interrupted write
            raise ValueError(f"{path}:{i + 1}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{i + 1}: expected a JSON object, got {type(record).__name__}")
        records.append(from_standard_json(record))
    return records
