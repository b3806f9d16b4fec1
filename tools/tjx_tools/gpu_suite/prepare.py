"""Build ``.gpu/``: what the GPU machine needs and cannot download (it has no network).

``.gpu/whl`` holds tokamax's wheels and its dependencies for the GPU machine's Python 3.12
(``tools/tokamax_gpu.py``: 3.6 MiB), which ``tools/gpu_suite`` installs there.
``.gpu/data`` is a tjx data cache (``$TJX_CACHE``) holding the built-in KJV corpus, the GPT-2
tokenizer and the corpus's GPT-2 shards, made by the trainer's own data preparation for the exact
config the suite's training run uses, so the run there finds every file in place.
``tools/gpu_suite`` points ``$TJX_CACHE`` at it when it exists; name ``.gpu`` in the device tool's
``carry``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tokamax_gpu import download_wheels

#: The device tool carries at most 64 MiB of working tree; stay well inside it.
CARRY_LIMIT = 48 * 2**20


def folder_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prepare(carry: Path) -> Path:
    """Fill ``carry/data`` for the suite's gpt2_small run; return the data folder."""
    data = carry / "data"
    data.mkdir(parents=True, exist_ok=True)
    os.environ["TJX_CACHE"] = str(data.resolve())
    from bench_train import load

    from trainer import prepare_data

    cfg = load("gpt2_small", ["data.source=kjv"])
    bundle = prepare_data(cfg)
    # tokamax (tjx-kernels' `gpu` extra) and what it needs that the GPU image lacks, as wheels
    # `tools/gpu_suite` installs there (no network): the attention cell measures its kernel.
    try:
        wheels = download_wheels(carry / "whl")
        print(f"prepared {len(wheels)} wheels in {carry / 'whl'} (tokamax and its dependencies)")
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"gpu_suite prepare: warning: tokamax's wheels not downloaded ({err}); the GPU call "
              "will list tokamax's cells as failed")  # fmt: skip
    size = folder_bytes(carry)
    if size > CARRY_LIMIT:
        raise SystemExit(
            f"gpu_suite prepare: {carry} holds {size / 2**20:.0f} MiB, over the "
            f"{CARRY_LIMIT / 2**20:.0f} MiB the device tool can carry beside the tree"
        )
    print(
        f"prepared {carry}: {size / 2**20:.1f} MiB; train shards {bundle.train_dir}; "
        f"vocab {bundle.vocab_size}. Carry it: run(..., carry=['{carry.name}'])"
    )
    return data
