"""The checks a package's moved-module tests share: which old paths are shims, who imports them.

tjx-nn and tjx-data each keep their old module paths (``tjx.nn.hf_io``, ``tjx.data.chat_run``…)
for one release as shims whose body is one ``alias(...)`` call
(`tjx.core.deprecation.module_moved`).
Their tests ask the same two questions of the package's source, answered here once.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path


def shim_modules(src: Path, package: str) -> set[str]:
    """The modules beside ``src/__init__.py`` whose whole body is one ``alias(...)`` call.

    Parameters
    ----------
    src : Path
        The package's folder (``Path(tjx.nn.__file__).parent``).
    package : str
        Its import name (``"tjx.nn"``), to name the modules found.

    Returns
    -------
    set[str]
        Dotted names of the shim modules.
    """
    found = set()
    for path in src.glob("*.py"):
        calls = [
            node.value.func.id
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
        ]
        if calls == ["alias"]:
            found.add(f"{package}.{path.stem}")
    return found


def old_path_importers(src: Path, package: str, moved: Collection[str]) -> dict[str, str]:
    """The package's modules (shims aside) that import one of the ``moved`` old paths.

    Parameters
    ----------
    src : Path
        The package's folder.
    package : str
        Its import name.
    moved : Collection[str]
        The old module paths.

    Returns
    -------
    dict[str, str]
        Module file (relative to ``src``) → the old path it imports; empty when none does.
    """
    users = {}
    for path in src.rglob("*.py"):
        if f"{package}.{path.stem}" in moved and path.parent == src:
            continue  # a shim itself
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            users.update({str(path.relative_to(src)): n for n in names if n in moved})
    return users
