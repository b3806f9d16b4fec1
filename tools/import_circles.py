#!/usr/bin/env python3
"""Circles among the modules of each tjx package and app, every import counted.

House's check (shared/checks/house.py) skips imports under ``if TYPE_CHECKING:``; a type checker
and a reader do not: a module that imports another only for its annotations still needs it to be
read, and a circle there is one mypy and the reader walk. This check counts every import
statement of a module's source (not its tests): at the top, inside a function, under ``if
TYPE_CHECKING:``, inside a ``with lazy_imports(globals()):`` or ``lazy_api`` block.

``from a.b import c`` is an edge to ``a.b.c`` when that is a module of the unit, else to ``a.b``
(a package's ``__init__``); ``import a.b`` is an edge to ``a.b``. Importing ``a.b`` runs ``a``'s
``__init__`` first, but that is not counted: a package's face imports its own modules (eagerly or
lazily), and a module that names a sibling by its full path does not depend on the face.

Run from the project root: ``python3 tools/import_circles.py``; prints one line per circle and
exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

APPS = ("trainer", "eval", "experiments")


def is_test(path: Path) -> bool:
    """A test, benchmark or fixture file (not part of a unit's shipped source)."""
    return (
        any(part in ("tests", "benchmarks") for part in path.parts)
        or path.name.startswith("test_")
        or path.name == "conftest.py"
    )


def units(root: Path) -> Iterator[tuple[str, Path, list[Path]]]:
    """(unit, import base, source files) of each package (``tjx.<name>``) and app."""
    for pkg in sorted((root / "packages").glob("tjx-*")):
        name = pkg.name.removeprefix("tjx-")
        src = pkg / "src"
        files = sorted((src / "tjx" / name).rglob("*.py"))
        yield f"tjx.{name}", src, [p for p in files if not is_test(p.relative_to(src))]
    for app in APPS:
        base = root / "apps" / app
        files = sorted((base / app).rglob("*.py"))
        yield app, base, [p for p in files if not is_test(p.relative_to(base))]


def module_name(path: Path, base: Path) -> str:
    """The dotted name of ``path`` under the import base ``base``."""
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """(module, names) of every import statement anywhere in ``tree``, relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            yield target, [alias.name for alias in node.names]


def graph(base: Path, files: Iterable[Path]) -> dict[str, set[str]]:
    """Module → the unit's modules it imports (every import statement counted)."""
    paths = {module_name(p, base): p for p in files}
    out: dict[str, set[str]] = {m: set() for m in paths}
    for mod, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, names in imports(tree, mod, path.name == "__init__.py"):
            named = [f"{target}.{n}" for n in names if f"{target}.{n}" in paths]
            # `from pkg import a, b` with a and b both modules: an edge to each; else to pkg.
            for dep in named or ([target] if target in paths else []):
                if dep != mod:
                    out[mod].add(dep)
    return out


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            nxt = next(todo, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def find(root: Path) -> list[str]:
    """One line per circle in the packages and apps under ``root``."""
    lines = []
    for unit, base, files in units(root):
        for comp in circles(graph(base, files)):
            lines.append(f"{unit}: {len(comp)} modules import each other: {' <-> '.join(comp)}")
    return lines


def main() -> int:
    """Print the circles of the project at the working directory; 1 if there is any."""
    lines = find(Path.cwd())
    for line in lines:
        print(line)
    print(f"import circles: {len(lines)}")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
