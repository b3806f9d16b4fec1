"""transformers, PyTorch, PEFT and TRL for the HF peer tests, in a scratch venv this helper makes.

Never part of the project's resolve: the venv (``$TJX_HF_PEER_VENV``, default
``~/.cache/tjx/torch-peer-venv``) is made once with pip at the versions tests-support's
``tjx_peers.PINS`` pins (torch a CPU build where the machine has one) and kept; `run_peer` runs
``_hf_peer_script.py`` in it as a subprocess, so no test process imports torch. The experiments'
nanoGPT peer and apps/eval's GPT-2 harness test use the same venv and the same pins.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import tjx_peers

SCRIPT = Path(__file__).with_name("_hf_peer_script.py")


def peer_python(packages: tuple[str, ...] = tjx_peers.HF_PEERS) -> Path:
    """The scratch venv's interpreter (made or brought to the pins if needed); it imports
    ``packages`` (transformers, PEFT and TRL; compressed-tensors as well for the quantized
    folders, `tjx_peers.QUANT_PEERS`) at ``tjx_peers.PINS``."""
    return _ready(tjx_peers.venv_path(), packages)


@functools.cache
def _ready(venv: Path, packages: tuple[str, ...]) -> Path:
    """``venv``'s interpreter once ``packages`` are at their pins; checked once per process
    (CI's HF batch runs the peer a dozen times in one process, `run_peer`)."""
    return tjx_peers.peer_python(venv, packages)


def run_peer(
    jobs: list[dict[str, Any]], workdir: Path, packages: tuple[str, ...] = tjx_peers.HF_PEERS
) -> None:
    """Run ``jobs`` (see ``_hf_peer_script``) in the scratch venv with ``packages`` at their pins;
    fail with its output."""
    spec = workdir / f"jobs-{len(list(workdir.glob('jobs-*.json')))}.json"
    spec.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # One torch thread: the peers' tensors are tiny, and torch's OpenMP workers spin waiting for
    # each small op, the more so on a busy machine (2026-11-27, 2 cores: test_hf_families 217 ->
    # 190 CPU s; its 17 models made and scored, at low priority beside other work, 114 -> 18).
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [str(peer_python(packages)), str(SCRIPT), str(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    versions = tjx_peers.versions_line(packages)  # what this result was checked against
    assert (
        proc.returncode == 0
    ), f"peer ({versions}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
