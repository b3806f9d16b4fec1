"""Tests of tools/release on a two-package tree that each test writes itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from tjx_tools import release


def make_tree(root: Path) -> None:
    modules = {"a": "", "b": "from tjx.a import thing\n", "c": "from tjx import (\n    b,\n)\n"}
    for name, body in modules.items():
        src = root / "packages" / f"tjx-{name}" / "src" / "tjx" / name
        src.mkdir(parents=True)
        (src / "__init__.py").write_text(f'"""tjx.{name}."""\n\n__version__ = "0.1.0"\n')
        (src / "mod.py").write_text(body)
        (root / "packages" / f"tjx-{name}" / "CHANGELOG.md").write_text(
            f"# Changelog — tjx-{name}\n\n## 0.1.0 — unreleased\n\n- First release.\n"
        )
    (root / "apps" / "trainer").mkdir(parents=True)
    (root / "apps" / "trainer" / "loop.py").write_text("import tjx.a\n")


@pytest.mark.parametrize(
    ("bump", "expected"),
    [("patch", "0.1.1"), ("minor", "0.2.0"), ("major", "1.0.0"), ("0.3.4", "0.3.4")],
)
def test_bump_changes_only_that_package(tmp_path: Path, bump: str, expected: str) -> None:
    make_tree(tmp_path)
    before_b = {
        p: p.read_text() for p in (tmp_path / "packages" / "tjx-b").rglob("*") if p.is_file()
    }
    old, new = release.release(tmp_path, "tjx-a", bump, "Faster thing", "2026-11-21")
    assert (old, new) == ("0.1.0", expected)
    pkg_a = tmp_path / "packages" / "tjx-a"
    assert release.read_version(pkg_a) == expected
    changelog = (pkg_a / "CHANGELOG.md").read_text()
    assert changelog.index(f"## {expected} — 2026-11-21") < changelog.index("## 0.1.0")
    assert "- Faster thing\n" in changelog
    after_b = {
        p: p.read_text() for p in (tmp_path / "packages" / "tjx-b").rglob("*") if p.is_file()
    }
    assert after_b == before_b


def test_version_module_wins_over_init(tmp_path: Path) -> None:
    # A package whose modules need their own version keeps it in version.py (tjx-ckpt does).
    make_tree(tmp_path)
    src = tmp_path / "packages" / "tjx-b" / "src" / "tjx" / "b"
    (src / "__init__.py").write_text("from tjx.b.version import __version__\n")
    (src / "version.py").write_text('__version__ = "0.4.2"\n')
    assert release.release(tmp_path, "b", "minor", "More", "2026-11-22") == ("0.4.2", "0.5.0")
    assert (src / "version.py").read_text() == '__version__ = "0.5.0"\n'
    assert (src / "__init__.py").read_text() == "from tjx.b.version import __version__\n"


def test_dependents_come_from_imports(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert release.dependents(tmp_path, "tjx-a") == ["tjx-b", "apps/trainer"]
    assert release.dependents(tmp_path, "b") == ["tjx-c"]  # `from tjx import (b,)`
    assert release.dependents(tmp_path, "c") == []


def test_imported_packages_reads_every_import_form() -> None:
    source = "import tjx.a\nfrom tjx.b.x import y\nfrom tjx import c, d as e\nimport tjxother\n"
    assert release.imported_packages(source) == {"a", "b", "c", "d"}


@pytest.mark.parametrize(
    ("package", "bump", "message", "fragment"),
    [
        ("tjx-zz", "patch", "x", "unknown package 'tjx-zz'; known packages: tjx-a, tjx-b, tjx-c"),
        ("tjx-a", "sideways", "x", "bump must be major, minor, patch or X.Y.Z"),
        ("tjx-a", "0.0.9", "x", "not newer than the current 0.1.0"),
        ("tjx-a", "patch", "  ", "a CHANGELOG message is required"),
    ],
)
def test_bad_requests_name_the_problem(
    tmp_path: Path, package: str, bump: str, message: str, fragment: str
) -> None:
    make_tree(tmp_path)
    with pytest.raises(release.ReleaseError, match=fragment):
        release.release(tmp_path, package, bump, message, "2026-11-21")
    assert release.read_version(tmp_path / "packages" / "tjx-a") == "0.1.0"


def test_main_prints_dependents_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(tmp_path)
    assert release.main(["tjx-a", "minor", "-m", "New API", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tjx-a: 0.1.0 -> 0.2.0" in out
    assert "tjx-b, apps/trainer" in out and "~= 0.2.0" in out
    assert release.main(["nope", "minor", "-m", "x", "--root", str(tmp_path)]) == 2
    assert "unknown package" in capsys.readouterr().err
