"""The docs' scratch venv: MkDocs and the Material theme at pinned versions, never in the
project's resolve (a lockfile change would risk CI's fresh-clone install check).

Made on first use at ``$TJX_DOCS_VENV`` (default ``~/.cache/tjx/docs-venv``) under a lock file, so
two processes that need it at once make it once; a venv holding other versions is brought to the
pins. pip runs with the machine's own configuration (its index, constraints and CA bundle).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

#: Every package the build imports, at the version it was written against: the whole closure, so a
#: build is the same on every machine (mkdocs-material 9.8.1 and its dependencies, 2026-11-28).
PINS: Mapping[str, str] = {
    "mkdocs": "1.6.1",
    "mkdocs-material": "9.8.1",
    "mkdocs-material-extensions": "1.3.1",
    "pymdown-extensions": "13.1.2",
    "Markdown": "3.11.3",
    "Pygments": "2.21.0",
    "Jinja2": "3.1.6",
    "MarkupSafe": "3.0.4",
    "PyYAML": "6.0.4",
    "babel": "2.19.0",
    "backrefs": "8.3.1",
    "click": "8.5.1",
    "colorama": "0.4.6",
    "ghp-import": "2.1.0",
    "mergedeep": "1.3.4",
    "mkdocs-get-deps": "0.2.2",
    "packaging": "26.4",
    "paginate": "0.5.7",
    "pathspec": "1.1.1",
    "platformdirs": "4.14.8",
    "python-dateutil": "4.0.0",
    "pyyaml_env_tag": "1.1",
    "requests": "2.34.2",
    "watchdog": "7.1.0",
}
#: Where the venv lives unless ``$TJX_DOCS_VENV`` says otherwise.
DEFAULT_VENV = Path.home() / ".cache" / "tjx" / "docs-venv"
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


class DocsVenvError(RuntimeError):
    """The venv could not be made or brought to the pins (pip failed, no index)."""


def venv_path() -> Path:
    """``$TJX_DOCS_VENV``, else `DEFAULT_VENV`."""
    return Path(os.environ.get("TJX_DOCS_VENV") or DEFAULT_VENV)


def clean_env() -> dict[str, str]:
    """This environment without ``PYTHONPATH``: the venv imports its own packages only."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def off_pins(python: Path) -> list[str]:
    """The pinned packages that ``python`` lacks or holds at another version, as
    ``"mkdocs 1.5.3 (pinned 1.6.1)"`` (every one when the interpreter does not run)."""
    installed: dict[str, str | None] = dict.fromkeys(PINS)
    if python.is_file():
        proc = subprocess.run(
            [str(python), "-c", _PROBE, *PINS],
            capture_output=True,
            text=True,
            check=False,
            env=clean_env(),
        )
        if proc.returncode == 0:
            installed = json.loads(proc.stdout)
    return [
        f"{name} {installed.get(name) or 'missing'} (pinned {pin})"
        for name, pin in PINS.items()
        if installed.get(name) != pin
    ]


def docs_python(venv: Path | None = None, say: Callable[[str], None] | None = None) -> Path:
    """The venv's interpreter once every package of `PINS` is installed in it at its pin.

    Parameters
    ----------
    venv : Path, optional
        Where it lives (default: `venv_path`).
    say : callable, optional
        Told one line before pip runs (the venv is being made or changed: ~30 s).

    Raises
    ------
    DocsVenvError
        pip failed, or left a package off its pin.
    """
    venv = venv or venv_path()
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not off_pins(python):
            return python
        if say is not None:
            say(
                f"docs venv {venv}: installing mkdocs {PINS['mkdocs']}, "
                f"mkdocs-material {PINS['mkdocs-material']} and their dependencies"
            )
        if not python.is_file():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pins = [f"{name}=={pin}" for name, pin in PINS.items()]
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        done = subprocess.run([*pip, *pins], check=False, env=clean_env())
        wrong = off_pins(python)
        if done.returncode != 0 or wrong:
            raise DocsVenvError(
                f"could not install the docs' pinned packages into {venv} (pip exit "
                f"{done.returncode}; {', '.join(wrong) or 'see its output above'}); check pip's "
                "index and certificate settings, or remove the folder and try again"
            )
    return python
