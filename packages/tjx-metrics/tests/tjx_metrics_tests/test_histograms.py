"""Weight histograms: weights_to_host, the JSONL bins, and the TensorBoard / W&B backends."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.metrics import (
    HISTOGRAM_BINS,
    JsonlLogger,
    histogram_summary,
    make_logger,
    read_jsonl,
    weights_to_host,
)
from tjx.metrics.loggers import wandb_logger
from tjx.metrics.loggers.wandb_logger import WandbLogger

from ._readers import tb_values


def _params(rng: np.random.Generator) -> dict:
    mesh = Mesh(np.array(jax.devices()), ("data",))
    q = rng.normal(size=(len(jax.devices()) * 2, 3)).astype(np.float32)
    return {
        "blocks": [
            {
                # Sharded over every device: still one array once fetched.
                "attn": {
                    "q": {"kernel": jax.device_put(q, NamedSharding(mesh, PartitionSpec("data")))}
                },
                "norm": {"scale": jnp.asarray(rng.uniform(size=5), jnp.bfloat16)},
            }
        ],
        "embed": {"embedding": jnp.asarray(rng.normal(size=(7, 4)), jnp.float32)},
        "name": "not an array",
    }


def test_weights_to_host_names_values_and_one_fetch(monkeypatch):
    rng = np.random.default_rng(0)
    params = _params(rng)
    calls = []
    real_get = jax.device_get
    monkeypatch.setattr(jax, "device_get", lambda x: calls.append(1) or real_get(x))
    host = weights_to_host(params)
    assert len(calls) == 1  # the whole tree in one transfer, not one per parameter
    assert list(host) == ["blocks/0/attn/q/kernel", "blocks/0/norm/scale", "embed/embedding"]
    for name, leaf in (
        ("blocks/0/attn/q/kernel", params["blocks"][0]["attn"]["q"]["kernel"]),
        ("blocks/0/norm/scale", params["blocks"][0]["norm"]["scale"]),
        ("embed/embedding", params["embed"]["embedding"]),
    ):
        assert isinstance(host[name], np.ndarray)
        assert host[name].dtype == leaf.dtype and host[name].shape == leaf.shape
        np.testing.assert_array_equal(host[name], np.asarray(leaf))
    assert list(weights_to_host(params, r"kernel$|embedding")) == [
        "blocks/0/attn/q/kernel",
        "embed/embedding",
    ]
    assert weights_to_host(params, []) == {}
    assert list(weights_to_host(params, "norm", sep=".")) == ["blocks.0.norm.scale"]
    with pytest.raises(ValueError, match="share the name 'a/b'"):
        weights_to_host({"a/b": jnp.ones(1), "a": {"b": jnp.ones(1)}})


def test_histogram_summary_matches_numpy():
    rng = np.random.default_rng(1)
    values = rng.standard_t(3, size=(40, 25)).astype(np.float32)
    values[3, 4], values[5, 6] = np.nan, -np.inf
    got = histogram_summary(values, bins=10)
    good = values[np.isfinite(values)].astype(np.float64)
    counts, edges = np.histogram(good, bins=10)
    assert got["counts"] == counts.tolist() and got["bin_edges"] == edges.tolist()
    assert got["count"] == 1000 and got["nonfinite"] == 2 and sum(got["counts"]) == 998
    assert got["mean"] == pytest.approx(good.mean(), rel=1e-12)
    assert got["std"] == pytest.approx(good.std(), rel=1e-12)
    assert (got["min"], got["max"]) == (good.min(), good.max())
    empty = histogram_summary(np.full(3, np.nan))
    assert empty["counts"] == [] and empty["bin_edges"] == [] and empty["mean"] is None
    with pytest.raises(ValueError, match="bins must be >= 1"):
        histogram_summary(values, bins=0)


def test_jsonl_histogram_record_equals_numpy(tmp_path):
    rng = np.random.default_rng(2)
    params = _params(rng)
    with make_logger(["jsonl", "console"], tmp_path) as logger:
        logger.log_histograms(30, weights_to_host(params))
    (record,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert record["step"] == 30
    expected = {
        "blocks/0/attn/q/kernel": params["blocks"][0]["attn"]["q"]["kernel"],
        "blocks/0/norm/scale": params["blocks"][0]["norm"]["scale"],
        "embed/embedding": params["embed"]["embedding"],
    }
    assert record["histograms"].keys() == expected.keys()
    for name, leaf in expected.items():
        # The loggers bin float32 values (bfloat16 widened exactly), binned in float64.
        ref = np.asarray(leaf).astype(np.float32).reshape(-1).astype(np.float64)
        counts, edges = np.histogram(ref, bins=HISTOGRAM_BINS)
        hist = record["histograms"][name]
        assert hist["counts"] == counts.tolist(), name
        assert hist["bin_edges"] == edges.tolist(), name
        assert len(hist["bin_edges"]) == HISTOGRAM_BINS + 1 and hist["count"] == ref.size
        assert hist["mean"] == pytest.approx(ref.mean(), rel=1e-12)
        assert (hist["min"], hist["max"]) == (ref.min(), ref.max())
    with JsonlLogger(tmp_path / "few.jsonl", bins=4) as few:
        few.log_histograms(1, {"w": np.arange(8.0)})
    assert read_jsonl(tmp_path / "few.jsonl")[0]["histograms"]["w"]["counts"] == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="bins must be >= 1"):
        JsonlLogger(tmp_path / "bad.jsonl", bins=0)


def test_tensorboard_histograms_of_params(tmp_path):
    pytest.importorskip("tensorboardX")
    rng = np.random.default_rng(3)
    host = weights_to_host(_params(rng))
    with make_logger(["tensorboard"], tmp_path) as logger:
        logger.log_histograms(4, host)
    got = tb_values(tmp_path / "tensorboard")
    for name, values in host.items():
        ((step, histo),) = got[name]
        ref = values.astype(np.float32).reshape(-1)
        assert step == 4 and histo.num == ref.size and sum(histo.bucket) == ref.size
        assert histo.min == pytest.approx(ref.min()) and histo.max == pytest.approx(ref.max())
        assert histo.sum == pytest.approx(float(ref.astype(np.float64).sum()), rel=1e-5, abs=1e-5)


class _FakeRun:
    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []

    def log(self, data: dict, step: int) -> None:
        self.logged.append((data, step))

    def finish(self) -> None:
        pass


def test_wandb_histograms_through_a_fake_module(tmp_path, monkeypatch):
    # A stand-in for wandb: the test checks what the logger hands to wandb.Histogram, offline.
    fake = types.ModuleType("wandb")
    run = _FakeRun()
    fake.init = lambda **kwargs: run  # type: ignore[attr-defined]
    fake.Settings = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    fake.Histogram = lambda values: ("histogram", np.array(values))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(wandb_logger, "_import_wandb", lambda: fake)
    values = np.random.default_rng(4).normal(size=(6, 5)).astype(np.float32)
    values[0, 0] = np.nan
    with WandbLogger(tmp_path, mode="offline") as logger:
        logger.log_histograms(7, {"blocks/0/w": jnp.asarray(values), "nan": np.full(2, np.nan)})
    ((data, step),) = run.logged
    assert step == 7 and list(data) == ["blocks/0/w"]  # nothing finite: no histogram
    kind, passed = data["blocks/0/w"]
    assert kind == "histogram"
    np.testing.assert_array_equal(passed, values[np.isfinite(values)])


def test_log_weights_logs_every_parameter_by_path(tmp_path):
    rng = np.random.default_rng(4)
    params = _params(rng)
    with make_logger(["jsonl"], tmp_path) as logger:
        logger.log_weights(7, params)
        logger.log_weights(8, params, r"embedding$")
    first, second = read_jsonl(tmp_path / "metrics.jsonl")
    assert first["step"] == 7 and list(first["histograms"]) == list(weights_to_host(params))
    assert first["histograms"]["embed/embedding"] == histogram_summary(
        np.asarray(params["embed"]["embedding"])
    )
    assert second["step"] == 8 and list(second["histograms"]) == ["embed/embedding"]


def test_log_weights_fetches_on_a_logger_that_writes_nothing(monkeypatch):
    """Another process's logger drops everything, yet must join the all-gather of the weights."""
    from tjx.metrics.loggers import base

    seen = []
    monkeypatch.setattr(base, "weights_to_host", lambda tree, patterns: seen.append(tree) or {})
    params = {"w": jnp.ones(3)}
    base.MultiLogger([]).log_weights(1, params)
    assert seen == [params]
