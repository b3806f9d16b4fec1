"""The scratch venv the PyTorch peer runs in: made once, never part of the project's resolve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: What the peer needs: PyTorch (CPU is enough) and NumPy.
PEER_REQUIREMENTS = ("torch", "numpy")


def peer_python(venv_dir: Path) -> Path:
    """The scratch venv's interpreter, made (``python -m venv`` + ``pip install``) if missing.

    pip runs with this machine's own configuration (its index, constraints and CA bundle come
    from pip's config files and ``PIP_*`` variables), so a site that needs a certificate bundle
    to reach PyPI gives it to pip as usual, e.g. ``PIP_CERT=/etc/ssl/certs/ca-certificates.crt``.

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
    if python.is_file() and _imports_torch(python):
        return python
    print(f"nanogpt: making the scratch venv {venv_dir} (torch, numpy) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv_dir)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS]
    done = subprocess.run(pip, check=False, env=os.environ.copy())
    if done.returncode != 0 or not _imports_torch(python):
        raise SystemExit(
            f"nanogpt: error: could not install {', '.join(PEER_REQUIREMENTS)} into {venv_dir} "
            "(pip failed; see its output above); check pip's index and certificate settings"
        )
    return python


def _imports_torch(python: Path) -> bool:
    probe = [str(python), "-c", "import torch, numpy"]
    return subprocess.run(probe, check=False, capture_output=True).returncode == 0
