"""`abstract_devices`: which description jax is asked for, per platform (the plugins themselves
are exercised by tests-integration's deviceless plans, which install them)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from jax.experimental import topologies

from tjx.parallel import abstract_devices


@pytest.fixture
def asked(monkeypatch):
    """The keyword arguments (and the libtpu switch at that moment) of each description asked."""
    calls: list[dict] = []

    def describe(**kw):
        calls.append({**kw, "allow": os.environ.get("ALLOW_MULTIPLE_LIBTPU_LOAD")})
        return SimpleNamespace(devices=["d0", "d1"])

    monkeypatch.setattr(topologies, "get_topology_desc", describe)
    monkeypatch.delenv("ALLOW_MULTIPLE_LIBTPU_LOAD", raising=False)
    return calls


def test_a_tpu_slice_is_described_without_libtpus_one_process_lock(asked):
    """Two plans at once (a search's workers) would otherwise fail on libtpu's lockfile."""
    assert abstract_devices("tpu", "v5e:2x2") == ["d0", "d1"]
    assert asked == [{"topology_name": "v5e:2x2", "platform": "tpu", "allow": "1"}]


def test_a_users_own_libtpu_switch_is_kept(asked, monkeypatch):
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "0")
    abstract_devices("tpu", "v5e:2x4")
    assert asked[0]["allow"] == "0"


def test_a_gpu_host_needs_its_target_config_and_leaves_libtpu_alone(asked):
    with pytest.raises(ValueError, match="a CUDA topology needs target_config"):
        abstract_devices("cuda", "1x1x8")
    assert abstract_devices("cuda", "1x1x8", target_config="spec") == ["d0", "d1"]
    assert asked == [
        {"platform": "cuda", "target_config": "spec", "topology": "1x1x8", "allow": None}
    ]
    with pytest.raises(ValueError, match="platform must be 'tpu' or 'cuda'"):
        abstract_devices("rocm", "1x1x8")
