"""Tests of tools/import_circles.py: a circle is found however its imports are written (at the
top, in a function, under ``if TYPE_CHECKING:``, in a lazy-import block), and the packages and
apps of this project have none."""

from __future__ import annotations

import textwrap
from pathlib import Path

import import_circles
import pytest

ROOT = Path(import_circles.__file__).resolve().parents[1]

#: a.py's import of b, written each way the check must count; b.py imports a at its top.
WAYS = {
    "top": "from tjx.demo import b\n",
    "function": "def f() -> None:\n    from tjx.demo.b import B\n",
    "type_checking": "from typing import TYPE_CHECKING\n"
    "if TYPE_CHECKING:\n    from tjx.demo.b import B\n",
    "lazy_imports": "from tjx.core.lazy import lazy_imports\nwith lazy_imports(globals()):\n"
    "    from tjx.demo import b\n",
    "relative": "from . import b\n",
}


def _project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "packages" / "tjx-demo" / "src" / "tjx" / "demo" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_circle_is_found_however_the_import_is_written(tmp_path: Path, way: str) -> None:
    root = _project(
        tmp_path,
        {"__init__.py": "", "a.py": WAYS[way], "b.py": "from tjx.demo.a import A\nB = 1\n"},
    )
    found = import_circles.find(root)
    assert found == ["tjx.demo: 2 modules import each other: tjx.demo.a <-> tjx.demo.b"]


def test_no_circle_through_a_package_face_or_a_test(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        {
            # the face imports its modules (lazily); the modules name each other by full path
            "__init__.py": "from tjx.core.lazy import lazy_api\nwith lazy_api(globals()):\n"
            "    from tjx.demo.a import A\n",
            "a.py": "from tjx.demo.b import B\nA = 1\n",
            "b.py": "B = 1\n",
            "tests/test_b.py": "from tjx.demo.a import A\n",
        },
    )
    (root / "packages/tjx-demo/src/tjx/demo/tests/__init__.py").write_text("")
    assert import_circles.find(root) == []
    # A module that reads a name from its package's face does depend on it: a circle.
    (root / "packages/tjx-demo/src/tjx/demo/b.py").write_text("from tjx.demo import A\nB = 1\n")
    assert len(import_circles.find(root)) == 1


def test_the_packages_and_apps_import_no_circle() -> None:
    """Every import counted (type-checking and lazy ones too): issue 69's goal is 0."""
    assert (ROOT / "packages" / "tjx-core").is_dir() and (ROOT / "apps" / "trainer").is_dir()
    assert import_circles.find(ROOT) == []
