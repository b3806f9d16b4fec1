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

The gated delta rule's measured times (``--part all``'s ``gated_delta`` section: the Pallas
kernels against XLA's scan, only when the kernels passed its correctness check) become the
device kind's ``gdelta-bf16`` timings, which ``auto`` needs before it takes the kernels.

Calibration (#68: the estimate stays within ±10 % of every measured case, refitted when a case
falls out): every train step the run measured (the step sections' rows, not the peers') is
appended to the calibration cases (`MEASURED_CASES`, which ``tools/calibration_fixture.py``
reads), then, where the deviceless CUDA compiler is installed (`deviceless_env`), that script
compiles them into tjx-metrics' fixture (``calibration_cases.json``: one deviceless compile each)
and the fold prints each case's calibrated estimate against its measurement, naming the ones
outside `CALIBRATION_BAND` and the refit's command (``tools/calibrate.py`` on the run's
profile); ``--no-fixture`` only appends. Where tjx-metrics offers a refit hook
(`CALIBRATION_HOOK`), the fold calls it with the run's folders; until then it says that none
was found. Everything the fold writes into BENCHMARKS.md is also printed.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tjx.kernels import LaunchDefaults
from tjx.kernels.launch import load_launch_tables, merge_launch_table, norm_kind
from tjx_tools.gpu_suite import attention, delta_rule, kernels, train_step
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
#: The measured cases ``tools/calibration_fixture.py`` reads, and the fixture it writes.
MEASURED_CASES = REPO / "tools/calibration_measured.json"
FIXTURE = REPO / "packages/tjx-metrics/tests/tjx_metrics_tests/calibration_cases.json"
#: The sections whose rows are train steps (``--part all``'s and ``--part train``'s).
STEP_SECTIONS = ("steps", "fp8", "search", "kernel_sets", "train_step")
#: #68's goal for the calibrated estimate: within ±10 % of every measured case.
CALIBRATION_BAND = 0.10
GDELTA_NOTE = "gated delta fwd+bwd timings: tjx gpu_suite gated_delta"


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
        found = dict(sec.get("summary", {}).get("timings") or {})
        if found or doc.get("smoke"):
            return found
        # ``--part all`` measures the kernels (tokamax's too) in its attention cell against
        # PyTorch, each checked there against the float32 reference (`versus_torch`): its
        # timings, at s 1,024 for head_dim 64 and s 4,096 for 128. A smoke run's are
        # interpreted kernels' on a CPU, never a device's.
        versus = doc["sections"].get("attention_vs_torch") or {}
        return dict(versus.get("summary", {}).get("timings") or {})
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
        kind = doc["meta"].get("device_kind")
        timings, kept = complete_buckets(measured_timings(doc), _timings(path, kind or ""))
        for line in kept:
            print(f"launch tables: {kind}: {line}")
        if timings and kind:
            # The device's note keeps the launches' source and says where the timings came from,
            # the gated delta rule's note after them (their timings stay).
            old = _source(path, kind)
            delta_note = old[old.index(GDELTA_NOTE) :] if GDELTA_NOTE in old else ""
            old = old.split(f"; {GDELTA_NOTE}")[0].split(GDELTA_NOTE)[0]
            launches = old.split(TIMINGS_NOTE)[0].rstrip("; ")
            seqs = (
                f"{attention.TIMING_SEQ}"
                if (doc["sections"].get("attention") or {}).get("rows")
                else "1024 at head_dim 64, 4096 at 128"
            )  # `measured_timings`' cells
            note = f"{TIMINGS_NOTE} {seqs}): tjx gpu_suite attention, "
            source = f"{launches}; " * bool(launches) + note + str(doc["meta"].get("date"))
            source += f"; {delta_note}" * bool(delta_note)
            merge_launch_table(path, kind, {}, source, timings=timings)
            kinds.append(kind)
        delta = delta_timings(doc)
        if delta and kind:  # the gated delta rule's: what its "auto" needs (#68)
            old = _source(path, kind).split(f"; {GDELTA_NOTE}")[0].split(GDELTA_NOTE)[0]
            note = f"{GDELTA_NOTE}, {doc['meta'].get('date')}"
            merge_launch_table(path, kind, {}, f"{old}; {note}" if old else note, timings=delta)
            kinds.append(kind)
    return sorted(set(kinds))


def complete_buckets(
    new: dict[str, Any], old: dict[str, dict[str, float]]
) -> tuple[dict[str, Any], list[str]]:
    """The buckets of ``new`` that may replace the table's: each must time every kernel the
    table's bucket of the same key timed. A kernel missing from a run (it failed there: tokamax
    on 2026-11-30) would otherwise drop out of ``auto``'s ranking because of the harness, not
    a measurement; such a bucket keeps the table's older timings, all of one run, and is said
    (second value: one line each)."""
    taken, kept = {}, []
    for key, times in new.items():
        missing = sorted(set(old.get(key, {})) - set(times))
        if missing:
            kept.append(f"{key} kept as it was: this run has no timing of {', '.join(missing)}")
        else:
            taken[key] = times
    return taken, kept


def _timings(path: Path, kind: str) -> dict[str, dict[str, float]]:
    """The measured ``timings`` of ``kind``'s table in ``path`` (empty when none)."""
    tables = load_launch_tables(path) if path.exists() else {}
    found = (t.timings for k, t in tables.items() if norm_kind(k) == norm_kind(kind))
    return {b: dict(v) for b, v in (next(found, None) or {}).items()}


def _source(path: Path, kind: str) -> str:
    """The note of ``kind``'s table in ``path`` ("" when none)."""
    tables = load_launch_tables(path) if path.exists() else {}
    return next((t.source for k, t in tables.items() if norm_kind(k) == norm_kind(kind)), "")


def delta_timings(doc: dict[str, Any]) -> dict[str, Any]:
    """The gated delta rule's launch-table timings a run measured (none unless both
    implementations were timed, which needs the kernels to have passed their check)."""
    sec = doc["sections"].get("gated_delta") or {}
    times = (sec.get("summary") or {}).get("timings") or {}
    both = {"xla", "pallas"}
    return {k: v for k, v in times.items() if k == delta_rule.BUCKET and set(v) >= both}


def device_key(doc: dict[str, Any]) -> str | None:
    """tjx-metrics' device table key of a run's device (a smoke run: the table entry it was
    estimated against), None for a device the table does not have."""
    from tjx import metrics

    if doc.get("smoke"):
        return train_step.SMOKE_DEVICE
    found = metrics.accelerator_of(str(doc["meta"].get("device_kind") or ""))
    return None if found is None else str(found.key)


def calibration_cases(docs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every train step the runs measured, as ``tools/calibration_fixture.py`` cases: name →
    config (a preset, or a file of the tree), ``--set``s, the measured median step, the device
    table key and where the figure is."""
    cases: dict[str, dict[str, Any]] = {}
    for doc in docs:
        key = device_key(doc)
        if key is None:
            continue
        date, device = doc["meta"].get("date"), doc["meta"].get("device")
        for name in STEP_SECTIONS:
            for row in (doc["sections"].get(name) or {}).get("rows") or []:
                if row.get("label") == "peer" or not row.get("median_step_s"):
                    continue
                label = f"{key} {date}: {row['config']} {row['label']}"
                sets = list(row.get("sets") or [])
                kernel = row.get("attention_kernel")
                if kernel and not any(s.startswith("model.attention_impl=") for s in sets):
                    # ``auto`` resolves by the launch table of the day (and by what is
                    # installed): the case compiles the kernel this row measured.
                    sets.append(f"model.attention_impl={kernel}")
                cases[label] = {
                    "config": row.get("config_arg") or row["config"],
                    "sets": sets,
                    "measured_s": float(row["median_step_s"]),
                    "device": key,
                    "source": f"tools/gpu_suite {date} on {device}: results.json section "
                              f"{name!r}, row {row['label']!r} (median step, each waited for)",
                }  # fmt: skip
    return cases


def append_cases(cases: dict[str, dict[str, Any]], path: Path) -> list[str]:
    """Add ``cases`` to the measured-cases file (a case of the same name is replaced); return
    their names."""
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.setdefault("cases", {}).update(cases)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return list(cases)


def deviceless_env() -> Path | None:
    """The deviceless CUDA compiler's packages (the folder tests-integration's ``_deviceless``
    installs: ``~/.cache/tjx/deviceless/jax<version>-cuda12``), None when not installed."""
    import jax

    root = Path(os.environ.get("TJX_DEVICELESS_CACHE") or Path.home() / ".cache/tjx/deviceless")
    folder = root / f"jax{jax.__version__}-cuda12"
    return folder if (folder / "tjx-deviceless.json").is_file() else None


def tokamax_folder() -> Path | None:
    """tokamax's scratch folder (tests-support's `tjx_tokamax_env`), None when it is not
    installed: a step that ran tokamax's attention (``auto`` takes it on an H200) compiles only
    with tokamax importable, so the fold's compile of the 2026-11-30 cases failed without it."""
    try:
        from tjx_tokamax_env import MARKER, cache_root  # pants: no-infer-dep
    except ImportError:  # tests-support is not on the path
        return None
    from tjx.kernels.tokamax_ops import TOKAMAX_VERSION

    folder = cache_root() / f"tokamax{TOKAMAX_VERSION}"
    return folder if (folder / MARKER).is_file() else None


def compile_cases(names: Sequence[str], fixture: Path, env_dir: Path) -> None:
    """``tools/calibration_fixture.py FIXTURE --only NAME ...``: the cases compiled, deviceless
    (tokamax's folder last on the path where installed: the project's packages come first)."""
    script = REPO / "tools" / "calibration_fixture.py"
    tokamax = tokamax_folder()
    paths = [str(env_dir), *(os.path.abspath(p or os.curdir) for p in sys.path)]
    paths += [str(tokamax)] if tokamax is not None else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "JAX_PLATFORMS": "cpu"}
    argv = [sys.executable, str(script), str(fixture), *(a for n in names for a in ("--only", n))]
    subprocess.run(argv, check=True, env=env, cwd=REPO)


def calibration_check(names: Sequence[str], fixture: Path) -> tuple[str, list[str]]:
    """The calibrated estimate of each named case of ``fixture`` against its measurement: a
    Markdown table, and the names outside `CALIBRATION_BAND`."""
    from tjx.metrics import accelerator
    from tjx.metrics.calibration import KernelRow, calibrated_seconds, calibration_for

    data = json.loads(fixture.read_text(encoding="utf-8")) if fixture.is_file() else {}
    cases = data.get("cases", {})
    rows, out = [], []
    for name in names:
        case = cases.get(name)
        if case is None:
            rows.append([name, None, None, None, "not compiled into the fixture"])
            continue
        key = case.get("device", data.get("device"))  # the first cases name it once, above
        device = accelerator(key)
        cal = calibration_for(device)
        if cal is None:
            rows.append([name, f"{case['measured_s'] * 1e3:.2f}", None, None,
                         f"no calibration for {key}"])  # fmt: skip
            continue
        kernels_ = [KernelRow.from_json(r) for r in case["kernels"]]
        got = calibrated_seconds(kernels_, device, cal).seconds
        ratio = got / case["measured_s"]
        inside = abs(ratio - 1.0) <= CALIBRATION_BAND
        if not inside:
            out.append(name)
        rows.append([name, f"{case['measured_s'] * 1e3:.2f}", f"{got * 1e3:.2f}", f"{ratio:.2f}",
                     "within ±10 %" if inside else "**outside ±10 %: refit**"])  # fmt: skip
    table = md_table(["case", "measured ms", "calibrated ms", "calibrated / measured", ""], rows)
    return table, out


def fold(
    outs: Sequence[Path],
    *,
    benchmarks: Path = BENCHMARKS,
    launch_tables: Path = LAUNCH_TABLES,
    allow_smoke: bool = False,
    tables: Sequence[Path] = (),
    measured_cases: Path = MEASURED_CASES,
    fixture: Path | None = FIXTURE,
) -> str:
    """Fold the runs in ``outs`` (and the JSON-lines ``tables`` of the same session) into
    ``benchmarks`` and ``launch_tables``, their train steps into ``measured_cases`` and, where
    the deviceless compiler is installed and ``fixture`` is given, into the calibration fixture
    (module doc); return the block key."""
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
    names = append_cases(calibration_cases(docs), measured_cases)
    check = fold_fixture(names, fixture, outs, docs)
    if check:
        body += f"\n#### calibration: the estimate against each step measured here\n\n{check}\n"
    benchmarks.write_text(fold_markdown(text, key, body), encoding="utf-8")
    print(body)
    kinds = fold_launch_tables(docs, launch_tables)
    print(f"folded {key} into {benchmarks}; launch tables for {kinds or 'no device'}; "
          f"{len(names)} measured steps into {measured_cases}")  # fmt: skip
    calibrate(outs)
    return key


def fold_fixture(
    names: Sequence[str], fixture: Path | None, outs: Sequence[Path], docs: Sequence[dict]
) -> str:
    """The measured cases compiled into ``fixture`` and checked (module doc): the check's table
    and what to do about the cases outside the band; "" when not compiled (said why)."""
    env_dir = deviceless_env()
    command = "python tools/calibration_fixture.py " f"{FIXTURE.relative_to(REPO)} " + " ".join(
        f"--only {n!r}" for n in names
    )
    if not names:
        return ""
    smoke = any(d.get("smoke") for d in docs)  # a smoke run's steps are a harness check
    if fixture is None or env_dir is None or smoke:
        why = ("--no-fixture" if fixture is None else "a smoke run" if smoke else
               "no deviceless CUDA compiler installed")  # fmt: skip
        print(f"calibration fixture: not compiled ({why}); with the deviceless packages on "
              f"PYTHONPATH: {command}")  # fmt: skip
        return ""
    try:
        compile_cases(names, fixture, env_dir)
    except subprocess.CalledProcessError as err:  # the cases stay appended: compile them later
        print(f"calibration fixture: the compile failed (exit {err.returncode}; its output "
              f"above); the cases are in the measured cases; again: {command}")  # fmt: skip
        return ""
    table, outside = calibration_check(names, fixture)
    if outside:
        profile = next((o / train_step.PROFILE for o in outs
                        if (o / train_step.PROFILE).is_file()), None)  # fmt: skip
        first = next(iter(d for d in docs if (d["sections"].get("steps") or {}).get("rows")), None)
        row = ((first or {}).get("sections", {}).get("steps", {}).get("rows") or [{}])[0]
        table += (f"\n\n{len(outside)} case(s) outside ±{CALIBRATION_BAND:.0%}: refit, e.g. "
                  f"`python tools/calibrate.py {profile} --device {device_key(docs[0])} "
                  f"--plan-config {row.get('config_arg', 'gpt2_small')} "
                  f"--step-s {row.get('median_step_s')} --out packages/tjx-metrics/src/tjx/"
                  "metrics/calibrations.json`, then recompile the fixture.")  # fmt: skip
    return table
