"""The peers' scratch venv: PyTorch, transformers, PEFT and TRL at pinned versions, one place.

tjx is checked against reference implementations — transformers' models (the Hugging Face round
trips, chat templates, the gated DeltaNet layer, RoPE scalings), PEFT's adapters, TRL's DPO and
GRPO trainers, lm-evaluation-harness' GPT-2 scoring, nanoGPT on PyTorch — inside one scratch venv
that the tests and benchmarks make (``$TJX_HF_PEER_VENV``, default ``~/.cache/tjx/torch-peer-venv``)
and never in the project's resolve. Every peer installs from `PINS`, exact versions, so a result
is against a known transformers (the CHANGELOGs and READMEs cite these), and a venv that holds
other versions (made before the pins, or by hand) is brought to them before a peer runs.

Used by tests-integration's ``_hf_peer``, apps/eval's GPT-2 harness test and the experiments'
nanoGPT side-by-side (study 9, ``tools/bench_nanogpt.py``). Standard library only.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

#: The exact version of each package a peer imports (torch: the CPU build where the machine has
#: one on disk; PyPI's default is a 5 GB CUDA build). Change one here and every peer follows.
PINS: Mapping[str, str] = {
    "torch": "2.13.0",
    "transformers": "5.24.0",
    "peft": "0.21.2",
    "trl": "1.16.0",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
    "compressed-tensors": "0.20.0",
}
#: What the Hugging Face peers import (tests-integration's ``_hf_peer``).
HF_PEERS = ("torch", "transformers", "safetensors", "numpy", "peft", "trl")
#: What the quantized-folder peer imports besides (``test_hf_quantized_peer``): the
#: compressed-tensors compressor that wrote Kimi-K2.5's INT4 release, and that transformers loads
#: it with. Only that test asks for it, so the other peers' venvs stay as they are.
QUANT_PEERS = (*HF_PEERS, "compressed-tensors")
#: Where the venv lives unless ``$TJX_HF_PEER_VENV`` says otherwise.
DEFAULT_VENV = Path.home() / ".cache" / "tjx" / "torch-peer-venv"
#: Asks the venv's interpreter for each package's installed version (``null``: not installed).
_PROBE = """
import importlib.metadata as m, json, sys
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print(json.dumps({name: version(name) for name in sys.argv[1:]}))
"""


class PeerVenvError(RuntimeError):
    """The venv could not be made or brought to the pins (pip failed, no network)."""


def requirements(packages: Iterable[str] = HF_PEERS) -> list[str]:
    """``["torch==2.13.0", ...]``: pip's requirement of each package at its pin."""
    return [f"{name}=={PINS[name]}" for name in packages]


def versions_line(packages: Iterable[str] = HF_PEERS) -> str:
    """``"torch 2.13.0, transformers 5.24.0, ..."``: what a peer's result was checked against."""
    return ", ".join(f"{name} {PINS[name]}" for name in packages)


def off_pins(installed: Mapping[str, str | None], packages: Iterable[str]) -> list[str]:
    """The packages whose installed version is not their pin (missing ones included), as
    ``"transformers 5.23.0 (pinned 5.24.0)"``. A local build label counts as its release
    (``2.13.0+cpu`` is torch 2.13.0)."""
    wrong = []
    for name in packages:
        have = installed.get(name)
        if have is None or have.split("+", 1)[0] != PINS[name]:
            wrong.append(f"{name} {have or 'missing'} (pinned {PINS[name]})")
    return wrong


def venv_path() -> Path:
    """``$TJX_HF_PEER_VENV``, else `DEFAULT_VENV`."""
    return Path(os.environ.get("TJX_HF_PEER_VENV") or DEFAULT_VENV)


def _clean_env() -> dict[str, str]:
    """This environment without ``PYTHONPATH``: the venv imports its own packages only."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def installed_versions(python: Path, packages: Iterable[str]) -> dict[str, str | None]:
    """Each package's version in the interpreter ``python`` (``None``: not installed; every one
    ``None`` when the interpreter does not run)."""
    names = list(packages)
    if not python.is_file():
        return dict.fromkeys(names)
    proc = subprocess.run(
        [str(python), "-c", _PROBE, *names],
        capture_output=True,
        text=True,
        check=False,
        env=_clean_env(),
    )
    if proc.returncode != 0:
        return dict.fromkeys(names)
    found: dict[str, str | None] = json.loads(proc.stdout)
    return found


def peer_python(
    venv: Path | None = None,
    packages: Iterable[str] = HF_PEERS,
    *,
    say: Callable[[str], None] | None = None,
) -> Path:
    """The venv's interpreter once ``packages`` are installed in it at their `PINS`.

    Made with ``python -m venv`` when it has no working interpreter, then ``pip install`` of
    the pins (pip's own configuration: its index, constraints and CA bundle); a venv that holds
    other versions gets the pins installed over them. Under ``<venv>.lock``, so processes that
    need it at once (a second Pants batch, the nanoGPT tool) make it once.

    Parameters
    ----------
    venv : Path, optional
        Where it lives (default: `venv_path`).
    packages : iterable of str
        The packages this peer imports (names of `PINS`).
    say : callable, optional
        Told one line before pip runs (the venv is being made or changed: minutes).

    Raises
    ------
    PeerVenvError
        pip failed, or left a package off its pin.
    """
    venv = venv or venv_path()
    names = list(packages)
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wrong = off_pins(installed_versions(python, names), names)
        if not wrong:
            return python
        if say is not None:
            say(f"peer venv {venv}: installing {', '.join(requirements(names))}")
        if installed_versions(python, ["pip"])["pip"] is None:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", *requirements(names)]
        done = subprocess.run(pip, check=False, env=_clean_env())
        wrong = off_pins(installed_versions(python, names), names)
        if done.returncode != 0 or wrong:
            raise PeerVenvError(
                f"could not install {', '.join(requirements(names))} into {venv} (pip exit "
                f"{done.returncode}; {', '.join(wrong) or 'see its output above'}); check pip's "
                "index and certificate settings"
            )
    return python
