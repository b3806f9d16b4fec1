"""What ran the suite (device, driver, library versions) and the device's measured matmul peak."""

from __future__ import annotations

import platform
import shutil
import subprocess
import time
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
from bench_attention import median_ms

from tjx.metrics import device_summary
from tjx_tools.gpu_suite.report import Section, fmt, md_table

PACKAGES = (
    "jax",
    "jaxlib",
    "jax-cuda13-plugin",
    "jax-cuda12-plugin",
    "flax",
    "optax",
    "orbax-checkpoint",
    "chex",
    "einops",
    "tokenizers",
    "numpy",
    "triton",
)
#: Packages tjx can run without; the suite says which are missing (none is needed on its path).
OPTIONAL = ("datasets", "wandb", "tensorboardX")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def nvidia_smi() -> dict[str, str]:
    """Driver version, GPU name and memory from ``nvidia-smi`` (empty without one)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    query = "--query-gpu=driver_version,name,memory.total"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    fields = [f.strip() for f in out.splitlines()[0].split(",")] if out.strip() else []
    return dict(zip(("driver", "gpu", "memory"), fields, strict=False))


def describe() -> dict[str, Any]:
    """The run's metadata: date (UTC), device, driver, Python and library versions."""
    dev = jax.devices()[0]
    smi = nvidia_smi()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": device_summary(),
        "device_kind": dev.device_kind,
        "backend": jax.default_backend(),
        "driver": smi.get("driver"),
        "gpu_memory": smi.get("memory"),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "versions": {name: _version(name) for name in PACKAGES if _version(name)},
        "missing_optional": [name for name in OPTIONAL if _version(name) is None],
    }


def matmul_tflops(n: int, iters: int) -> float:
    """Achieved TFLOP/s of an ``n × n × n`` bf16 matmul (median of ``iters`` after a warm-up)."""
    keys = jax.random.split(jax.random.key(0), 2)
    a, b = (jax.random.normal(k, (n, n), jnp.bfloat16) for k in keys)
    ms = median_ms(jax.jit(lambda a, b: a @ b), (a, b), iters)
    return 2.0 * n**3 / (ms * 1e-3) / 1e12


def run(sec: Section, meta: dict[str, Any], smoke: bool) -> None:
    """Fill the environment section; ``meta['peak_*']`` feed the MFU of the later sections."""
    from tjx import metrics

    n = 256 if smoke else 8192
    measured = matmul_tflops(n, iters=3 if smoke else 20)
    table = metrics.device_peak_flops(None, "bf16")
    meta["peak_bf16_table"] = table
    meta["peak_bf16_measured"] = measured * 1e12
    sec.summary = {"matmul_n": n, "matmul_tflops": measured, "table_tflops": table and table / 1e12}
    rows = [
        ["device", meta["device"]],
        ["driver / GPU memory", f"{meta['driver'] or 'n/a'} / {meta['gpu_memory'] or 'n/a'}"],
        ["python", meta["python"]],
        *([name, v] for name, v in meta["versions"].items()),
        ["optional packages absent", ", ".join(meta["missing_optional"]) or "none"],
        [f"measured bf16 matmul {n}³", f"{measured:.3g} TFLOP/s"],
        ["datasheet dense bf16 peak", f"{fmt(table and table / 1e12, '.1f') or 'n/a'} TFLOP/s"],
    ]
    sec.markdown = md_table(["what", "value"], rows)
