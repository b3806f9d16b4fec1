"""Write the measured cases tjx-metrics' calibration test checks: each case's kernel summary.

The test (``tjx_metrics_tests/test_calibration.py``) checks that the calibrated estimate of every
measured case lies within ±15 % of its measurement, on the device it was measured on (H100 cases,
and H200 ones priced with the constants ``calibration_for("h200")`` gives). A deviceless compile
of gpt2_small costs 30–90 s on a small machine, so CI cannot compile the cases: this script runs the
trainer's own ``--plan DEVICE`` for each (``python -m trainer --config gpt2_small --plan h100
--set ...``) and keeps what the model consumes, the plan JSON's ``estimate.kernel_summary``
(identical kernels merged, their FLOPs, bytes and launches: ~10 KB a case, not the HLO)::

    PYTHONPATH=$HOME/.cache/tjx/deviceless/jax0.10.2-cuda12:$(source tools/pythonpath.sh; \\
        tjx_pythonpath $PWD) JAX_PLATFORMS=cpu python tools/calibration_fixture.py \\
        packages/tjx-metrics/tests/tjx_metrics_tests/calibration_cases.json [--only NAME]

One compile at a time (each takes ~3 GB); ``--only`` redoes one case and keeps the others. The
measured times come from ``shared/gpu-h100-2026-11-25/`` (``t/results.json``'s train_step rows,
``tjx_more.jsonl``): the median step of the suite's throughput rows, jax 0.11.2 on one H100 80GB
HBM3; the H200 cases from ``docs/gpu/h200-2026-11-26/steps.jsonl``. Add a case here when a GPU
run measures one: ``tools/gpu_suite fold`` does it for every train step a suite run measured,
appending them to `MEASURED` (``tools/calibration_measured.json``: name → config, ``--set``s,
measured median step, device, source), which this script reads beside the cases below, and then
runs this script ``--only`` on them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FLAT_RUN = "docs/gpu/h100-2026-11-25-flat/quick.jsonl (sync_ms)"
H200_RUN = "docs/gpu/h200-2026-11-26/steps.jsonl (sync_ms)"
H100_RUN2 = "docs/gpu/h100-2026-11-26/steps.jsonl (sync_ms)"
H100_SWEEP = "docs/gpu/h100-2026-11-26/sweep.jsonl (sync_ms)"


@dataclass(frozen=True)
class Case:
    """A measured step: the trainer's ``--set`` overrides of ``config``, the median of the steps
    each waited for (seconds), where that figure is, and the device it was measured on."""

    sets: list[str]
    measured_s: float
    source: str
    device: str = "h100"
    config: str = "gpt2_small"


#: name: (--set overrides, measured median step seconds, where it was measured), all on an H100.
H100_CASES: dict[str, tuple[list[str], float, str]] = {
    "auto b16 (cuDNN)": ([], 0.0471, "t/results.json train_step 'auto'"),
    "pallas b16": (["model.attention_impl=pallas"], 0.0468, "t/results.json train_step 'pallas'"),
    "xla b16": (["model.attention_impl=xla"], 0.0871, "t/results.json train_step 'xla'"),
    "auto b16 + fused CE": (
        ["model.cross_entropy_impl=pallas"],
        0.149,
        "t/results.json train_step 'auto + fused CE (pallas)'",
    ),
    "whole logits b16": (["train.chunked_ce=false"], 0.0574, "tjx_more.jsonl 'b16 plain CE'"),
    "auto b32": (["data.batch_size=32"], 0.0862, "tjx_more.jsonl 'b32'"),
    "auto b64": (["data.batch_size=64"], 0.153, "tjx_more.jsonl 'b64'"),
    # #51's second H100 session (docs/gpu/h100-2026-11-25-flat/quick.jsonl, `sync_ms`: each step
    # waited for, as above): the flat optimizer and bf16 logits, not in the fit (the profile
    # above is of the per-leaf step), so these test the model on programs it was not fitted to.
    "cudnn b16, per-leaf optimizer, f32 logits": (
        ["model.attention_impl=cudnn", "optimizer.flat_update=off",
         "model.precision.logits_dtype=float32"],
        0.04626,
        FLAT_RUN,
    ),
    "cudnn b16, flat optimizer, f32 logits": (
        ["model.attention_impl=cudnn", "model.precision.logits_dtype=float32"], 0.04300, FLAT_RUN
    ),
    "cudnn b16, flat optimizer, bf16 logits": (["model.attention_impl=cudnn"], 0.04278, FLAT_RUN),
    "pallas b16, flat optimizer, bf16 logits": (
        ["model.attention_impl=pallas"], 0.04172, FLAT_RUN
    ),
}  # fmt: skip
CASES: dict[str, Case] = {name: Case(*spec) for name, spec in H100_CASES.items()}
# The H200 run (2026-11-26): the parameters held as flat buffers (the trainer since then), priced
# with the H100's constants on the H200's peaks (`calibration_for("h200")`), never fitted on.
CASES["h200: pallas b16, flat params"] = Case(
    ["model.attention_impl=pallas"], 0.03872, H200_RUN, "h200"
)
CASES["h200: cudnn b16, flat params"] = Case(
    ["model.attention_impl=cudnn"], 0.03928, H200_RUN, "h200"
)
CASES["h200: llama_small, flat params"] = Case([], 0.03644, H200_RUN, "h200", "llama_small")
# The second H100 run (2026-11-26): the trainer at 7745d0c + #51's column sums and stacked q/k/v
# backward (tjx-nn 0.22), never fitted on.
CASES["h100 2026-11-26: pallas b16"] = Case(["model.attention_impl=pallas"], 0.03954, H100_RUN2)
CASES["h100 2026-11-26: cudnn b16"] = Case(["model.attention_impl=cudnn"], 0.04054, H100_SWEEP)
CASES["h100 2026-11-26: llama_small"] = Case([], 0.03743, H100_RUN2, "h100", "llama_small")
#: The cases GPU suite runs measured, appended by ``tools/gpu_suite fold`` (module doc).
MEASURED = Path(__file__).resolve().with_name("calibration_measured.json")


def measured_cases(path: Path = MEASURED) -> dict[str, Case]:
    """The suite's measured cases (`MEASURED`): name → `Case` (none when the file is absent)."""
    if not path.is_file():
        return {}
    found = json.loads(path.read_text(encoding="utf-8")).get("cases", {})
    return {
        name: Case(list(c["sets"]), float(c["measured_s"]), c["source"], c["device"], c["config"])
        for name, c in found.items()
    }


CASES.update(measured_cases())
MEASUREMENT = (
    "shared/gpu-h100-2026-11-25 (1 × H100 80GB HBM3, jax 0.11.2, 2026-11-25); "
    "docs/gpu/h200-2026-11-26 (1 × H200, jax 0.11.2, 2026-11-26); "
    "docs/gpu/h100-2026-11-26 (1 × H100 80GB HBM3, jax 0.11.2, 2026-11-26)"
)


def plan_case(case: Case) -> dict:
    """The trainer's ``--plan DEVICE`` JSON of the case's config with its ``--set`` overrides."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plan.json"
        argv = [sys.executable, "-m", "trainer", "--config", case.config, "--plan", case.device,
                "--plan-json", str(out)]  # fmt: skip
        for s in case.sets:
            argv += ["--set", s]
        subprocess.run(argv, check=True, env=os.environ)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the fixture JSON to write")
    parser.add_argument("--only", action="append", default=[], help="redo only this case")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(CASES))
    if unknown:
        print(f"--only: unknown case {unknown[0]!r}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    old = json.loads(args.out.read_text()) if args.out.exists() else {"cases": {}}
    cases = dict(old.get("cases", {}))
    for name, case in CASES.items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        plan = plan_case(case)
        est = plan["estimate"]
        cases[name] = {
            "sets": case.sets,
            "measured_s": case.measured_s,
            "source": case.source,
            "device": case.device,
            "config": case.config,
            "attention": plan["attention"]["kernel"],
            "changes": plan["train"]["changes"],
            "launches": est["launches"],
            "roofline_s": est["roofline_seconds"],
            "kernels": est["kernel_summary"],
        }
        print(f"{name}: {len(est['kernel_summary'])} rows, {est['launches']} launches, "
              f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
        args.out.write_text(_dump({"measurement": MEASUREMENT, "device": "h100", "cases": cases}))
    return 0


def _dump(data: dict) -> str:
    """One kernel row a line: the fixture stays readable and diffs by kernel."""
    lines = ["{", f' "measurement": {json.dumps(data["measurement"])},',
             f' "device": {json.dumps(data["device"])},', ' "cases": {']  # fmt: skip
    names = list(data["cases"])
    for i, name in enumerate(names):
        case = dict(data["cases"][name])
        rows = case.pop("kernels")
        head = json.dumps(case)[1:-1]
        lines.append(f'  {json.dumps(name)}: {{{head}, "kernels": [')
        last = len(rows) - 1
        lines += [f"   {json.dumps(r)}{',' if j < last else ''}" for j, r in enumerate(rows)]
        lines.append("  ]}" + ("," if i < len(names) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
