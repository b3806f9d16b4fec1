"""transformers, PyTorch, PEFT and TRL for the HF peer tests, in a scratch venv this helper makes.

Never part of the project's resolve: the venv (``$TJX_HF_PEER_VENV``, default
``~/.cache/tjx/torch-peer-venv``) is made once with pip (``torch==2.13.0`` pinned: a CPU build
where the machine has one) and kept; `run_peer` runs ``_hf_peer_script.py`` in it as a subprocess,
so no test process imports torch. The experiments' nanoGPT peer uses the same venv (torch and
numpy, the same pin and lock): a venv that has torch gets the rest added, never rebuilt.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REQUIREMENTS = ("torch==2.13.0", "transformers", "safetensors", "numpy", "peft", "trl")
SCRIPT = Path(__file__).with_name("_hf_peer_script.py")


def peer_python() -> Path:
    """The scratch venv's interpreter (made with pip if missing); it imports transformers."""
    venv = Path(
        os.environ.get("TJX_HF_PEER_VENV") or Path.home() / ".cache" / "tjx" / "torch-peer-venv"
    )
    return _ready(venv)


@functools.cache
def _ready(venv: Path) -> Path:
    """``venv``'s interpreter once it imports the peer packages; checked once per process.

    The check imports torch, transformers, PEFT and TRL in a subprocess (8-9 CPU seconds,
    measured 2026-11-27), and CI's HF batch runs the peer a dozen times in one process
    (`run_peer`): a venv that passed stays as it was (pip only ever adds to it, under the lock).
    """
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def imports(modules: str) -> bool:
        probe = [str(python), "-c", f"import {modules}"]
        return (
            python.is_file() and subprocess.run(probe, capture_output=True, env=env).returncode == 0
        )

    venv.parent.mkdir(parents=True, exist_ok=True)
    # apps/eval's GPT-2 harness test and the nanoGPT peer use this venv too, maybe at once.
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if imports("torch, transformers, safetensors, peft, trl"):
            return python
        if not imports("torch"):
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS]
        subprocess.run(pip, check=True, env=env)
        assert imports("torch, transformers, safetensors, peft, trl"), f"{venv}: pip left it short"
    return python


def run_peer(jobs: list[dict[str, Any]], workdir: Path) -> None:
    """Run ``jobs`` (see ``_hf_peer_script``) in the scratch venv; fail with its output."""
    spec = workdir / f"jobs-{len(list(workdir.glob('jobs-*.json')))}.json"
    spec.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # One torch thread: the peers' tensors are tiny, and torch's OpenMP workers spin waiting for
    # each small op, the more so on a busy machine (2026-11-27, 2 cores: test_hf_families 217 ->
    # 190 CPU s; its 17 models made and scored, at low priority beside other work, 114 -> 18).
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [str(peer_python()), str(SCRIPT), str(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert proc.returncode == 0, f"peer failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
