"""Each tjx wheel installs alone into a fresh Python 3.11 venv, imports, and declares what it needs.

Pants builds the eight wheels (``runtime_package_dependencies`` in this folder's BUILD) and
puts them in the test's working directory; outside Pants, set ``TJX_WHEEL_DIR`` to the output
folder of ``pants package ::``. Each venv gets exactly one wheel, with its siblings available
from the same folder (``--find-links``) and everything else from the package index, as a user's
``pip install`` would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from uv import find_uv_bin

from tjx.kernels.tokamax_ops import TOKAMAX_VERSION

PACKAGES = ("core", "kernels", "nn", "optim", "parallel", "data", "ckpt", "metrics")
# What each wheel must require (a name per line of its metadata), and what it must not: the DAG of
# docs/architecture.md, seen from the outside.
REQUIRED = {
    "core": set(),  # the standard library at import time (PyYAML and numpy at most, by the DAG)
    "kernels": {"jax"},
    "nn": {"tjx-kernels", "flax", "einops", "jax"},
    "optim": {"optax"},
    "parallel": {"jax"},
    "data": {"datasets", "tokenizers", "numpy", "zstandard"},
    "ckpt": {"orbax-checkpoint"},
    "metrics": {"jax", "numpy"},
}
# tjx-core is the DAG's bottom floor: any package may require it, and it requires no sibling.
SIBLINGS_ALLOWED = {"nn": {"tjx-kernels"}}
CORE_ALLOWED = {"kernels", "nn", "optim", "parallel", "data", "ckpt", "metrics"}
NEVER = {"torch", "tensorflow", "pytest"}
REQUIREMENT_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def wheel_dir() -> Path:
    explicit = os.environ.get("TJX_WHEEL_DIR")
    if explicit:
        return Path(explicit)
    found = sorted(Path.cwd().rglob("tjx_kernels-*.whl"))
    if not found:
        raise AssertionError(
            "no tjx wheels here: run this test with `./pants test tests-integration:wheels`, "
            "or set TJX_WHEEL_DIR to the output folder of `./pants package ::`"
        )
    return found[0].parent


def wheel_for(name: str) -> Path:
    wheels = sorted(wheel_dir().glob(f"tjx_{name}-*-py3-none-any.whl"))
    assert len(wheels) == 1, f"expected one tjx_{name} wheel in {wheel_dir()}, found {wheels}"
    return wheels[0]


def requirement_name(requirement: str) -> str:
    match = REQUIREMENT_NAME.match(requirement)
    assert match is not None, f"unreadable requirement {requirement!r}"
    return match.group(1).lower().replace("_", "-")


def run(*args: str | Path) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("name", PACKAGES)
def test_wheel_installs_alone_and_declares_its_requirements(name: str, tmp_path: Path) -> None:
    wheel = wheel_for(name)
    version = wheel.name.split("-")[1]
    uv = find_uv_bin()
    venv = tmp_path / "venv"
    run(uv, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    # uv's cache makes the second and later installs take seconds instead of minutes.
    run(uv, "pip", "install", "--quiet", "--python", python, "--find-links", wheel.parent, wheel)
    probe = (
        "import importlib.metadata as md, json, sys\n"
        f"import tjx.{name} as pkg\n"
        # Every exported name, so that names loaded on first use (tjx.ckpt's) are imported too.
        "[getattr(pkg, n) for n in pkg.__all__]\n"
        "print(json.dumps({'version': pkg.__version__, 'file': pkg.__file__,"
        f" 'requires': md.requires('tjx-{name}') or [], 'api': sorted(pkg.__all__)}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["version"] == version
    assert str(venv) in info["file"], f"tjx.{name} imported from outside the venv: {info['file']}"
    assert "__version__" in info["api"] and len(info["api"]) > 1, "the package exports no API"
    hard = [r for r in info["requires"] if "extra ==" not in r]
    names = {requirement_name(r) for r in hard}
    assert REQUIRED[name] <= names, f"tjx-{name} lacks {REQUIRED[name] - names}: {hard}"
    assert not names & NEVER, f"tjx-{name} requires {names & NEVER}"
    siblings = {n for n in names if n.startswith("tjx-")} - {"tjx-core"}
    assert siblings == SIBLINGS_ALLOWED.get(name, set()), f"tjx-{name} pins {siblings}"
    assert "tjx-core" not in names or name in CORE_ALLOWED, f"tjx-{name} requires tjx-core"
    if name == "core":
        assert names <= {"pyyaml", "numpy"}, f"tjx-core requires {names}"
    if name == "kernels":  # tokamax only as the `gpu` extra, at the version tokamax_ops pins
        extra = [re.sub(r"[ ()'\"]", "", r) for r in info["requires"] if "extra ==" in r]
        assert extra == [f"tokamax=={TOKAMAX_VERSION};extra==gpu"], extra
    for requirement in hard:
        if requirement.startswith("tjx-"):
            sibling = requirement_name(requirement).removeprefix("tjx-")
            sibling_version = wheel_for(sibling).name.split("-")[1]
            assert f"~={sibling_version}" in requirement.replace(" ", ""), requirement
