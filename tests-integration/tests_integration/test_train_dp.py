"""Data parallel over 8 simulated CPU devices matches 1 device for a few steps.

The losses agree to 1e-5 relative (sharded reductions sum in a different order, so bit equality
is not expected), and so do the final validation metrics.
"""

from __future__ import annotations

import pytest

from tests_integration._helpers_apps import SMALL, check_ok, final, train, train_losses

SETS = [*SMALL, "train.steps=4", "train.eval_every=4"]


@pytest.mark.parametrize("strategy", ["dp", "fsdp"])
def test_eight_devices_match_one(tmp_path, strategy):
    mesh = ["mesh.data=-1"] if strategy == "dp" else ["mesh.data=1", "mesh.fsdp=-1"]
    sets8 = [*SETS, *mesh, f"mesh.strategy={strategy}"]
    one = train(tmp_path, "one", [*SETS, "mesh.data=1"], devices=1)
    eight = train(tmp_path, "eight", sets8, devices=8)
    check_ok(one)
    check_ok(eight)
    assert "devices: 8 ×" in eight.stdout and "devices: 1 ×" in one.stdout
    l1, l8 = train_losses(tmp_path / "one"), train_losses(tmp_path / "eight")
    assert sorted(l1) == sorted(l8) == [1, 2, 3, 4]
    for step in l1:
        assert l8[step] == pytest.approx(l1[step], rel=1e-5)
    assert final(tmp_path / "eight")["val_loss"] == pytest.approx(
        final(tmp_path / "one")["val_loss"], rel=1e-5
    )
