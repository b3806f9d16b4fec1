"""tjx.data's batch layout outside the loader: a random batch for step shapes."""

from __future__ import annotations

import numpy as np

from tjx.data import random_batch


def test_a_random_batch_is_the_loaders_layout_of_one_document_per_row():
    seed = int(np.random.default_rng().integers(1 << 30))
    batch = random_batch(3, 7, 50, seed=seed)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: ((3, 7), np.dtype(np.int32)) for k in ("inputs", "targets", "segment_ids", "positions")
    }
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    assert batch["inputs"].min() >= 0 and batch["targets"].max() < 50
    np.testing.assert_array_equal(batch["segment_ids"], np.ones((3, 7)))
    np.testing.assert_array_equal(batch["positions"], np.tile(np.arange(7), (3, 1)))
    again, other = random_batch(3, 7, 50, seed=seed), random_batch(3, 7, 50, seed=seed + 1)
    np.testing.assert_array_equal(again["inputs"], batch["inputs"])
    assert not np.array_equal(other["inputs"], batch["inputs"])
