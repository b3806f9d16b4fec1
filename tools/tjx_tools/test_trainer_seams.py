"""Tests of tools/trainer_seams.py: its counts on snippets each test writes, and the trainer held
to issue 53's goals (``Any`` <= 40, function-level imports <= 10); the trainer's line is recorded
for CI's report (tools/ci_summary.py reads it from this file's JUnit properties)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trainer_seams
from ci_summary import SEAMS_PROPERTY
from trainer_seams import Seams, count_source, count_tree, total

import trainer

SNIPPET = """
from __future__ import annotations
import typing
from typing import TYPE_CHECKING, Any
if TYPE_CHECKING:
    import numpy
try:
    import yaml
except ImportError:
    yaml = None
Blob = dict[str, Any]
def f(x: Any, *args: typing.Any) -> list[Any]:
    import json
    from os import path
    def inner() -> None:
        import math
    return [lambda: __import__("re")]
class C:
    def m(self) -> None:
        from collections import abc
    field: Any = None
"""


def test_any_counts_each_use_but_not_its_import() -> None:
    # Blob's alias, f's three (one as typing.Any), C's field; the import line is no use.
    assert count_source(SNIPPET).any_uses == 5


def test_only_imports_in_function_bodies_count_once_each() -> None:
    # f's two, inner's one (not again for f), C.m's one; module level, TYPE_CHECKING and try:
    # none; __import__ is a call, not an import statement.
    assert count_source(SNIPPET).function_imports == 4


def test_the_tree_skips_tests_and_adds_up(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "a.py").write_text("from typing import Any\nx: Any\n")
    (tmp_path / "job" / "b.py").write_text("def f() -> None:\n    import os\n")
    (tmp_path / "tests" / "test_c.py").write_text("from typing import Any\ny: Any\nz: Any\n")
    counts = count_tree(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in counts) == ["a.py", "job/b.py"]
    assert total(counts) == Seams(1, 1)
    assert total(counts).line() == "trainer seams: 1 Any, 1 function-level imports"


def test_the_trainer_stays_within_issue_53s_goals(
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    root = Path(trainer.__file__).resolve().parent
    counts = count_tree(root)
    # The whole app is counted (the sandbox holds every module, not only those imported).
    names = {p.relative_to(root).as_posix() for p in counts}
    assert {
        "cli.py",
        "start/startup.py",
        "step/train_step.py",
        "config/folder.py",
        "config/seams.py",
    } <= names
    seams = total(counts)
    record_testsuite_property(SEAMS_PROPERTY, seams.line())
    assert seams.any_uses <= trainer_seams.ANY_GOAL, seams.line()
    assert seams.function_imports <= trainer_seams.IMPORT_GOAL, seams.line()
