"""Checkpoints on gs:// and s3:// (real servers on 127.0.0.1): the marker is the commit."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tjx.ckpt import CheckpointManager, CorruptCheckpointWarning, RunDir
from tjx.ckpt import remote, storage
from tjx_ckpt_tests._states import assert_bit_exact, make_state


def test_a_state_round_trips_bit_exact_through_a_store(store_url: str) -> None:
    state = make_state(5)
    with CheckpointManager(store_url, async_save=False) as manager:
        assert manager.save(5, state=state, data_state={"offset": 9}, config={"d": 1})
        assert manager.all_steps() == [5]
        restored = manager.restore(target=make_state(0))
    assert restored.step == 5
    assert restored.data_state == {"offset": 9}
    assert_bit_exact(restored.state, state)
    files = remote.file_sizes(f"{store_url}/5")
    assert "commit_success.txt" in files and "tjx_files.json" in files
