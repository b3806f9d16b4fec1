"""jax's CUDA plugin or libtpu in a scratch folder, for deviceless compiles (never in the resolve).

`scratch_env` installs a platform's packages once with ``uv pip install --target`` into
``~/.cache/tjx/deviceless/<name>`` (``$TJX_DEVICELESS_CACHE`` overrides the parent folder) and
keeps them: no second jax (``--no-deps``; the plugin matches the jax under test exactly), only
what a compile without a device needs. The CUDA plugin's other nvidia wheels (cuBLAS, cuFFT,
NCCL, ... several GB) are for running kernels, not compiling them, and are left out: cuDNN
(jax checks its version while tracing cuDNN attention) and ``ptxas`` (PTX to GPU code) are all
it needs. Installs are atomic and serialised by a lock (tests-support's `target_install`), so
tests in parallel batches share one copy; the cold install's seconds are kept beside it.
`plan` runs one ``python -m trainer --plan`` there, and `check_preset_plan` holds a preset's
plan to test_plan_deviceless's rules (that file and test_plan_deviceless_small share them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
from tjx_scratch import target_install

#: What each platform needs for a deviceless compile, pinned (the versions tried together).
PACKAGES = {
    "cuda12": [
        f"jax-cuda12-plugin=={jax.__version__}",
        f"jax-cuda12-pjrt=={jax.__version__}",
        "nvidia-cudnn-cu12==9.28.0.42",
        "nvidia-cuda-nvcc-cu12==12.9.86",
    ],
    "libtpu": ["libtpu==0.0.42.*"],
}
MARKER = "tjx-deviceless.json"


def cache_root() -> Path:
    """Where the scratch folders live."""
    default = Path.home() / ".cache" / "tjx" / "deviceless"
    return Path(os.environ.get("TJX_DEVICELESS_CACHE") or default)


def scratch_env(platform: str) -> tuple[Path, float | None]:
    """(folder to put on ``PYTHONPATH``, seconds its cold install took, None when cached)."""
    folder = cache_root() / f"jax{jax.__version__}-{platform}"
    return target_install(folder, PACKAGES[platform], MARKER)


def scratch_envs() -> dict[str, Path]:
    """Both platforms' folders (``cuda12``, ``libtpu``), a cold install's seconds on stderr."""
    found = {}
    for platform in PACKAGES:
        folder, seconds = scratch_env(platform)
        if seconds is not None:  # a cold install: how long it took, for CI's budget
            print(f"deviceless {platform}: installed in {seconds:.1f} s", file=sys.stderr)
        found[platform] = folder
    return found


def plan_env(env_dir: Path, tmp: Path, *more: Path) -> dict[str, str]:
    """A ``--plan`` process's environment: the scratch packages (``env_dir``, then ``more``) on
    its path, no measurements."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    paths = [os.path.abspath(p or os.curdir) for p in sys.path]
    no_timings = tmp / "no_timings.json"  # the rule without measurements (test_plan_deviceless)
    no_timings.write_text(json.dumps({"schema": 1, "devices": {}}))
    env.update(
        TJX_FLASH_LAUNCH_TABLES=str(no_timings),
        PYTHONPATH=os.pathsep.join([*paths, str(env_dir), *map(str, more)]),
        JAX_PLATFORMS="cpu",
        # Not the tests' compile-speed flags (pants.toml): the guard compiles what a user's --plan
        # compiles (with them, the v5e plans took 90 s in CI, 60 s without; load may play a part).
        # They would not pay on an H100 either: llama_small's XLA plan took 85.6 CPU-s with LLVM
        # at -O0, 89.7 without, ptxas included (2026-11-29, a loaded 2-core machine).
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
    )
    return env


def plan(
    preset: str,
    target: str,
    kernel: str,
    env_dir: Path,
    tmp: Path,
    sets: list[str] | None = None,
    more: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """``python -m trainer --config PRESET --plan TARGET --set model.attention_impl=KERNEL`` (and
    ``sets``) in the scratch environment: its ``--plan-json`` record, with its stdout."""
    out = tmp / "plan.json"
    env = plan_env(env_dir, tmp, *more)
    args = ["--config", preset, "--plan", target, "--plan-json", str(out)]
    args += ["--set", f"model.attention_impl={kernel}"]
    args += [a for value in sets or [] for a in ("--set", value)]
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{preset} on {target} ({kernel}):\n{proc.stdout}\n{proc.stderr}"
    assert not list(tmp.glob("runs")), "a plan writes no run directory"
    data: dict[str, Any] = json.loads(out.read_text())
    data["stdout"] = proc.stdout
    return data


#: Float32 matrix products a bf16 run may hold, by the JAX operation that makes them (op_name
#: patterns), and why:
ALLOWED_F32_DOTS = [
    # tjx.kernels' XLA attention (reference.py) takes both its products with
    # preferred_element_type=float32 (scores for the float32 softmax, and the output), so their
    # transposes in the backward multiply a float32 cotangent: dS·K, dSᵀ·Q (the scores' einsum)
    # and dO·Vᵀ, Pᵀ·dO (the output's) run in float32 — TF32 on a GPU, one bf16 pass on a TPU's
    # MXU at default precision. The fused kernels (cuDNN, Pallas) have none; found by this test
    # (2026-11-24) and left to the XLA path's owner: casting the cotangents to bf16 would halve
    # those products' traffic.
    # Scanned layers name them ``.../bhqs,bshd->bqhd/dot_general``, unrolled ones (#39's presets)
    # ``transpose(jvp(bhqs,bshd->bqhd))/dot_general``.
    r"bqhd,bshd->bhqs\)*/dot_general$",
    r"bhqs,bshd->bqhd\)*/dot_general$",
]


def unexplained_f32(data: dict[str, Any], allowed: list[str] = ALLOWED_F32_DOTS) -> list[str]:
    """The train step's float32 matrix products that no pattern of ``allowed`` names."""
    f32: list[str] = data["train"]["f32_dots"]
    return [op for op in f32 if not any(re.search(pattern, op) for pattern in allowed)]


#: The Pallas attention kernels each preset's train step runs (kernel "pallas").
PALLAS_CALLS = {
    "gpt2_small": {"tjx_flash_qkv_fwd", "tjx_flash_qkv_bwd_dq", "tjx_flash_qkv_bwd_dkdv"},
    "llama_small": {"tjx_flash_fwd", "tjx_flash_bwd_dq", "tjx_flash_bwd_dkdv"},
}


def check_preset_plan(data: dict[str, Any], preset: str, target: str, kernel: str) -> str:
    """A preset's plan on ``target`` with ``kernel`` holds every rule of test_plan_deviceless's
    module doc but the guard table's peak; returns the kernel the plan chose."""
    tpu = target == "v5e"
    chosen: str = data["attention"]["kernel"]
    calls = data["train"]["custom_calls"]
    if kernel == "auto":
        if tpu:
            assert chosen == "xla" and "fused kernels are CUDA-only" in data["attention"]["line"]
        else:
            assert chosen == "cudnn" and "no tjx measurement" in data["attention"]["line"]
            assert any(c.startswith("__cudnn$fmha") for c in calls), calls
    else:
        assert chosen == kernel
    if kernel == "pallas":  # built by XLA's (jaxlib's) Triton into the program
        others = set().union(*PALLAS_CALLS.values()) - PALLAS_CALLS[preset]
        assert PALLAS_CALLS[preset] <= set(calls) and not others & set(calls), calls
        # Priced by tjx.kernels' costs (their walks), not by their operands (a flattering sum).
        unpriced = [n for n in data["estimate"]["notes"] if "counted by their operands" in n]
        assert not unpriced, unpriced
    if kernel == "xla":
        assert not any("cudnn" in c or "tjx_flash" in c for c in calls), calls
    assert data["train"]["compiles"] and data["eval"]["compiles"]
    assert data["memory"]["fits"]
    unexplained = unexplained_f32(data)
    assert not unexplained, f"float32 matrix products in a bf16 run: {unexplained}"
    assert "an estimate" in data["stdout"] and data["estimate"]["seconds"] > 0
    # The compile's time (deviceless: no autotuning, so a floor of a GPU's; #52), in CI's log.
    seconds = data["train"]["compile_s"]
    assert seconds > 0
    kept = " (compiled before: lowering only)" if data["train"]["compiled_before"] else ""
    print(f"deviceless compile: {preset} on {target} ({chosen}): train step {seconds:.1f} s{kept}",
          file=sys.stderr)  # fmt: skip
    return chosen
