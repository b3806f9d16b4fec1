"""Fold a GPU run's results into BENCHMARKS.md and its tuned launches into tjx-kernels' table.

One run (one or more ``--out`` folders of the same session: the suite takes several device calls)
becomes one block in BENCHMARKS.md's "GPU suite results" section (made at the end of the page the
first time), between markers naming its first folder's date (to the minute) and device; folding
the same folders again replaces their block, a new run is added above the older ones.
Smoke results are refused (they are not performance figures) unless a test asks for them.

``--table FILE.jsonl`` (repeatable) adds a JSON-lines file measured beside the suite in the same
session (a peer's runs, more shapes through ``tools/bench_train.py``) to the block as a table; lines
that are not JSON objects (a peer's own chatter) are left out. The attention ``timings`` ``auto``
ranks by are recomputed from the attention rows with the suite's current rule
(`attention.timings`), so an older run folds under the rule of today.

Calibration: where tjx-metrics offers a refit of its roofline on a measured run (`calibrate`), the
fold calls it with the run's folders; until then it says that none was found.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tjx.kernels import LaunchDefaults
from tjx.kernels.launch import load_launch_tables, merge_launch_table, norm_kind
from tjx_tools.gpu_suite import attention, kernels
from tjx_tools.gpu_suite.report import load, md_table, render_markdown

REPO = Path(__file__).resolve().parents[3]
BENCHMARKS = REPO / "BENCHMARKS.md"
LAUNCH_TABLES = REPO / "packages/tjx-kernels/src/tjx/kernels/launch_tables.json"
SECTION = "## GPU suite results"
INTRO = (
    'Each block below is one run of `tools/gpu_suite` on a lent GPU (see "GPU suite" above for '
    "the recipe), folded in by `tools/gpu_suite fold`. Every figure was measured in that run."
)
MARKER = "<!-- gpu_suite results: newest first -->"
#: How a device's launch-table note introduces where its ``timings`` came from.
TIMINGS_NOTE = "fwd+bwd timings (causal, seq"
#: Where the fold looks for tjx-metrics' refit of the roofline on a measured run (module, name):
#: ``refit(outs: Sequence[Path]) -> str`` (a one-line summary). Owned by tjx-metrics' calibration.
CALIBRATION_HOOK = ("tjx.metrics.calibration", "refit_from_suite")


def run_key(docs: Sequence[dict[str, Any]]) -> str:
    """The block's identity: the first document's date (to the minute: two GPU sessions of one day
    are two blocks) and device."""
    meta = docs[0]["meta"]
    return f"{meta['date']} {meta['device']}"


def fold_markdown(text: str, key: str, body: str) -> str:
    """``text`` with the block for ``key`` replaced, or added at the top of the GPU section."""
    begin, end = f"<!-- gpu_suite {key} begin -->", f"<!-- gpu_suite {key} end -->"
    block = f"{begin}\n### {key}\n\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    if MARKER not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{INTRO}\n\n{MARKER}\n"
    return text.replace(MARKER, f"{MARKER}\n\n{block}", 1)


def measured_timings(doc: dict[str, Any]) -> dict[str, Any]:
    """The attention ``timings`` of a run, from its rows under `attention.timings`' current rule
    (kernels found correct by the same run's kernels section); the saved summary's if no rows."""
    sec = doc["sections"].get("attention") or {}
    rows = sec.get("rows") or []
    if not rows:
        return dict(sec.get("summary", {}).get("timings") or {})
    checked = (doc["sections"].get("kernels") or {}).get("rows") or []
    dtype = "float32" if doc.get("smoke") else "bfloat16"
    return attention.timings(rows, kernels.correct_kernels(checked), dtype)


def jsonl_table(path: Path) -> str:
    """A JSON-lines file as a Markdown table (columns: every key, in first-seen order); lines
    that are not JSON objects are left out."""
    records: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    if not records:
        raise SystemExit(f"gpu_suite fold: {path} holds no JSON object lines")
    keys = list(dict.fromkeys(k for r in records for k in r))

    def cell(v: Any) -> Any:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 1000 else f"{v:.4g}"
        return v

    return md_table(keys, [[cell(r.get(k)) for k in keys] for r in records])


def calibrate(outs: Sequence[Path], hook: tuple[str, str] = CALIBRATION_HOOK) -> str | None:
    """Call tjx-metrics' refit (`CALIBRATION_HOOK`) on the run's folders when it exists; return
    its summary line, or None (said) when tjx-metrics has none yet."""
    module, name = hook
    try:
        refit: Callable[[Sequence[Path]], str] | None = getattr(
            importlib.import_module(module), name, None
        )
    except ImportError:
        refit = None
    if refit is None:
        print(f"calibration: no {module}.{name} yet; the roofline is not refitted")
        return None
    line = refit(outs)
    print(f"calibration: {line}")
    return line


def fold_launch_tables(docs: Sequence[dict[str, Any]], path: Path) -> list[str]:
    """Merge every tuned launch table of ``docs`` into ``path``; return the device kinds."""
    kinds = []
    for doc in docs:
        tune = doc["sections"].get("tune")
        if not tune or tune["status"] != "ok":
            continue
        for kind, table in tune["summary"]["launch_table"]["devices"].items():
            entries = {k: LaunchDefaults(**v) for k, v in table["entries"].items()}
            merge_launch_table(path, kind, entries, table["source"])
            kinds.append(kind)
    for doc in docs:  # the kernels' measured times: what "auto" ranks by on that device kind
        timings = measured_timings(doc)
        kind = doc["meta"].get("device_kind")
        if timings and kind:
            # The device's note keeps the launches' source and says where the timings came from.
            tables = load_launch_tables(path) if path.exists() else {}
            old = next((t.source for k, t in tables.items() if norm_kind(k) == norm_kind(kind)), "")
            launches = old.split(TIMINGS_NOTE)[0].rstrip("; ")
            note = f"{TIMINGS_NOTE} {attention.TIMING_SEQ}): tjx gpu_suite attention, "
            source = f"{launches}; " * bool(launches) + note + str(doc["meta"].get("date"))
            merge_launch_table(path, kind, {}, source, timings=timings)
            kinds.append(kind)
    return sorted(set(kinds))


def fold(
    outs: Sequence[Path],
    *,
    benchmarks: Path = BENCHMARKS,
    launch_tables: Path = LAUNCH_TABLES,
    allow_smoke: bool = False,
    tables: Sequence[Path] = (),
) -> str:
    """Fold the runs in ``outs`` (and the JSON-lines ``tables`` of the same session) into
    ``benchmarks`` and ``launch_tables``; return the block key."""
    docs = [load(out) for out in outs]
    if not allow_smoke and any(doc.get("smoke") for doc in docs):
        raise SystemExit(
            "gpu_suite fold: these are smoke results (CPU, tiny shapes), not figures to publish; "
            "fold the --out folders of a GPU run"
        )
    key = run_key(docs)
    text = benchmarks.read_text(encoding="utf-8") if benchmarks.is_file() else "# Benchmarks\n"
    body = render_markdown(docs, level=4)
    for table in tables:
        body += f"\n#### {table.name} (measured in the same session)\n\n{jsonl_table(table)}\n"
    benchmarks.write_text(fold_markdown(text, key, body), encoding="utf-8")
    kinds = fold_launch_tables(docs, launch_tables)
    print(f"folded {key} into {benchmarks}; launch tables for {kinds or 'no device'}")
    calibrate(outs)
    return key
