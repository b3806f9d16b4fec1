"""Fold a GPU run's results into BENCHMARKS.md and its tuned launches into tjx-kernels' table.

One run (one or more ``--out`` folders of the same session: the suite takes two device calls)
becomes one block in BENCHMARKS.md's "GPU suite results" section (made at the end of the page the
first time), between markers naming its date and device; folding the same run again replaces its
block, a new run is added above the older ones.
Smoke results are refused (they are not performance figures) unless a test asks for them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tjx.kernels import LaunchDefaults
from tjx.kernels.launch import merge_launch_table
from tjx_tools.gpu_suite.report import load, render_markdown

REPO = Path(__file__).resolve().parents[3]
BENCHMARKS = REPO / "BENCHMARKS.md"
LAUNCH_TABLES = REPO / "packages/tjx-kernels/src/tjx/kernels/launch_tables.json"
SECTION = "## GPU suite results"
INTRO = (
    'Each block below is one run of `tools/gpu_suite` on a lent GPU (see "GPU suite" above for '
    "the recipe), folded in by `tools/gpu_suite fold`. Every figure was measured in that run."
)
MARKER = "<!-- gpu_suite results: newest first -->"


def run_key(docs: Sequence[dict[str, Any]]) -> str:
    """The block's identity: the first document's date (to the day) and device."""
    meta = docs[0]["meta"]
    return f"{meta['date'][:10]} {meta['device']}"


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
        timings = doc["sections"].get("attention", {}).get("summary", {}).get("timings")
        kind = doc["meta"].get("device_kind")
        if timings and kind:
            source = f"tjx gpu_suite attention, {doc['meta'].get('date')}"
            merge_launch_table(path, kind, {}, source, timings=timings)
            kinds.append(kind)
    return sorted(set(kinds))


def fold(
    outs: Sequence[Path],
    *,
    benchmarks: Path = BENCHMARKS,
    launch_tables: Path = LAUNCH_TABLES,
    allow_smoke: bool = False,
) -> str:
    """Fold the runs in ``outs`` into ``benchmarks`` and ``launch_tables``; return the block key."""
    docs = [load(out) for out in outs]
    if not allow_smoke and any(doc.get("smoke") for doc in docs):
        raise SystemExit(
            "gpu_suite fold: these are smoke results (CPU, tiny shapes), not figures to publish; "
            "fold the --out folders of a GPU run"
        )
    key = run_key(docs)
    text = benchmarks.read_text(encoding="utf-8") if benchmarks.is_file() else "# Benchmarks\n"
    benchmarks.write_text(
        fold_markdown(text, key, render_markdown(docs, level=4)), encoding="utf-8"
    )
    kinds = fold_launch_tables(docs, launch_tables)
    print(f"folded {key} into {benchmarks}; launch tables for {kinds or 'no device'}")
    return key
