"""What ran the suite (device, driver, library versions) and the device's measured matmul peak.

The versions: jax and its packages, ``nvidia-smi``'s driver, GPU, memory, clocks and power
limit, and the CUDA libraries jax loaded (`cuda_libraries`: cuDNN, cuBLAS, the runtime, ... as
the jax CUDA plugin reports them, and the nvidia wheels), recorded in every run's metadata since
#68 (PyTorch's own are in the ``attention_vs_torch`` section of ``--part all``).

The matmul probe (`matmul_tflops`, METHOD): ``n × n × n`` bf16 products of random normal inputs,
``ROTATE`` distinct input pairs used in turn (no kernel sees the same operands twice in a row),
a warm-up of every variant first (compile, autotune, clocks up). Then ``rounds`` rounds, each
dispatching ``per_round`` products back to back (JAX dispatches asynchronously, so the GPU queue
never drains) and waiting once, with ``block_until_ready``, on the last: a round's wall time over
``per_round`` is one product's time, free of the per-call host round trip that a wait after every
call adds (the first H100 run, 2026-11-25, timed one call per wait and read 650-661 TFLOP/s where
PyTorch reads about 800 on such a card). The median round is reported, for two outputs: bf16 (JAX's
default for bf16 inputs: an f32 accumulator rounded at the end) and f32
(``preferred_element_type=float32``, what a GEMM with an f32 epilogue writes); the faster is the
measured peak the MFU is also reported against.
"""

from __future__ import annotations

import platform
import shutil
import statistics
import subprocess
import time
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp

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


#: What ``nvidia-smi`` is asked (``--query-gpu``) and the names the suite gives the answers.
SMI_FIELDS = {
    "driver_version": "driver",
    "name": "gpu",
    "memory.total": "memory",
    "clocks.max.sm": "max_sm_clock",
    "power.limit": "power_limit",
    "pci.device_id": "pci_device_id",
}
#: The jax CUDA plugins' version modules, newest first (``jax._src.lib`` looks them up the same
#: way; the plugin's own module, not a private jax API).
CUDA_VERSION_MODULES = ("jax_cuda13_plugin._versions", "jax_cuda12_plugin._versions")


def nvidia_smi() -> dict[str, str]:
    """Driver version, GPU name, memory, clocks and power limit from ``nvidia-smi`` (empty
    without one)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    query = "--query-gpu=" + ",".join(SMI_FIELDS)
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    fields = [f.strip() for f in out.splitlines()[0].split(",")] if out.strip() else []
    return dict(zip(SMI_FIELDS.values(), fields, strict=False))


def cuda_libraries() -> dict[str, Any]:
    """The CUDA libraries jax runs with (#68: cuDNN, cuBLAS, the CUDA runtime and driver...):
    each ``*_get_version`` (what is loaded) and ``*_build_version`` (what the plugin was built
    against) of the jax CUDA plugin's version module; the nvidia wheels installed beside it. A
    library that cannot be asked (no GPU, not loaded) is left out; no plugin: an empty dict."""
    import importlib

    found: dict[str, Any] = {}
    for name in CUDA_VERSION_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found["plugin"] = name.split(".")[0]
        for attr in sorted(dir(module)):
            if not attr.endswith(("_get_version", "_build_version")):
                continue
            try:
                found[attr] = getattr(module, attr)()
            except Exception:  # - a library the plugin cannot load here: not known, not fatal
                continue
        break
    wheels = {
        d.metadata["Name"]: d.version
        for d in metadata.distributions()
        if (d.metadata["Name"] or "").lower().startswith("nvidia-")
    }
    if wheels:
        found["nvidia_wheels"] = dict(sorted(wheels.items()))
    return found


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
        "nvidia_smi": smi,
        "cuda_libraries": cuda_libraries() if jax.default_backend() == "gpu" else {},
        "jax": jax.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "versions": {name: _version(name) for name in PACKAGES if _version(name)},
        "missing_optional": [name for name in OPTIONAL if _version(name) is None],
    }


#: Distinct input pairs the probe rotates through.
ROTATE = 4
METHOD = (
    "median of {rounds} rounds × {per_round} back-to-back {n}³ bf16 products on {rotate} rotating "
    "random input pairs, one block_until_ready per round on the last, after a warm-up"
)


def matmul_tflops(n: int, rounds: int, per_round: int, out_dtype: Any = jnp.bfloat16) -> float:
    """Achieved TFLOP/s of an ``n × n × n`` bf16 product writing ``out_dtype`` (module doc)."""
    keys = jax.random.split(jax.random.key(0), 2 * ROTATE)
    mats = [jax.random.normal(k, (n, n), jnp.bfloat16) for k in keys]
    pairs = [(mats[2 * i], mats[2 * i + 1]) for i in range(ROTATE)]
    prod = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=out_dtype))
    for a, b in pairs:  # compile (and autotune) once, warm the clocks on every pair
        jax.block_until_ready(prod(a, b))
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = None
        for i in range(per_round):
            out = prod(*pairs[i % ROTATE])
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / per_round)
    return 2.0 * n**3 / statistics.median(times) / 1e12


def run(sec: Section, meta: dict[str, Any], smoke: bool) -> None:
    """Fill the environment section; ``meta['peak_*']`` feed the MFU of the later sections."""
    from tjx import metrics

    n = 256 if smoke else 8192
    rounds, per_round = (3, 2) if smoke else (15, 20)  # GPU: 300 products, about 0.5 s
    by_out = {
        name: matmul_tflops(n, rounds, per_round, dt)
        for name, dt in (("bf16", jnp.bfloat16), ("f32", jnp.float32))
    }
    measured = max(by_out.values())
    table = metrics.device_peak_flops(None, "bf16")
    meta["peak_bf16_table"] = table
    meta["peak_bf16_measured"] = measured * 1e12
    method = METHOD.format(rounds=rounds, per_round=per_round, n=n, rotate=ROTATE)
    sec.summary = {
        "matmul_n": n,
        "matmul_tflops": measured,
        "matmul_tflops_bf16_out": by_out["bf16"],
        "matmul_tflops_f32_out": by_out["f32"],
        "matmul_method": method,
        "table_tflops": table and table / 1e12,
    }
    rows = [
        ["device", meta["device"]],
        ["driver / GPU memory", f"{meta['driver'] or 'n/a'} / {meta['gpu_memory'] or 'n/a'}"],
        ["python", meta["python"]],
        *([name, v] for name, v in meta["versions"].items()),
        ["optional packages absent", ", ".join(meta["missing_optional"]) or "none"],
        *(
            [f"nvidia-smi {k}", v]
            for k, v in meta.get("nvidia_smi", {}).items()
            if k not in ("driver", "memory")
        ),
        *([f"CUDA library: {k}", v] for k, v in meta.get("cuda_libraries", {}).items()),
        [f"measured bf16 matmul {n}³, bf16 out", f"{by_out['bf16']:.3g} TFLOP/s"],
        [f"measured bf16 matmul {n}³, f32 out", f"{by_out['f32']:.3g} TFLOP/s"],
        ["matmul method", method],
        ["datasheet dense bf16 peak", f"{fmt(table and table / 1e12, '.1f') or 'n/a'} TFLOP/s"],
    ]
    sec.markdown = md_table(["what", "value"], rows)
