"""How typed the trainer's seams are: its ``Any`` annotations and its function-level imports.

``python tools/trainer_seams.py`` prints ``trainer seams: N Any, M function-level imports`` for the
trainer app's source (``apps/trainer/trainer``, its tests excluded), then, with ``--files``, each
file's two counts. Issue 53's goals are at most `ANY_GOAL` and `IMPORT_GOAL`;
tools/tjx_tools/test_trainer_seams.py holds the trainer to them and records the line for CI's
report (tools/ci_summary.py).

What counts:

- an ``Any``: each use of the name ``Any`` (or ``typing.Any``) in the code, annotations and
  aliases alike (``from typing import Any`` itself is not a use);
- a function-level import: each ``import`` / ``from ... import`` statement inside a function or
  method body (at any depth; one inside a nested function counts once). Imports at module level,
  also under ``if TYPE_CHECKING:`` or ``try:``, do not count.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

#: The trainer app's source, relative to the repository root.
TRAINER = Path("apps/trainer/trainer")
#: Issue 53's goals.
ANY_GOAL = 40
IMPORT_GOAL = 10


@dataclass(frozen=True)
class Seams:
    """The counts of one file or of a whole tree."""

    any_uses: int = 0
    function_imports: int = 0

    def __add__(self, other: Seams) -> Seams:
        return Seams(self.any_uses + other.any_uses, self.function_imports + other.function_imports)

    def line(self) -> str:
        """``trainer seams: N Any, M function-level imports`` (CI's report prints it)."""
        return f"trainer seams: {self.any_uses} Any, {self.function_imports} function-level imports"


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _count(node: ast.AST, in_function: bool) -> Seams:
    """The counts of ``node`` and everything under it (``in_function``: inside a function body)."""
    here = Seams(
        any_uses=int(
            (isinstance(node, ast.Name) and node.id == "Any")
            or (isinstance(node, ast.Attribute) and node.attr == "Any")
        ),
        function_imports=int(in_function and isinstance(node, ast.Import | ast.ImportFrom)),
    )
    inner = in_function or isinstance(node, _FUNCTIONS)
    return sum((_count(child, inner) for child in ast.iter_child_nodes(node)), here)


def count_source(text: str) -> Seams:
    """The counts of one module's source ``text``."""
    return _count(ast.parse(text), in_function=False)


def count_tree(root: Path) -> dict[Path, Seams]:
    """Each ``*.py`` file under ``root`` but those in a ``tests`` folder, with its counts."""
    return {
        path: count_source(path.read_text(encoding="utf-8"))
        for path in sorted(root.rglob("*.py"))
        if "tests" not in path.relative_to(root).parts
    }


def total(counts: dict[Path, Seams]) -> Seams:
    """The sum of ``counts``."""
    return sum(counts.values(), Seams())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=TRAINER, help="the tree to count")
    parser.add_argument("--files", action="store_true", help="also each file's counts")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(
            f"trainer_seams: no folder {args.root}; run it from the repository root",
            file=sys.stderr,
        )
        return 2
    counts = count_tree(args.root)
    print(total(counts).line())
    if args.files:
        for path, seams in sorted(counts.items(), key=lambda item: -item[1].any_uses):
            if seams != Seams():
                print(f"  {seams.any_uses:3d} Any  {seams.function_imports:2d} imports  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
