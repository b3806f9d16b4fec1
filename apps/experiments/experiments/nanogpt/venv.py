"""The scratch venv the PyTorch peer runs in: made once, never part of the project's resolve."""

from __future__ import annotations

from pathlib import Path

import tjx_peers

#: What the peer imports: PyTorch and NumPy, at the versions every tjx peer pins
#: (tests-support's ``tjx_peers.PINS``), so one venv serves the Hugging Face peer tests too and a
#: machine installs torch once; where a CPU build of it is on the machine (a find-links folder),
#: pip takes that 0.2 GB wheel; unpinned, pip took PyPI's CUDA build here (torch 2.15.0+cu132: a
#: 5.4 GB venv).
PEER_PACKAGES = ("torch", "numpy")
#: Where the venv lives unless told otherwise: the venv tjx's Hugging Face peer tests use.
DEFAULT_VENV = tjx_peers.DEFAULT_VENV


def peer_python(venv_dir: Path) -> Path:
    """The scratch venv's interpreter, made (``python -m venv`` + ``pip install``) if missing.

    pip runs with this machine's own configuration (its index, constraints and CA bundle come
    from pip's config files and ``PIP_*`` variables), so a site that needs a certificate bundle
    to reach PyPI gives it to pip as usual, e.g. ``PIP_CERT=/etc/ssl/certs/ca-certificates.crt``.
    A venv without torch or numpy at their pins gets them installed; another process making the
    same venv at once is waited for (``<venv>.lock``, the lock the HF peer tests take).

    Parameters
    ----------
    venv_dir : Path
        Where the venv lives (kept between runs: the second run starts at once).

    Returns
    -------
    Path
        ``venv_dir/bin/python``, which imports torch.

    Raises
    ------
    SystemExit
        pip could not install them: one line saying what to check.
    """
    try:
        return tjx_peers.peer_python(
            venv_dir, PEER_PACKAGES, say=lambda line: print(f"nanogpt: {line} ...", flush=True)
        )
    except tjx_peers.PeerVenvError as err:
        raise SystemExit(f"nanogpt: error: {err}") from None
