"""Tests of CI's closing report (tools/ci_summary.py) on reports each test writes itself."""

from __future__ import annotations

from pathlib import Path

import ci_summary
import pytest

JUNIT = """<testsuites><testsuite>
<testcase name="a"/><testcase name="b"/>
<testcase name="c"><failure message="x"/></testcase>
<testcase name="d"><error message="y"/></testcase>
<testcase name="e"><skipped/></testcase>
</testsuite></testsuites>"""


def test_slowest_files_sum_each_files_cases(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_text(
        '<testsuites><testsuite><testcase classname="pkg.test_x" name="a" time="1.5"/>'
        '<testcase classname="pkg.test_x" name="b" time="2.0"/>'
        '<testcase classname="pkg.test_y" name="c" time="3.0"/></testsuite></testsuites>'
    )
    assert ci_summary.slowest_files(tmp_path) == [("pkg.test_x", 3.5), ("pkg.test_y", 3.0)]
    assert ci_summary.slowest_files(tmp_path, count=1) == [("pkg.test_x", 3.5)]


def coverage_xml(rows: dict[str, list[int]]) -> str:
    classes = "".join(
        f'<class filename="{path}"><lines>'
        + "".join(f'<line number="{i}" hits="{h}"/>' for i, h in enumerate(hits, 1))
        + "</lines></class>"
        for path, hits in rows.items()
    )
    return (
        f"<coverage><packages><package><classes>{classes}</classes></package></packages></coverage>"
    )


def test_counts_passed_failed_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "one.xml").write_text(JUNIT)
    (tmp_path / "reports" / "two.xml").write_text(JUNIT)
    assert ci_summary.count_tests(tmp_path / "reports") == (4, 4, 2)


def test_coverage_is_grouped_by_package_and_ignores_tests(tmp_path: Path) -> None:
    path = tmp_path / "coverage.xml"
    path.write_text(
        coverage_xml(
            {
                "packages/tjx-nn/src/tjx/nn/a.py": [1, 1, 0, 1],
                "tjx/nn/b.py": [1, 1],
                "packages/tjx-nn/tests/tjx_nn_tests/test_a.py": [0, 0],
                "tools/tjx_tools/release.py": [0],
            }
        )
    )
    assert ci_summary.coverage_by_package(path) == {"nn": (5, 6)}


@pytest.mark.parametrize(
    ("hits", "junit", "code", "closing"),
    [
        (
            [1] * 10,
            JUNIT.replace("<failure", "<skipped").replace("<error", "<skipped"),
            0,
            "2 passed, 0 failed, 3 skipped",
        ),
        (
            [1] * 9 + [0] * 2,
            JUNIT.replace("<failure", "<skipped").replace("<error", "<skipped"),
            1,
            "2 passed, 0 failed",
        ),
        ([1] * 10, JUNIT, 1, "2 passed, 2 failed, 1 skipped"),
        ([1] * 10, "<testsuites/>", 1, "0 passed, 0 failed, 0 skipped"),
    ],
    ids=["green", "coverage-below-floor", "failures", "no-test-ran"],
)
def test_exit_code_and_closing_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    hits: list[int],
    junit: str,
    code: int,
    closing: str,
) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "r.xml").write_text(junit)
    (tmp_path / "coverage.xml").write_text(coverage_xml({"tjx/optim/x.py": hits}))
    assert ci_summary.main([str(tmp_path / "reports"), str(tmp_path / "coverage.xml")]) == code
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(closing)


def test_missing_coverage_report_fails(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "r.xml").write_text('<testsuite><testcase name="a"/></testsuite>')
    assert ci_summary.main([str(tmp_path / "reports"), str(tmp_path / "nope.xml")]) == 1


def test_walks_are_the_recorded_walk_properties_once_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = "walk train.steps: 3 files, 5 calls, 2 returns"
    walk = f'<properties><property name="{ci_summary.WALK_PROPERTY}" value="{line}"/></properties>'
    other = '<properties><property name="ARCH" value="x86"/></properties>'
    for name in ("a.xml", "b.xml"):  # two batches of one run: the line once
        (tmp_path / name).write_text(
            f'<testsuites><testsuite>{walk}{other}<testcase name="a"/></testsuite></testsuites>'
        )
    assert ci_summary.walks(tmp_path) == [line]
    assert ci_summary.main([str(tmp_path)]) == 0
    assert f"  {line}" in capsys.readouterr().out.splitlines()


def test_the_walk_to_the_first_step_is_printed_after_the_setting_walks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    walk_lines = [
        "walk model.attention_impl: 10 files, 25 calls, 15 returns",
        "walk train.steps: 10 files, 28 calls, 18 returns",
        "walk first step: 134 files, 379 calls, 245 returns",
    ]
    props = "".join(
        f'<property name="{ci_summary.WALK_PROPERTY}" value="{line}"/>' for line in walk_lines
    )
    (tmp_path / "a.xml").write_text(
        f'<testsuite><properties>{props}</properties><testcase name="a"/></testsuite>'
    )
    assert ci_summary.walks(tmp_path) == walk_lines
    assert ci_summary.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(out) if line.startswith("setting walks"))
    assert out[header + 1 : header + 4] == [f"  {line}" for line in walk_lines]


def test_the_seams_line_is_printed_beside_the_walks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    walk_line = "walk train.steps: 3 files, 5 calls, 2 returns"
    seams_line = "trainer seams: 18 Any, 13 function-level imports"
    props = "".join(
        f'<property name="{name}" value="{value}"/>'
        for name, value in (
            (ci_summary.WALK_PROPERTY, walk_line),
            (ci_summary.SEAMS_PROPERTY, seams_line),
        )
    )
    (tmp_path / "a.xml").write_text(
        f'<testsuite><properties>{props}</properties><testcase name="a"/></testsuite>'
    )
    assert ci_summary.seams(tmp_path) == [seams_line]
    assert ci_summary.walks(tmp_path) == [walk_line]  # each property in its own list
    assert ci_summary.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out.index(f"  {seams_line}") == out.index(f"  {walk_line}") + 2  # after its header


def test_no_seams_line_says_which_test_records_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.xml").write_text('<testsuite><testcase name="a"/></testsuite>')
    assert ci_summary.main([str(tmp_path)]) == 0
    assert "  none recorded (tools/tjx_tools/test_trainer_seams.py)" in capsys.readouterr().out
