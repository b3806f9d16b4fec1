"""The file sizes a commit records (``tjx_files.json``) and the short corruption reasons.

What the trainer saw with every checkpoint's data files (``state/**/d/*``) cut to half: dozens of
"Event loop is closed" tracebacks from orbax's failed reads, then a "no readable checkpoint"
error of kilobytes (tensorstore's JSON spec once per step) as its one error line.
"""

from __future__ import annotations

import gc
import json
import os
import re
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.ckpt import CheckpointManager, CorruptCheckpointError, restore_params_and_step
from tjx.ckpt.durable import COMMIT_MARKER, FILE_SIZES, file_sizes
from tjx.ckpt.errors import REASON_LIMIT, one_line
from tjx.ckpt.reader import corrupt, no_readable_step_error
from tjx.ckpt.stepfiles import recorded_files_problem
from tjx_ckpt_tests._restoring import (
    assert_one_skip_warning,
    assert_quiet,
    restore_error,
    restore_newest,
    save_steps,
    saved,
)
from tjx_ckpt_tests._states import assert_bit_exact, make_state

LAYERS = 4  # 45 leaves: enough reads in flight for orbax's noise when it does read
DATA_FILE = r"state/(?:ocdbt\.process_\d+/)?d/[0-9a-f]+"  # relative to the step
# A truncated data file as the file check names it.
TRUNCATED = re.compile(rf"({DATA_FILE}): (\d+) bytes, expected (\d+)")


def _data_files(step_dir: Path) -> list[Path]:
    files = sorted(p for p in (step_dir / "state").rglob("*") if p.parent.name == "d")
    assert len(files) > 1 and all(p.is_file() for p in files), "expected OCDBT data files"
    return files


def _truncate_data(step_dir: Path) -> None:
    for f in _data_files(step_dir):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@pytest.fixture
def array_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The steps whose arrays orbax was asked to read, in order.

    orbax's read of the arrays is what prints the "Event loop is closed" noise when it fails,
    but only when reads are still in flight as the first one fails (about half the runs here).
    That it never starts is the deterministic form of "no noise".
    """
    steps: list[int] = []
    real = ocp.CheckpointManager.restore

    def restore(self: ocp.CheckpointManager, step: int | None, *a: Any, **kw: Any) -> Any:
        args = kw.get("args")
        if args is not None and "state" in args:
            steps.append(int(step) if step is not None else -1)
        return real(self, step, *a, **kw)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
    return steps


def _snapshot(step_dir: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in sorted(step_dir.rglob("*")):
        info = p.lstat()
        out[str(p.relative_to(step_dir))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return out


def test_commit_records_the_size_of_every_file(tmp_path: Path) -> None:
    save_steps(tmp_path, (7,))
    step = tmp_path / "7"
    record = json.loads((step / FILE_SIZES).read_text())
    assert record["format"] == "tjx-ckpt-files" and record["format_version"] == 1
    on_disk = {
        p.relative_to(step).as_posix(): p.stat().st_size for p in step.rglob("*") if p.is_file()
    }
    # Everything but what the commit writes after the list: the marker (and the list itself).
    assert set(on_disk) - set(record["files"]) == {COMMIT_MARKER, FILE_SIZES}
    assert record["files"] == {k: v for k, v in on_disk.items() if k in record["files"]}
    assert list(record["files"]) == sorted(record["files"])
    assert sum(bool(re.fullmatch(DATA_FILE, k)) for k in record["files"]) > 1
    assert recorded_files_problem(step) is None


@pytest.mark.usefixtures("default_unraisablehook")
@pytest.mark.parametrize("how", ["manager", "params"])
def test_every_data_file_truncated_is_one_short_error_and_no_noise(
    tmp_path: Path,
    how: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    array_reads: list[int],
) -> None:
    save_steps(tmp_path, (15, 30), layers=LAYERS)
    for step in (15, 30):
        _truncate_data(tmp_path / str(step))
    capfd.readouterr()

    err = restore_error(tmp_path, how, layers=LAYERS)

    assert array_reads == []  # refused from the sizes alone, before orbax read any array
    assert_quiet(capfd, caplog, tmp_path)
    message = str(err)
    assert len(message) < 1000 and "\n" not in message, message
    assert message.startswith(f"no readable checkpoint in {tmp_path}: step 30: "), message
    assert "; step 15: " in message and "tensorstore_spec" not in message, message
    named = TRUNCATED.findall(message)
    for step, (rel, got, want) in zip((30, 15), named, strict=True):
        assert (tmp_path / str(step) / rel).stat().st_size == int(got) == int(want) // 2
    count = len(_data_files(tmp_path / "30"))
    assert f"(truncated), {count} of " in message, message
    # The per-step error stays reachable as the cause.
    assert isinstance(err.__cause__, CorruptCheckpointError) and "step 30 (" in str(err.__cause__)


@pytest.mark.usefixtures("default_unraisablehook")
@pytest.mark.parametrize("how", ["manager", "params"])
def test_truncated_newest_step_falls_back_exactly(
    tmp_path: Path,
    how: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    array_reads: list[int],
) -> None:
    save_steps(tmp_path, (1, 2), layers=LAYERS)
    _truncate_data(tmp_path / "2")
    capfd.readouterr()

    step, tree, caught = restore_newest(tmp_path, how, layers=LAYERS)

    assert array_reads == [1]
    assert_quiet(capfd, caplog, tmp_path)
    assert step == 1
    assert_bit_exact(tree, saved(how, 1, layers=LAYERS))
    assert_one_skip_warning(caught, 2, " (truncated), ")
    assert len(str(caught[0].message)) < len(str(tmp_path)) + 250


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_without_the_list_orbax_reads_and_the_reason_stays_short(
    tmp_path: Path, array_reads: list[int]
) -> None:
    """A step saved before the list existed: orbax finds the damage by reading, as it used to.

    That read may print the noise (not asserted: it depends on timing); the reason is still one
    short line, relative to the step.
    """
    save_steps(tmp_path, (15, 30), layers=LAYERS)
    for step in (15, 30):
        (tmp_path / str(step) / FILE_SIZES).unlink()
        _truncate_data(tmp_path / str(step))

    err = restore_error(tmp_path, "manager", layers=LAYERS)

    assert array_reads == [30, 15]  # what the list spares the tests above
    message = str(err)
    assert len(message) < 1000 and "\n" not in message and "tensorstore_spec" not in message
    reasons = re.fullmatch(rf"no readable checkpoint in {re.escape(str(tmp_path))}: (.*)", message)
    assert reasons is not None, message
    for reason in re.split(r"; step \d+: ", reasons.group(1).removeprefix("step 30: ")):
        assert len(reason) <= REASON_LIMIT and reason.startswith("reading array "), reason
        assert "bound method" not in reason and " failed: " in reason, reason
    assert re.search(r" in state/(ocdbt\.process_0/)?d/[0-9a-f]+ failed: ", message), message
    # The full orbax/tensorstore error is chained: step error, then what orbax raised.
    assert "tensorstore_spec" in str(err.__cause__.__cause__)
    # Its traceback holds orbax's coroutines; collected here, their "never awaited" warnings
    # are ignored by this test's marks instead of showing up in the next test.
    del err
    gc.collect()


def test_step_without_the_list_restores(tmp_path: Path) -> None:
    save_steps(tmp_path, (1, 2))
    (tmp_path / "2" / FILE_SIZES).unlink()
    for how in ("manager", "params"):
        step, tree, caught = restore_newest(tmp_path, how)
        assert step == 2 and not caught, [(w.category, str(w.message)) for w in caught]
        assert_bit_exact(tree, saved(how, 2))


def test_orbax_writes_nothing_into_a_committed_step(tmp_path: Path, mesh4x2: Mesh) -> None:
    """Restores (resharded too), later saves, retention and reopening leave step 1 as it was."""
    layers = 2
    options: dict = {"keep_best": 1, "best_metric": "loss", "keep_last": 1}
    with CheckpointManager(tmp_path, async_save=True, **options) as manager:
        manager.save(1, state=make_state(1, layers=layers), metrics={"loss": 0.5})
        manager.wait_until_finished()
        before = _snapshot(tmp_path / "1")
        manager.save(2, state=make_state(2, layers=layers), metrics={"loss": 2.0})
        assert manager.restore(1).step == 1  # no target: every leaf as saved
        sharding = NamedSharding(mesh4x2, PartitionSpec("data", "tensor"))
        # Saved on one device, restored onto the 4x2 mesh (the target's arrays give shardings).
        resharded = manager.restore(1, target=make_state(0, layers=layers, sharding=sharding)).state
        assert resharded["params"]["embed"].sharding == sharding
        assert_bit_exact(resharded, make_state(1, layers=layers))
        manager.save(3, state=make_state(3, layers=layers), metrics={"loss": 3.0})
    params_target = jax.eval_shape(lambda: make_state(0, layers=layers)["params"])
    assert restore_params_and_step(tmp_path, target=params_target, step=1)[0] == 1
    with CheckpointManager(tmp_path, async_save=False, **options) as manager:
        manager.save(4, state=make_state(4, layers=layers), metrics={"loss": 4.0})
        assert manager.all_steps() == [1, 4]  # 2 and 3 were deleted around step 1
    assert _snapshot(tmp_path / "1") == before
    recorded = json.loads((tmp_path / "1" / FILE_SIZES).read_text())["files"]
    assert {k: v for k, v in file_sizes(tmp_path / "1").items() if k in recorded} == recorded
    assert recorded_files_problem(tmp_path / "1") is None


def test_file_check_names_the_first_bad_file_and_the_count(tmp_path: Path) -> None:
    step = tmp_path / "5"
    (step / "state" / "d").mkdir(parents=True)
    for name, size in (("a.json", 10), ("state/d/x1", 8), ("state/d/x2", 6)):
        (step / name).write_bytes(b"z" * size)
    assert recorded_files_problem(step) is None  # no list: an older step, not size-checked
    record = {"format": "tjx-ckpt-files", "format_version": 1, "files": file_sizes(step)}
    (step / FILE_SIZES).write_text(json.dumps(record))
    assert recorded_files_problem(step) is None
    (step / "extra").write_text("not listed")  # files the list does not name are allowed
    assert recorded_files_problem(step) is None

    (step / "state/d/x2").write_bytes(b"z" * 3)
    expected = "state/d/x2: 3 bytes, expected 6 (truncated), 1 of 3 files in tjx_files.json differ"
    assert recorded_files_problem(step) == expected
    (step / "state/d/x1").unlink()
    assert recorded_files_problem(step) == (
        "state/d/x1 is missing, 2 of 3 files in tjx_files.json differ"
    )
    (step / "state/d/x1").mkdir()
    assert str(recorded_files_problem(step)).startswith("state/d/x1 is not a regular file, 2 of")
    (step / "state/d/x1").rmdir()
    (step / "a.json").write_bytes(b"z" * 11)
    assert str(recorded_files_problem(step)).startswith(
        "a.json: 11 bytes, expected 10 (longer than written), 3 of 3 files"
    )

    broken = "tjx_files.json is not the file list tjx-ckpt writes"
    for files in ({"../escape": 1}, {"/abs": 1}, {"a.json": -1}, {"a.json": True}, [], {"": 0}):
        (step / FILE_SIZES).write_text(json.dumps({**record, "files": files}))
        assert recorded_files_problem(step) == broken, files
    for raw in (b"", b"{", b"\xff", json.dumps({**record, "format_version": 0}).encode()):
        (step / FILE_SIZES).write_bytes(raw)
        assert recorded_files_problem(step) == broken, raw
    # A later tjx-ckpt's list is not judged here (its manifest then asks for an upgrade).
    (step / FILE_SIZES).write_text(json.dumps({"format": "tjx-ckpt-files", "format_version": 2}))
    assert recorded_files_problem(step) is None
    (step / FILE_SIZES).unlink()
    (step / FILE_SIZES).mkdir()
    assert str(recorded_files_problem(step)).startswith("tjx_files.json cannot be read (")


def test_a_broken_list_is_corruption_not_an_old_step(tmp_path: Path) -> None:
    save_steps(tmp_path, (1, 2))
    (tmp_path / "2" / FILE_SIZES).write_text("{")
    step, tree, caught = restore_newest(tmp_path, "params")
    assert step == 1
    assert_bit_exact(tree, saved("params", 1))
    assert_one_skip_warning(caught, 2, "tjx_files.json is not the file list tjx-ckpt writes")


def test_one_line_keeps_the_start_and_the_cause() -> None:
    spec = "[tensorstore_spec='{\\\"driver\\\":\\\"zarr\\\"}'] [tensorstore_spec[1]='{}']"
    assert one_line(f'Error reading "d/ab": size 3 {spec}\nsecond line') == (
        'Error reading "d/ab": size 3'
    )
    assert one_line("\n\n  first  \nsecond") == "first"
    long = "context: " * 60 + "the cause"
    cut = one_line(long)
    assert len(cut) == REASON_LIMIT and "…" in cut
    assert cut.startswith("context: ") and cut.endswith("context: the cause")
    assert one_line("x" * 10, limit=5) == "x…xxx"


def test_reasons_are_relative_to_the_step_and_the_list_is_capped(tmp_path: Path) -> None:
    where = tmp_path / "30"
    err = corrupt(30, where, f'reading "{where}/state/d/ab" failed\n{"detail " * 500}')
    assert str(err) == f'step 30 ({where}): reading "state/d/ab" failed'
    assert err.reason == 'reading "state/d/ab" failed'
    failures = [(s, corrupt(s, tmp_path / str(s), "x " * 300)) for s in range(60, 0, -10)]
    message = str(no_readable_step_error(tmp_path, failures))
    assert len(message) < 1000 and "\n" not in message
    assert [int(s) for s in re.findall(r"step (\d+): ", message)] == [60, 50, 40]
    assert message.endswith("; 3 older steps too (see the warnings)")
    one = str(no_readable_step_error(tmp_path, failures[:1]))
    assert one == f"no readable checkpoint in {tmp_path}: step 60: {failures[0][1].reason}"


def test_file_sizes_skips_links(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    os.symlink(tmp_path / "f", tmp_path / "link")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g").write_bytes(b"")
    assert file_sizes(tmp_path) == {"f": 3, "sub/g": 0}
