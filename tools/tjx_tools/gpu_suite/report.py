"""The suite's results: one JSON document and its Markdown, rewritten after every section.

A GPU call is killed at its time limit, so nothing is kept only in memory: each section is saved
the moment it ends (atomically, so a kill mid-write leaves the previous file), and a section that
raises is recorded with its error and the suite goes on to the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; ``None`` cells print as an en dash, floats as given by the caller."""
    cells = [["–" if c is None else str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def fmt(x: float | None, spec: str = ".3g") -> str | None:
    """``format(x, spec)``, or None for a missing figure."""
    return None if x is None else format(x, spec)


@dataclass
class Section:
    """What one section measured: rows for JSON, a Markdown body for people, a status."""

    name: str
    status: str = "ok"  # ok | FAIL (a check failed) | error (it raised) | skipped
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    markdown: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Saves the whole report (set by ``Report.section``; not part of the results).
    saver: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def add_row(self, row: dict[str, Any]) -> None:
        """Append a finished row and save at once: a later crash or kill cannot lose it."""
        self.rows.append(row)
        if self.saver is not None:
            self.saver()

    @contextlib.contextmanager
    def cell(self, what: str) -> Iterator[None]:
        """One measurement: any exception in it fails the section with one note and the
        section goes on to the next cell (a kernel that does not compile is a finding)."""
        try:
            yield
        except Exception as exc:  # - every failure is a result; the next cell still runs
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            self.fail(f"{what}: {type(exc).__name__}: {first}")

    def fail(self, why: str) -> None:
        """Mark a failed check (the suite exits non-zero at the end) and say why."""
        self.status = "FAIL"
        self.notes.append(f"FAIL: {why}")
        print(f"gpu_suite: FAIL in {self.name}: {why}", flush=True)


@dataclass
class Report:
    """Results of one ``run``: metadata, sections in order, and the wall-clock budget."""

    out: Path
    smoke: bool
    budget_s: float
    meta: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Section] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def time_left(self) -> float:
        """Seconds left of the budget (negative once it is spent)."""
        return self.budget_s - (time.perf_counter() - self.started)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[Section]:
        """Run one section: time it, record an exception as its error, save either way."""
        sec = Section(name, saver=self.save)
        self.sections[name] = sec
        t0 = time.perf_counter()
        print(f"gpu_suite: {name} …", flush=True)
        try:
            yield sec
        except Exception as exc:  # a section's crash is a result; the next section still runs
            sec.status = "error"
            sec.notes.append(f"error: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        finally:
            sec.seconds = round(time.perf_counter() - t0, 1)
            self.save()
            print(f"gpu_suite: {name} {sec.status} in {sec.seconds} s", flush=True)

    @property
    def failed(self) -> bool:
        """Whether any section failed a check or raised."""
        return any(s.status in ("FAIL", "error") for s in self.sections.values())

    def to_json(self) -> dict[str, Any]:
        """The whole report as plain JSON data."""
        return {
            "meta": self.meta,
            "smoke": self.smoke,
            "sections": {
                n: {k: v for k, v in vars(s).items() if k != "saver"}
                for n, s in self.sections.items()
            },
        }

    def save(self) -> None:
        """Write results.json and results.md atomically."""
        self.out.mkdir(parents=True, exist_ok=True)
        doc = self.to_json()
        _atomic_write(self.out / RESULTS_JSON, json.dumps(doc, indent=1, default=str) + "\n")
        _atomic_write(self.out / RESULTS_MD, render_markdown([doc]))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def header(meta: dict[str, Any], smoke: bool) -> str:
    """The provenance line every table carries: date, device, driver, JAX version and, where the
    run recorded them (#68), the cuDNN and cuBLAS jax loaded."""
    line = (
        f"{meta.get('date', '?')} · {meta.get('device', '?')} · driver "
        f"{meta.get('driver') or 'n/a'} · jax {meta.get('jax', '?')}"
    )
    libs = meta.get("cuda_libraries") or {}
    for name in ("cudnn", "cublas"):
        if libs.get(f"{name}_get_version"):
            line += f" · {'cuDNN' if name == 'cudnn' else 'cuBLAS'} {libs[f'{name}_get_version']}"
    if smoke:
        line += " · **smoke run (CPU, tiny shapes): not performance figures**"
    return line


def render_markdown(docs: Sequence[dict[str, Any]], level: int = 2) -> str:
    """One Markdown report from one or more results documents (e.g. the two GPU calls).

    ``level`` is the heading level of the sections (BENCHMARKS.md nests them under a run).
    """
    parts: list[str] = []
    for doc in docs:
        parts.append(f"_{header(doc['meta'], bool(doc.get('smoke')))}_\n")
        for name, sec in doc["sections"].items():
            status = "" if sec["status"] == "ok" else f" — **{sec['status']}**"
            parts.append(f"{'#' * level} {name}{status} ({sec['seconds']} s)\n")
            if sec["markdown"]:
                parts.append(sec["markdown"] + "\n")
            parts.extend(f"- {note}" for note in sec["notes"])
            if sec["notes"]:
                parts.append("")
    return "\n".join(parts)


def load(out: Path) -> dict[str, Any]:
    """Read a results directory's JSON, with a clear error when it is not one."""
    path = out / RESULTS_JSON
    if not path.is_file():
        raise SystemExit(f"gpu_suite: {path} not found; pass the --out folder of a `run`")
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SystemExit(f"gpu_suite: {path} is not valid JSON ({err}); re-run the suite") from err
    if "meta" not in doc or "sections" not in doc:
        raise SystemExit(f"gpu_suite: {path} is not a gpu_suite results file")
    return doc
