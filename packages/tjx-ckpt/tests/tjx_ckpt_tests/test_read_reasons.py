"""A step whose arrays fail to read is said in words: the array or file, what is wrong with it.

Never orbax's wrapper message, whose end is the repr of a bound method ("See full TensorStore
details: <bound method pybind11_detail_function_record_v1_….spec of TensorStore({").
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest

from tjx.ckpt import CheckpointManager, corrupt_fallback_lines
from tjx.ckpt.errors import REASON_LIMIT
from tjx.ckpt.reasons import read_failure

pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]

# What orbax 0.12 raises around a failed chunk read (serialization.py: f"... {t.spec}.", the
# method, not its result), and the tensorstore error it wraps.
WRAPPER = (
    "Encountered error while reading array index: (slice(0, 5000, 1),). See full TensorStore "
    "details: <bound method pybind11_detail_function_record_v1_system_libstdcpp_gxx_abi_1xxx_"
    "use_cxx11_abi_1.spec of TensorStore({\n  'base': {\n    'driver': 'zarr',"
)
CHUNK = (
    'FAILED_PRECONDITION: Error reading "params.w0/0" in OCDBT database at local file '
    '"/r/20/state/": ZSTD_decompressStream() failed: Unknown frame descriptor; at byte 0; at '
    'uncompressed byte 0 [tensorstore_spec=\'{"driver":"zarr"}\']'
)
BTREE = (
    'DATA_LOSS: Error opening "cast" driver: Error opening "zarr" driver: Error reading '
    '"opt_state.0.mu/.zarray" in OCDBT database at local file "/r/20/state/": Error reading Byte '
    'range [0, 356) of local file "/r/20/state/d/0e51205b453d1dd529454bd619c51503": Error '
    "decoding b-tree node: CRC-32C checksum verification failed: expected=4152049816, "
    "actual=4152049767"
)


def _raised(outer: BaseException, cause: BaseException | None) -> BaseException:
    try:
        try:
            if cause is not None:
                raise cause
        finally:
            raise outer
    except BaseException as err:  # the chain orbax raises, built by hand
        return err


def test_orbaxs_wrapper_is_passed_over_for_the_cause_it_wraps():
    err = _raised(Exception(WRAPPER), ValueError(CHUNK))
    reason = read_failure(err, {"params.w0": "params/w0"}, "/r/20")
    assert reason == (
        "reading array params/w0 (chunk 0) failed: its compressed bytes are damaged "
        "(ZSTD_decompressStream() failed: Unknown frame descriptor)"
    )


def test_a_damaged_index_names_the_file_relative_to_the_step():
    reason = read_failure(ValueError(BTREE), {"opt_state.0.mu": "opt_state/0/mu"}, "/r/20")
    assert reason.startswith(
        "reading array opt_state/0/mu (its metadata) in state/d/0e51205b453d1dd529454bd619c51503 "
        "failed: the array store's index is damaged (CRC-32C checksum verification failed: "
    )
    assert len(reason) <= REASON_LIMIT and reason.endswith("…)")


def test_an_error_without_tensorstores_words_is_its_type_and_first_line():
    err = _raised(Exception(WRAPPER), OSError("Input/output error\nmore"))
    assert read_failure(err) == "reading it failed (OSError: Input/output error)"
    # Nothing else to say: the wrapper's own words, without the method's repr.
    assert read_failure(Exception(WRAPPER)) == (
        "reading it failed (Exception: Encountered error while reading array index: "
        "(slice(0, 5000, 1),).)"
    )


def _first_byte_of_the_largest_data_file(step_dir: Path) -> None:
    # The largest OCDBT data file holds the arrays' compressed chunks: its first byte is the
    # zstd frame's magic number, so the chunk read fails (orbax's wrapper, then the cause).
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    largest = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[0] ^= 0xFF
    largest.write_bytes(bytes(data))


def _zero_start_of_every_data_file(step_dir: Path) -> None:
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            data = bytearray(path.read_bytes())
            data[:64] = bytes(64)
            path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (_first_byte_of_the_largest_data_file, r"\(chunk 0\) failed: its compressed bytes are"),
        (_zero_start_of_every_data_file, r"\(its metadata\) in state/d/[0-9a-f]{32} failed: the "),
    ],
)
def test_the_evaluators_fallback_line_says_which_array_why_and_the_step_used(
    tmp_path: Path, damage: Callable[[Path], None], said: str
) -> None:
    rng = np.random.default_rng()
    params = {
        f"w{i}": jax.numpy.asarray(rng.normal(size=5000).astype(np.float32)) for i in range(3)
    }
    with CheckpointManager(tmp_path, async_save=False) as manager:
        for step in (10, 20):
            manager.save(step, state={"params": params, "step": np.int32(step)})
    damage(tmp_path / "20")
    out = io.StringIO()
    # What the evaluator does: a read-only manager, the parameters only, one line per skip.
    with (
        CheckpointManager(tmp_path, read_only=True) as manager,
        corrupt_fallback_lines("eval", stream=out),
    ):
        step, restored = manager.restore_params_and_step(target=params)
    assert step == 10
    np.testing.assert_array_equal(np.asarray(restored["w1"]), np.asarray(params["w1"]))
    (line,) = out.getvalue().splitlines()
    start = f"eval: warning: tjx.ckpt: skipping corrupt checkpoint step 20 ({tmp_path / '20'}): "
    assert line.startswith(start) and line.endswith("; using step 10"), line
    reason = line[len(start) : -len("; using step 10")]
    assert re.fullmatch(rf"reading array params/w\d {said}.*\)", reason), reason
    assert not re.search(r"bound method|pybind11|TensorStore|tensorstore_spec|…", reason), reason
