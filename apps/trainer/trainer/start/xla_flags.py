"""``train.gpu_autotune``: how much XLA's GPU compiler autotunes the train step, as XLA flags set
before JAX starts its backend (XLA reads ``XLA_FLAGS`` once, when the backend starts).

What was measured (one H100, jax 0.11.2, 2026-11-25): gpt2_medium's train step compiles in 42.1 s
with XLA's default autotuning (``--xla_gpu_autotune_level=4``) and 35.9 s without (level 0), so
autotuning is a sixth of the compile; ``default`` keeps it (a rerun finds its results in the
persistent cache: JAX keeps XLA's per-fusion autotune cache in the compilation cache's folder).
``off`` is for a GPU where autotuning runs long. No imports of jax here: it must not start first.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: Each setting's XLA flags (the flag exists in jaxlib 0.10.2 and 0.11.2).
AUTOTUNE_FLAGS: dict[str, tuple[str, ...]] = {
    "default": (),  # XLA's own: GEMM/convolution and Triton GEMM fusion autotuning, checked
    "off": ("--xla_gpu_autotune_level=0",),  # XLA's heuristics, nothing timed
}
AUTOTUNE_CHOICES = tuple(AUTOTUNE_FLAGS)


def apply_gpu_autotune(setting: str, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Append ``setting``'s flags to ``XLA_FLAGS`` in ``environ`` (default: this process's),
    leaving out any flag the user set there already; the flags appended."""
    env = os.environ if environ is None else environ
    if setting not in AUTOTUNE_FLAGS:
        raise ValueError(f"train.gpu_autotune: {setting!r} is not one of {AUTOTUNE_CHOICES}")
    mine = env.get("XLA_FLAGS", "")
    have = {part.split("=", 1)[0] for part in mine.split()}
    added = [flag for flag in AUTOTUNE_FLAGS[setting] if flag.split("=", 1)[0] not in have]
    if added:
        env["XLA_FLAGS"] = " ".join([*mine.split(), *added])
    return added
