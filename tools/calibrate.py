"""Refit tjx-metrics' calibrated step-time model on a GPU profile: one command per GPU run.

``tjx.metrics.calibration_fit.refit`` does the work (read the trace, match its kernels to the
profiled step's HLO, fit each kernel class's launch floor and achieved rates, set the step
overhead against the measured step); this script prices the program's own kernels as the plan
does (tjx-kernels' ``roofline_costs``: a Pallas flash kernel's grid says what it reads) and
writes the device's entry of ``calibrations.json``, keeping the other devices'::

    PYTHONPATH=$HOME/.cache/tjx/deviceless/jax0.10.2-cuda12:$(source tools/pythonpath.sh; \\
        tjx_pythonpath $PWD) JAX_PLATFORMS=cpu \\
    python tools/calibrate.py ../shared/gpu-h100-2026-11-25/t/profile.tar.gz --device h100 \\
        --plan-config gpt2_small --plan-set model.attention_impl=pallas --step-s 0.0468 \\
        --kernels-results ../shared/gpu-h100-2026-11-25/k/results.json \\
        --measurement "the H100 profile of 2026-11-25 (...)" \\
        --out packages/tjx-metrics/src/tjx/metrics/calibrations.json

The profile's ``xplane.pb`` carries the step's optimized HLO as the GPU compiled it (used when
neither ``--hlo FILE`` nor ``--plan-config`` is given). The shipped constants are fitted against
the *deviceless* compile of the profiled configuration, the program a plan prices
(``--plan-config`` and its ``--plan-set`` settings: the trainer's ``--plan`` with XLA's dump of
the optimized step), so what the deviceless compiler does differently (untuned Triton GEMMs where
the GPU autotuned cuBLAS, fusions of another XLA release) is absorbed by the fit.
``--kernels-results`` fits cuDNN attention on the kernel part's timings when the profiled step
ran another kernel. ``--step-s`` is the benchmark's median step of the profiled configuration
(``results.json``'s train_step row): the step overhead is what it spends beyond the fitted
kernels; without it, the profile's own step period.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path


def deviceless_hlo(device: str, config: str, sets: list[str]) -> str:
    """The optimized HLO of ``config``'s train step as ``--plan DEVICE`` compiles it (XLA's own
    dump of the program: ``*jit_train_step*after_optimizations.txt``)."""
    with tempfile.TemporaryDirectory() as tmp:
        flags = f"--xla_dump_to={tmp} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=train_step"
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
        argv = [sys.executable, "-m", "trainer", "--config", config, "--plan", device]
        for s in sets:
            argv += ["--set", s]
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
        found = sorted(Path(tmp).glob("*jit_train_step*after_optimizations.txt"))
        if not found:
            raise ValueError(f"the plan of {config} dumped no optimized train step")
        return found[0].read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="profile folder, its .tar.gz, or trace file")
    parser.add_argument("--device", required=True, help="device table key (h100, h200...)")
    parser.add_argument("--out", type=Path, required=True, help="calibrations.json to update")
    parser.add_argument("--hlo", type=Path, help="the step's optimized HLO text (.hlo[.gz])")
    parser.add_argument(
        "--plan-config",
        help="compile this trainer config's step for --device without it (--plan) and fit "
        "against that program (needs the deviceless compiler's packages)",
    )
    parser.add_argument(
        "--plan-set", action="append", default=[], help="a --set of the profiled run (repeat)"
    )
    parser.add_argument("--step-s", type=float, help="the measured median step, seconds")
    parser.add_argument("--measurement", help="what the estimate says it is calibrated on")
    parser.add_argument("--not-causal", action="store_true", help="the attention is not causal")
    parser.add_argument(
        "--kernels-results",
        type=Path,
        help="the GPU suite's kernel part results.json: cuDNN attention's timings fit its class",
    )
    args = parser.parse_args(argv)
    from tjx import kernels, metrics
    from tjx.metrics.calibration_fit import read_text, refit

    try:
        device = metrics.accelerator(args.device)
    except ValueError as err:
        print(f"--device: {err}", file=sys.stderr)
        return 2
    if not args.profile.exists():
        print(f"{args.profile}: no such profile; pass its folder or .tar.gz", file=sys.stderr)
        return 2
    cost = kernels.roofline_costs(
        causal=not args.not_causal,
        device_kind=device.device_kind,
        compute_capability=device.compute_capability,
    )
    given = argv if argv is not None else sys.argv[1:]
    command = "python tools/calibrate.py " + " ".join(shlex.quote(a) for a in given)
    bench: list[dict] = []
    if args.kernels_results is not None:
        try:
            found = json.loads(args.kernels_results.read_text())
            bench = list(found["sections"]["attention"]["rows"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"--kernels-results: no attention rows in {args.kernels_results} ({err}); "
                  "pass the kernel part's results.json", file=sys.stderr)  # fmt: skip
            return 2
    try:
        hlo = read_text(args.hlo) if args.hlo else None
        if args.plan_config:
            hlo = deviceless_hlo(device.key, args.plan_config, args.plan_set)
        cal, report = refit(
            args.profile,
            hlo,
            device,
            custom_call_cost=cost,
            measured_step_s=args.step_s,
            measurement=args.measurement,
            refit_command=command,
            attention_bench=bench,
            attention_bench_source=f"{args.kernels_results} (attention section)",
        )
    except ValueError as err:
        print(f"{args.profile}: {err}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    for name, c in cal.classes.items():
        print(f"{name}: floor {c.floor_s * 1e6:.2f} µs, flop_eff {c.flop_eff:.2f}, "
              f"bw_eff {c.bw_eff:.2f} ({c.provenance})")  # fmt: skip
    print(f"step overhead: {cal.step_overhead_s * 1e3:.2f} ms")
    table = json.loads(args.out.read_text()) if args.out.exists() else {}
    table[device.key] = cal.to_json()
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out} [{device.key}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
