"""MoE router metrics from summed statistics: exact means over layers and steps, load shares."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from tjx import metrics


class Stats(NamedTuple):  # the fields of tjx-nn's MoEStats, as a model returns them
    expert_tokens: np.ndarray
    dropped_tokens: np.ndarray
    tokens: np.ndarray
    balance_loss_sum: np.ndarray
    z_loss_sum: np.ndarray


def _step(counts, dropped, tokens, balance, z) -> Stats:
    t = np.asarray(tokens, np.int32)
    return Stats(
        np.asarray(counts, np.int32),
        np.asarray(dropped, np.int32),
        t,
        np.asarray(balance) * t,
        np.asarray(z) * t,
    )


def test_sums_of_two_steps_give_token_weighted_means_and_loads():
    a = _step([[4, 4, 4, 4], [8, 0, 4, 4]], [0, 2], [8, 8], [1.0, 1.5], [2.0, 3.0])
    b = _step([[2, 2, 2, 2], [0, 8, 0, 0]], [0, 0], [4, 4], [1.0, 3.0], [5.0, 6.0])
    total = Stats(*(x + y for x, y in zip(a, b, strict=True)))
    got = metrics.moe_metrics(total, per_layer=True, layers=[1, 3])
    # layer 0: balance (8·1 + 4·1)/12 = 1; layer 1: (8·1.5 + 4·3)/12 = 2; mean 1.5
    assert got["moe_balance_loss"] == pytest.approx(1.5)
    assert got["moe_z_loss"] == pytest.approx(((16 + 20) / 12 + (24 + 24) / 12) / 2)
    assert got["moe_dropped_fraction"] == pytest.approx(2 / 48)
    load = metrics.expert_load(total)
    np.testing.assert_allclose(load, [[0.25] * 4, [8 / 24, 8 / 24, 4 / 24, 4 / 24]])
    assert got["moe_load_max"] == pytest.approx(4 * 8 / 24)
    assert got["moe_load_min"] == pytest.approx(4 * 4 / 24)
    assert got["moe_load_max/3"] == pytest.approx(4 * 8 / 24) and got["moe_load_max/1"] == 1.0
    assert got["moe_load/3/2"] == pytest.approx(4 / 24)
    assert set(metrics.moe_metrics(total)) == {
        "moe_balance_loss", "moe_z_loss", "moe_dropped_fraction", "moe_load_max", "moe_load_min",
    }  # fmt: skip


def test_one_layer_mappings_and_empty_sums():
    one = dict(expert_tokens=[3, 1], dropped_tokens=0, tokens=2, balance_loss_sum=2.0,
               z_loss_sum=1.0)  # fmt: skip
    assert metrics.moe_metrics(one)["moe_load_max"] == pytest.approx(1.5)
    empty = {
        k: np.zeros_like(v) for k, v in _step([[0, 0]], [0], [0], [0.0], [0.0])._asdict().items()
    }
    got = metrics.moe_metrics(empty)
    assert got["moe_dropped_fraction"] == 0.0 and got["moe_balance_loss"] == 0.0
    with pytest.raises(ValueError, match="lack z_loss_sum"):
        metrics.moe_metrics({k: v for k, v in one.items() if k != "z_loss_sum"})
    with pytest.raises(ValueError, match="layers names 3 rows"):
        metrics.moe_metrics(one, per_layer=True, layers=[0, 1, 2])


def test_an_indexer_loss_in_the_sums_is_logged_as_its_mean_per_query():
    """The optional ``index_loss_sum``/``index_queries`` rows (every layer with the loss, more
    than the MoE rows): ``index_loss`` is the mean over layers of each one's mean per query;
    without them (or None) nothing is logged."""
    moe = _step([[4, 4, 4, 4]], [0], [8], [1.0], [2.0])._asdict()
    sums = moe | {"index_loss_sum": np.asarray([3.0, 1.0, 0.0]), "index_queries": [12, 4, 0]}
    got = metrics.moe_metrics(sums, per_layer=True)
    assert got["index_loss"] == pytest.approx((3 / 12 + 1 / 4 + 0) / 3)
    assert got["moe_balance_loss"] == pytest.approx(1.0)
    assert "index_loss" not in metrics.moe_metrics(moe | {"index_loss_sum": None})
    assert "index_loss" not in metrics.moe_metrics(moe)
