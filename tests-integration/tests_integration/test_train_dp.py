"""Data parallel over 8 simulated CPU devices matches 1 device for a few steps.

The losses agree to 1e-5 relative (sharded reductions sum in a different order, so bit equality
is not expected), and so do the final validation metrics. The 1-device run is a process (its own
device count), trained once for both strategies; the 8-device runs call the trainer's ``main``
in this process (8 simulated devices, as the app's environment gives a process).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests_integration._helpers_apps import (
    SMALL,
    call_train,
    check_ok,
    final,
    train,
    train_losses,
)

SETS = [*SMALL, "train.steps=4", "train.eval_every=4"]


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1-device run both strategies are compared with (trained once per module)."""
    root = tmp_path_factory.mktemp("one")
    proc = train(root, "one", [*SETS, "mesh.data=1"], devices=1)
    check_ok(proc)
    assert "devices: 1 ×" in proc.stdout
    return root / "one"


@pytest.mark.parametrize("strategy", ["dp", "fsdp"])
def test_eight_devices_match_one(one: Path, tmp_path: Path, strategy: str) -> None:
    mesh = ["mesh.data=-1"] if strategy == "dp" else ["mesh.data=1", "mesh.fsdp=-1"]
    sets8 = [*SETS, *mesh, f"mesh.strategy={strategy}"]
    eight = call_train(tmp_path, "eight", sets8)
    check_ok(eight)
    assert "devices: 8 ×" in eight.stdout
    l1, l8 = train_losses(one), train_losses(tmp_path / "eight")
    assert sorted(l1) == sorted(l8) == [1, 2, 3, 4]
    for step in l1:
        assert l8[step] == pytest.approx(l1[step], rel=1e-5)
    assert final(tmp_path / "eight")["val_loss"] == pytest.approx(final(one)["val_loss"], rel=1e-5)
