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

A process killed while writing leaves at most a torn last line, without its newline. Readers skip
it; a logger that opens the log again (a resumed run) first cuts it off (or, when only the newline
is missing, ends the line), so its records never continue a torn line. A torn line inside a log is
what an older tjx left when it appended after one: :func:`read_jsonl` reads the whole record that
follows the torn part on that line; any other line that is not a record is damage, named by its
line number.

A resumed run goes back to its checkpoint's step: the records a run logged after it, before it
stopped (a kill between two saves), are the steps the resume trains again. Opened with
``rewind_after=STEP``, the logger first moves every record of a later step to the rewound log
beside it (``metrics.rewound.jsonl``, appended to: nothing is dropped), so the log holds each step
once, as the run that went on logged it (`rewind_jsonl`; the file is replaced whole, atomically).

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

__all__ = ["JSONL_NAME", "JsonlLogger", "read_jsonl", "rewind_jsonl", "rewound_path"]

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
    rewind_after
        A resumed run's step: the records of later steps already in the log are moved to the
        rewound log first (`rewind_jsonl`); ``rewound`` is how many. None: none moved.
    """

    name = "jsonl"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = False,
        bins: int = HISTOGRAM_BINS,
        upload_every: float = UPLOAD_EVERY,
        rewind_after: int | None = None,
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
        #: Records of steps after ``rewind_after`` moved to the rewound log on opening.
        self.rewound = 0 if rewind_after is None else rewind_jsonl(path, rewind_after)
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
        _end_torn_line(self.path)  # a killed writer's last line: appending would continue it
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


def rewound_path(path: str | os.PathLike[str]) -> str | Path:
    """Where `rewind_jsonl` moves a log's records: ``metrics.jsonl`` → ``metrics.rewound.jsonl``
    beside it (a URL stays a URL)."""
    if is_url(path):
        text = os.fspath(path)
        head, dot, tail = text.rpartition(".")
        return f"{head}.rewound.{tail}" if dot and "/" not in tail else f"{text}.rewound"
    local = Path(path)
    return local.with_name(f"{local.stem}.rewound{local.suffix}")


def rewind_jsonl(path: str | os.PathLike[str], after: int) -> int:
    """Move the records of steps after ``after`` from the JSONL log at ``path`` to the end of
    its rewound log (`rewound_path`), and return how many moved (0: the log is left untouched,
    also when there is none).

    A resumed run calls it with its checkpoint's step: what the run logged after that step,
    before it stopped, is trained again, and the log then holds each step once. The rewound
    records are appended to the rewound log (flushed to disk) before the log is replaced whole
    (a local log atomically, by a rename), so a crash in between leaves them in both places, never
    in neither. A torn last line (a killed writer's) is cut off first, as `JsonlLogger` does; a
    line that is not a record stays where it is.
    """
    if is_url(path):
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            return 0
    else:
        local = Path(path)
        _end_torn_line(local)
        try:
            data = local.read_bytes()
        except FileNotFoundError:
            return 0
    kept: list[bytes] = []
    moved: list[bytes] = []
    for line in data.splitlines(keepends=True):
        line = line if line.endswith(b"\n") else line + b"\n"
        record = _record(line) or _after_torn(line.rstrip(b"\n"))
        step = None if record is None else record.get("step")
        later = isinstance(step, int) and not isinstance(step, bool) and step > after
        (moved if later else kept).append(line)
    if not moved:
        return 0
    side = rewound_path(path)
    if isinstance(side, Path):
        with side.open("ab") as handle:
            handle.write(b"".join(moved))
            handle.flush()
            os.fsync(handle.fileno())
        temporary = side.with_name(f".{Path(path).name}.rewinding")
        with temporary.open("wb") as handle:
            handle.write(b"".join(kept))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    else:
        try:
            before = read_bytes(side)
        except FileNotFoundError:
            before = b""
        write_bytes(side, before + b"".join(moved))
        write_bytes(path, b"".join(kept))
    return len(moved)


#: How a record's line starts (`JsonlLogger` writes ``step`` first): where a whole record may
#: follow a torn one on a line an older tjx appended to.
_RECORD_START = b'{"step": '


def _end_torn_line(path: Path) -> None:
    """Make ``path`` end at a line's end: cut a torn last line off, or add the newline a whole
    last record lacks (the writer wrote it in one call, so the kill came just before it)."""
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        return
    with handle:
        size = handle.seek(0, os.SEEK_END)
        start, tail = size, b""
        while start > 0:  # back to the last newline, a block at a time
            step = min(start, 1 << 16)
            handle.seek(start - step)
            block = handle.read(step)
            cut = block.rfind(b"\n")
            if cut >= 0:
                start, tail = start - step + cut + 1, block[cut + 1 :] + tail
                break
            start, tail = start - step, block + tail
        if not tail:
            return  # empty, or ends with its newline
        if _record(tail) is not None:
            handle.write(b"\n")
        else:
            handle.truncate(start)


def _record(line: bytes) -> dict[str, Any] | None:
    """``line`` as a record (a JSON object), or ``None`` when it is not one."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _after_torn(line: bytes) -> dict[str, Any] | None:
    """The whole record an older tjx appended to a torn one on ``line``, if that is what the
    line holds (a record's start, cut short, then a whole record); else ``None``."""
    if not line.startswith(_RECORD_START):
        return None
    at = line.rfind(_RECORD_START)
    while at > 0:
        record = _record(line[at:])
        if record is not None:
            return record
        at = line.rfind(_RECORD_START, 0, at)
    return None


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL log written by :class:`JsonlLogger`.

    A torn last line (a crash mid-write: no newline ends it) is skipped; a line that holds a
    torn record and then a whole one (an older tjx appended after a crash) gives the whole one;
    any other line that is not a JSON object raises, naming it. Values the writer named in a
    ``"nonfinite"`` entry are floats again (``NaN``, ``inf``); bare ``NaN`` / ``Infinity`` tokens
    of older logs are read too.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a line other than a torn last one is not a JSON object (``<path>:<line>: ...``).
    """
    if is_url(path):
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"no JSONL log at {os.fspath(path)}") from None
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no JSONL log at {path}")
        data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the log ends with its newline, as the writer leaves it
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _record(line)
        if record is None:
            record = _after_torn(line)
        if record is None:
            raise ValueError(f"{path}:{i}: {_why_not(line)}")
        records.append(from_standard_json(record))
    last = _record(torn)  # a whole record that only lacks its newline counts
    if last is not None:
        records.append(from_standard_json(last))
    return records


def _why_not(line: bytes) -> str:
    """Why ``line`` is not a record, in a few words."""
    try:
        value = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return f"not UTF-8 ({err.reason})"
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err.msg})"
    return f"expected a JSON object, got {type(value).__name__}"
