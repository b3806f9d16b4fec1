"""A replicated state is saved by one replica, whole, in one process off TPUs.

orbax's default cuts a replicated array into one slice per replica, each an eager ``lax.slice``
compiled on its own device at a run's first save (80+ programs for a small model on 8 devices).
tjx-ckpt keeps that on TPUs and across processes, where the replicas' writing is spread
(``tjx.ckpt.options.state_handler``); in one process elsewhere the first save compiles nothing,
writes the same folders (orbax's ``array_metadatas/`` included) and reads back the same values.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.ckpt import CheckpointManager, options


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def compile_lines() -> Iterator[list[str]]:
    """jax's "Compiling ..." lines while the test runs."""
    handler = _Lines()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield handler.lines
    finally:
        logger.removeHandler(handler)


def _state(mesh: Mesh, rows: int) -> dict[str, jax.Array]:
    """Two replicated arrays and a sharded one, fresh random values."""
    rng = np.random.default_rng()
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("fsdp"))
    state = {
        "w": jax.device_put(rng.standard_normal((rows, 4), dtype=np.float32), replicated),
        "b": jax.device_put(rng.standard_normal(rows // 2, dtype=np.float32), replicated),
        "s": jax.device_put(rng.standard_normal((rows, 2), dtype=np.float32), split),
    }
    return jax.block_until_ready(state)


def _save(directory: Path, state: dict[str, jax.Array], compile_lines: list[str]) -> list[str]:
    manager = CheckpointManager(directory, async_save=False)
    compile_lines.clear()
    manager.save(1, state=state)
    manager.wait_until_finished()
    compiled = [line for line in compile_lines if line.startswith("Compiling")]
    restored = manager.restore(1, target=state).state
    manager.close()
    for name, value in state.items():
        np.testing.assert_array_equal(np.asarray(restored[name]), np.asarray(value), err_msg=name)
        assert restored[name].sharding == value.sharding, name
    return compiled


def test_a_replicated_state_saves_without_compiling_off_tpu(
    tmp_path: Path, mesh8: Mesh, compile_lines: list[str]
) -> None:
    state = _state(mesh8, rows=16)
    assert _save(tmp_path / "run", state, compile_lines) == []
    assert (tmp_path / "run" / "1" / "state" / "array_metadatas").is_dir()


@pytest.mark.parametrize(
    ("platform", "processes", "rows"), [("tpu", 1, 24), ("cpu", 2, 40)], ids=["tpu", "processes"]
)
def test_on_a_tpu_or_across_processes_the_replicas_share_the_save(
    tmp_path: Path,
    mesh8: Mesh,
    compile_lines: list[str],
    monkeypatch: pytest.MonkeyPatch,
    platform: str,
    processes: int,
    rows: int,
) -> None:
    handler = functools.partial(options.state_handler, platform, processes)
    monkeypatch.setattr(options, "state_handler", handler)
    # Shapes no other test saves, so that jax's in-memory cache holds none of the slices.
    state = _state(mesh8, rows=rows)
    compiled = _save(tmp_path / "run", state, compile_lines)
    assert any("jit(slice)" in line for line in compiled), compiled
