"""Release one tjx package: bump its version, add a CHANGELOG entry, show who depends on it.

A package's version has one source of truth, ``__version__`` in ``src/tjx/<name>/version.py``
when the package has that module, else in its ``__init__.py``
(Pants' ``tjx_version`` plugin puts it into the wheel). Siblings pin each other with a compatible
range (``tjx-kernels ~= 0.2.0``) that Pants writes into each wheel's metadata at ``pants package``
time, from the versions in the tree, so a bump changes this package's wheel and, on their next
build, only the pins of the packages listed as dependents.

Usage: tools/release tjx-nn {major|minor|patch|X.Y.Z} -m "what changed" [--date YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

VERSION_LINE = re.compile(r'^(__version__\s*=\s*")(\d+)\.(\d+)\.(\d+)(")', re.M)
EXPLICIT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
IMPORT_OF = re.compile(r"^\s*(?:from|import)\s+tjx\.(\w+)", re.M)
FROM_TJX_IMPORT = re.compile(r"^\s*from\s+tjx\s+import\s+\(?([\w\s,]+)", re.M)


class ReleaseError(ValueError):
    """A release request that cannot be carried out; the message says why and what to do."""


def package_dir(root: Path, package: str) -> Path:
    """Return ``packages/tjx-<name>`` for ``tjx-<name>`` or ``<name>``, or raise ReleaseError."""
    name = package.removeprefix("tjx-")
    path = root / "packages" / f"tjx-{name}"
    if not path.is_dir():
        known = ", ".join(sorted(p.name for p in (root / "packages").glob("tjx-*")))
        raise ReleaseError(f"unknown package {package!r}; known packages: {known}")
    return path


def init_file(pkg_dir: Path) -> Path:
    """The module holding the package's ``__version__``: ``version.py``, else ``__init__.py``."""
    src = pkg_dir / "src" / "tjx" / pkg_dir.name.removeprefix("tjx-")
    return src / "version.py" if (src / "version.py").exists() else src / "__init__.py"


def read_version(pkg_dir: Path) -> str:
    """Return the package's current ``__version__``."""
    match = VERSION_LINE.search(init_file(pkg_dir).read_text())
    if match is None:
        raise ReleaseError(f'{init_file(pkg_dir)} has no `__version__ = "X.Y.Z"` line')
    return ".".join(match.group(2, 3, 4))


def next_version(current: str, bump: str) -> str:
    """Return the version after ``current`` for a bump of major/minor/patch or an explicit X.Y.Z."""
    major, minor, patch = (int(part) for part in current.split("."))
    if bump == "major":
        return f"{major + 1}.0.0"
    if bump == "minor":
        return f"{major}.{minor + 1}.0"
    if bump == "patch":
        return f"{major}.{minor}.{patch + 1}"
    if EXPLICIT_VERSION.match(bump):
        if tuple(int(p) for p in bump.split(".")) <= (major, minor, patch):
            raise ReleaseError(f"version {bump} is not newer than the current {current}")
        return bump
    raise ReleaseError(f"bump must be major, minor, patch or X.Y.Z, not {bump!r}")


def write_version(pkg_dir: Path, version: str) -> None:
    """Replace the package's ``__version__`` with ``version``."""
    path = init_file(pkg_dir)
    major, minor, patch = version.split(".")
    text = VERSION_LINE.sub(
        lambda m: f"{m.group(1)}{major}.{minor}.{patch}{m.group(5)}", path.read_text()
    )
    path.write_text(text)


def add_changelog_entry(pkg_dir: Path, version: str, message: str, date: str) -> None:
    """Insert ``## <version> — <date>`` with ``message`` above the newest entry of CHANGELOG.md."""
    path = pkg_dir / "CHANGELOG.md"
    text = path.read_text() if path.exists() else f"# Changelog — {pkg_dir.name}\n"
    entry = f"## {version} — {date}\n\n" + "".join(f"- {line}\n" for line in message.splitlines())
    first = text.find("\n## ")
    if first == -1:
        text = text.rstrip("\n") + "\n\n" + entry
    else:
        text = text[: first + 1] + entry + "\n" + text[first + 1 :]
    path.write_text(text)


def imported_packages(source: str) -> set[str]:
    """The ``tjx.<name>`` packages a source file imports (``import tjx.x``, ``from tjx.x import``,
    ``from tjx import x``)."""
    names = set(IMPORT_OF.findall(source))
    for group in FROM_TJX_IMPORT.findall(source):
        names.update(part.split()[0] for part in group.split(",") if part.strip())
    return names


def dependents(root: Path, package: str) -> list[str]:
    """Packages (and apps) whose sources import ``tjx.<name>``: their wheels pin this one."""
    name = package.removeprefix("tjx-")
    found = []
    for other in sorted((root / "packages").glob("tjx-*")) + sorted((root / "apps").glob("*")):
        if other.name == f"tjx-{name}" or not other.is_dir():
            continue
        sources = (other / "src").rglob("*.py") if (other / "src").is_dir() else other.rglob("*.py")
        if any(name in imported_packages(path.read_text(errors="replace")) for path in sources):
            found.append(other.name if other.parent.name == "packages" else f"apps/{other.name}")
    return found


def release(root: Path, package: str, bump: str, message: str, date: str) -> tuple[str, str]:
    """Bump ``package`` and record ``message``; return (old version, new version)."""
    if not message.strip():
        raise ReleaseError("a CHANGELOG message is required: pass -m 'what changed'")
    pkg_dir = package_dir(root, package)
    old = read_version(pkg_dir)
    new = next_version(old, bump)
    write_version(pkg_dir, new)
    add_changelog_entry(pkg_dir, new, message.strip(), date)
    return old, new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/release", description=__doc__.split("\n")[0])
    parser.add_argument("package", help="tjx-<name> or <name>")
    parser.add_argument("bump", help="major, minor, patch, or an explicit X.Y.Z")
    parser.add_argument("-m", "--message", required=True, help="the CHANGELOG entry")
    parser.add_argument("--date", default=dt.date.today().isoformat())
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args(argv)
    try:
        old, new = release(args.root, args.package, args.bump, args.message, args.date)
    except ReleaseError as error:
        print(f"release: {error}", file=sys.stderr)
        return 2
    pkg_dir = package_dir(args.root, args.package)
    name = pkg_dir.name
    print(f"{name}: {old} -> {new} ({init_file(pkg_dir).name} and CHANGELOG.md updated)")
    users = dependents(args.root, name)
    if users:
        print(f"depended on by: {', '.join(users)}")
        print(
            f"their next wheels will require {name} ~= {new} (Pants writes the pin at package time)"
        )
    else:
        print("no other package depends on it")
    print("next: ./pants package " + f"packages/{name}:dist")
    return 0


if __name__ == "__main__":
    sys.exit(main())
