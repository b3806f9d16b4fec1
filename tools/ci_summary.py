"""CI's closing report: test counts from Pants' JUnit XML and line coverage per package.

Pants prints no pytest closing line, so CI prints ``N passed, N failed`` itself, last, and exits
non-zero when a test failed or none ran, or when a package's line coverage is below 90 % (or the
coverage report is missing). Before it: the slowest test files, the walks of tools/trainer_walk.py
(each setting's, then the whole walk to the first train step) that
tools/tjx_tools/test_trainer_walk.py recorded in its JUnit report, and
the trainer's seams (tools/trainer_seams.py) that tools/tjx_tools/test_trainer_seams.py recorded.

Usage: python3 tools/ci_summary.py REPORTS_DIR [COVERAGE_XML]
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree

COVERAGE_FLOOR = 90.0
PACKAGE_OF_PATH = re.compile(r"(?:^|/)tjx/(\w+)/")
#: The JUnit property under which tools/tjx_tools/test_trainer_walk.py records each walk's line.
WALK_PROPERTY = "trainer walk"
#: How the whole walk's line (to the first train step) begins: printed after the setting walks.
FIRST_STEP_WALK = "walk first step:"
#: The JUnit property under which tools/tjx_tools/test_trainer_seams.py records the seams line.
SEAMS_PROPERTY = "trainer seams"


def count_tests(reports_dir: Path) -> tuple[int, int, int]:
    """Return (passed, failed, skipped) summed over every JUnit XML file under ``reports_dir``."""
    passed = failed = skipped = 0
    for report in sorted(reports_dir.rglob("*.xml")):
        root = ElementTree.parse(report).getroot()
        for case in root.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            elif case.find("skipped") is not None:
                skipped += 1
            else:
                passed += 1
    return passed, failed, skipped


def slowest_files(reports_dir: Path, count: int = 8) -> list[tuple[str, float]]:
    """The ``count`` test files with the most test time (seconds), summed from JUnit ``time``."""
    seconds: dict[str, float] = defaultdict(float)
    for report in sorted(reports_dir.rglob("*.xml")):
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            name = case.get("classname") or "?"  # pytest writes the test's module (and class) here
            seconds[name] += float(case.get("time", "0") or 0)
    return sorted(seconds.items(), key=lambda item: -item[1])[:count]


def recorded(reports_dir: Path, name: str) -> list[str]:
    """The values a test recorded as JUnit properties called ``name`` (pytest's
    ``record_testsuite_property``), once each, sorted."""
    lines: set[str] = set()
    for report in sorted(reports_dir.rglob("*.xml")):
        for prop in ElementTree.parse(report).getroot().iter("property"):
            if prop.get("name") == name:
                lines.add(prop.get("value", ""))
    return sorted(lines)


def walks(reports_dir: Path) -> list[str]:
    """The walks' summary lines (tools/trainer_walk.py) recorded as `WALK_PROPERTY`: the setting
    walks', sorted, then the whole walk's to the first step (`FIRST_STEP_WALK`)."""
    lines = recorded(reports_dir, WALK_PROPERTY)
    return sorted(lines, key=lambda line: line.startswith(FIRST_STEP_WALK))  # a stable sort


def seams(reports_dir: Path) -> list[str]:
    """The trainer's seams line (tools/trainer_seams.py) recorded as `SEAMS_PROPERTY`."""
    return recorded(reports_dir, SEAMS_PROPERTY)


def coverage_by_package(coverage_xml: Path) -> dict[str, tuple[int, int]]:
    """Return {package: (covered lines, total lines)} from a coverage.py XML report."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for cls in ElementTree.parse(coverage_xml).getroot().iter("class"):
        match = PACKAGE_OF_PATH.search(cls.get("filename", ""))
        if match is None:
            continue
        lines = cls.find("lines")
        for line in lines.iter("line") if lines is not None else []:
            totals[match.group(1)][1] += 1
            if int(line.get("hits", "0")) > 0:
                totals[match.group(1)][0] += 1
    return {name: (covered, total) for name, (covered, total) in totals.items()}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    reports_dir = Path(argv[0])
    status = 0
    if len(argv) > 1:
        if Path(argv[1]).is_file():
            print("line coverage by package:")
            for name, (covered, total) in sorted(coverage_by_package(Path(argv[1])).items()):
                percent = 100.0 * covered / max(total, 1)
                flag = ""
                if percent < COVERAGE_FLOOR:
                    flag, status = f"  (below the {COVERAGE_FLOOR:.0f} % floor)", 1
                print(f"  tjx-{name:<9} {percent:5.1f} %  ({covered}/{total} lines){flag}")
        else:
            print(f"no coverage report at {argv[1]}", file=sys.stderr)
            status = 1
    passed, failed, skipped = count_tests(reports_dir) if reports_dir.is_dir() else (0, 0, 0)
    if reports_dir.is_dir():
        # Where CI's time goes, so the 45-minute budget is watched, not guessed.
        print("slowest test files (s):")
        for name, seconds in slowest_files(reports_dir):
            print(f"  {seconds:7.1f}  {name}")
        # How far a setting is from where it acts (issue 53's goal: <= 10 files), and the whole
        # way to the first train step (issue 69's goal: <= 70 files), watched per run.
        print(
            "setting walks (tools/trainer_walk.py: command line -> where the setting acts:"
            " train.steps -> the training loop, model.attention_impl -> the attention kernel's"
            " call, tjx.kernels.attention; walk first step: -> the first train step):"
        )
        for line in walks(reports_dir) or ["none recorded (tools/tjx_tools/test_trainer_walk.py)"]:
            print(f"  {line}")
        # The trainer's typed seams (issue 53's goals: <= 40 Any, <= 10 function-level imports).
        print("trainer seams (tools/trainer_seams.py: Any uses, imports inside functions):")
        for line in seams(reports_dir) or ["none recorded (tools/tjx_tools/test_trainer_seams.py)"]:
            print(f"  {line}")
    if passed + failed == 0:
        print("no test ran: the JUnit reports are missing or empty", file=sys.stderr)
        status = 1
    if failed:
        status = 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
