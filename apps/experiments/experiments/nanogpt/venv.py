"""The scratch venv the PyTorch peer runs in: made once, never part of the project's resolve."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

#: What the peer needs: PyTorch and NumPy. torch is pinned to the version tjx's Hugging Face peer
#: tests pin, so one venv serves both (`DEFAULT_VENV`) and a machine installs torch once; where a
#: CPU build of it is on the machine (a find-links folder), pip takes that 0.2 GB wheel; unpinned,
#: pip took PyPI's CUDA build here (torch 2.15.0+cu132: a 5.4 GB venv).
PEER_REQUIREMENTS = ("torch==2.13.0", "numpy")
#: Where the venv lives unless told otherwise: the venv tjx's Hugging Face peer tests use.
DEFAULT_VENV = Path.home() / ".cache" / "tjx" / "torch-peer-venv"


def peer_python(venv_dir: Path) -> Path:
    """The scratch venv's interpreter, made (``python -m venv`` + ``pip install``) if missing.

    pip runs with this machine's own configuration (its index, constraints and CA bundle come
    from pip's config files and ``PIP_*`` variables), so a site that needs a certificate bundle
    to reach PyPI gives it to pip as usual, e.g. ``PIP_CERT=/etc/ssl/certs/ca-certificates.crt``.
    A venv that exists without torch (or numpy) gets them added; another process making the
    same venv at once is waited for (``<venv>.lock``, the lock the HF peer tests take).

    Parameters
    ----------
    venv_dir : Path
        Where the venv lives (kept between runs: the second run starts at once).

    Returns
    -------
    Path
        ``venv_dir/bin/python``, which imports torch.
    """
    python = venv_dir / "bin" / "python"
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(venv_dir.with_name(venv_dir.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.is_file() and _imports(python, "torch, numpy"):
            return python
        print(f"nanogpt: making the scratch venv {venv_dir} (torch, numpy) ...", flush=True)
        if not (python.is_file() and _imports(python, "pip")):
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv_dir)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run(pip, check=False, env=env)
        if done.returncode != 0 or not _imports(python, "torch, numpy"):
            raise SystemExit(
                f"nanogpt: error: could not install {', '.join(PEER_REQUIREMENTS)} into "
                f"{venv_dir} (pip failed; see its output above); check pip's index and "
                "certificate settings"
            )
    return python


def _imports(python: Path, modules: str) -> bool:
    probe = [str(python), "-c", f"import {modules}"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(probe, check=False, capture_output=True, env=env).returncode == 0
