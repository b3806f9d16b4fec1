"""The one held-out loop: batch by batch it gives the one-shot figures of all the batches together
(a float64 NumPy reference), named for the objective."""

import math

import jax
import numpy as np
import pytest

from tjx.metrics import (
    PER_SOURCE,
    MetricAccumulator,
    accumulate_heldout,
    evaluate_heldout,
    evaluate_heldout_sources,
    heldout_metrics,
    heldout_step,
)


def _reference(logits, labels, ks):
    """float64 mean cross-entropy and top-k accuracies over the scored labels (not -100)."""
    logits = np.asarray(logits, np.float64).reshape(-1, logits.shape[-1])
    labels = np.asarray(labels).reshape(-1)
    keep = labels != -100
    logits, labels = logits[keep], labels[keep]
    top = logits.max(-1)
    lse = np.log(np.exp(logits - top[:, None]).sum(-1)) + top
    loss = (lse - logits[np.arange(len(labels)), labels]).mean()
    order = np.argsort(-logits, axis=-1)
    return loss, {k: (order[:, :k] == labels[:, None]).any(-1).mean() for k in ks}, len(labels)


def _batches(rng, n=3, rows=4, width=6, classes=11):
    """Batches of precomputed logits (the "model" is a lookup), some labels unscored."""
    out = []
    for _ in range(n):
        labels = rng.integers(0, classes, (rows, width))
        labels[rng.random((rows, width)) < 0.2] = -100
        out.append(
            {
                "logits": rng.normal(size=(rows, width, classes)).astype(np.float32) * 2,
                "labels": labels.astype(np.int32),
            }
        )
    return out


def _lookup(params, batch):
    return batch["logits"] * params, batch["labels"]


def test_streamed_batches_give_the_one_shot_reference():
    rng = np.random.default_rng(0)
    batches = _batches(rng)
    step = jax.jit(heldout_step(_lookup, top_k=(5, 1, 5)))  # duplicates and order do not matter
    got = evaluate_heldout(step, 1.0, batches, bytes_per_token=2.5)
    logits = np.concatenate([b["logits"] for b in batches])
    labels = np.concatenate([b["labels"] for b in batches])
    loss, top, count = _reference(logits, labels, (1, 5))
    assert list(got) == [
        "loss",
        "perplexity",
        "bits_per_token",
        "top1",
        "top5",
        "num_tokens",
        "bits_per_byte",
    ]
    assert got["loss"] == pytest.approx(loss, rel=1e-6)
    assert got["bits_per_byte"] == pytest.approx(loss / math.log(2) / 2.5, rel=1e-6)
    assert got["top1"] == pytest.approx(top[1], abs=1e-12)
    assert got["top5"] == pytest.approx(top[5], abs=1e-12)
    assert got["num_tokens"] == count


def test_bits_per_byte_only_where_every_token_is_scored_and_bytes_are_known():
    batches = _batches(np.random.default_rng(1), n=1)
    step = heldout_step(_lookup)
    masked = evaluate_heldout(step, 1.0, batches, bytes_per_token=2.0, scores_every_token=False)
    unknown = evaluate_heldout(step, 1.0, batches, bytes_per_token=None)
    assert "bits_per_byte" not in masked and "bits_per_byte" not in unknown
    assert masked["loss"] == unknown["loss"]


def test_a_classifier_is_named_in_images_and_accuracy():
    rng = np.random.default_rng(2)
    batches = [
        {
            "logits": rng.normal(size=(8, 10)).astype(np.float32),
            "labels": rng.integers(0, 10, 8).astype(np.int32),
        }
        for _ in range(2)
    ]
    got = evaluate_heldout(heldout_step(_lookup), 1.0, batches, bytes_per_token=3.0, num_classes=10)
    loss, top, count = _reference(
        np.concatenate([b["logits"] for b in batches]),
        np.concatenate([b["labels"] for b in batches]),
        (1, 5),
    )
    assert list(got) == ["loss", "accuracy", "num_images", "top5"]  # no top10 of 10, no bits
    assert got["loss"] == pytest.approx(loss, rel=1e-6)
    assert got["accuracy"] == pytest.approx(top[1], abs=1e-12)
    assert got["top5"] == pytest.approx(top[5], abs=1e-12) and got["num_images"] == count


def test_place_puts_every_batch_and_params_reach_the_step():
    batches = _batches(np.random.default_rng(3), n=2)
    seen = []

    def place(batch):
        seen.append(batch)
        return {k: np.asarray(v) for k, v in batch.items()}

    doubled = evaluate_heldout(heldout_step(_lookup), 2.0, batches, place=place)
    once = evaluate_heldout(heldout_step(_lookup), 1.0, batches)
    assert len(seen) == 2 and doubled["loss"] != pytest.approx(once["loss"])


@pytest.mark.parametrize(
    "batches",
    [[], [{"logits": np.zeros((2, 3), np.float32), "labels": np.full((2,), -100, np.int32)}]],
)
def test_nothing_scored_is_the_callers_error(batches):
    with pytest.raises(ValueError, match="no batch fits here"):
        accumulate_heldout(heldout_step(_lookup), 1.0, batches, empty="no batch fits here")
    with pytest.raises(ValueError, match="no held-out batch was scored"):
        evaluate_heldout(heldout_step(_lookup), 1.0, batches)


def test_sources_merged_give_the_pooled_figures():
    """A mixture's sources accumulated apart and merged are the batches of all of them."""
    rng = np.random.default_rng(4)
    a, b = _batches(rng, n=2), _batches(rng, n=1)
    step = heldout_step(_lookup)
    pooled = MetricAccumulator()
    for part in (a, b):
        pooled.merge(accumulate_heldout(step, 1.0, part))
    assert heldout_metrics(pooled) == evaluate_heldout(step, 1.0, a + b)


def test_a_mixture_reports_each_sources_metrics_and_all_of_them_pooled():
    rng = np.random.default_rng(5)
    a, b = _batches(rng, n=2), _batches(rng, n=1)
    step = heldout_step(_lookup)
    got = evaluate_heldout_sources(step, 1.0, {"web": (a, 2.0), "code": (b, 4.0)})
    each = {name: evaluate_heldout(step, 1.0, part, bytes_per_token=bpt)
            for name, part, bpt in (("web", a, 2.0), ("code", b, 4.0))}  # fmt: skip
    pooled = evaluate_heldout(step, 1.0, a + b)
    for name, own in each.items():
        assert {k: got[f"{k}/{name}"] for k in PER_SOURCE} == {k: own[k] for k in PER_SOURCE}
    assert "top5/web" not in got and "perplexity/code" not in got
    assert {k: got[k] for k in pooled} == pooled
    # bits over all sources' bytes, each source's tokens counted by its own bytes per token
    tokens = {name: own["num_tokens"] for name, own in each.items()}
    bytes_ = 2.0 * tokens["web"] + 4.0 * tokens["code"]
    want = pooled["loss"] / math.log(2) / (bytes_ / pooled["num_tokens"])
    assert got["bits_per_byte"] == pytest.approx(want, rel=1e-12)


def test_a_mixture_with_a_source_of_unknown_bytes_has_no_pooled_bits_per_byte():
    rng = np.random.default_rng(6)
    a, b = _batches(rng, n=1), _batches(rng, n=1)
    got = evaluate_heldout_sources(
        heldout_step(_lookup), 1.0, {"a": (a, 2.0), "b": (b, None)}, per_source=("loss",)
    )
    assert "bits_per_byte" not in got and set(got) >= {"loss/a", "loss/b"}
    assert "bits_per_byte/a" not in got  # only the per_source names are kept per source
    with pytest.raises(ValueError, match="source empty"):
        evaluate_heldout_sources(heldout_step(_lookup), 1.0, {"a": ([], 1.0)}, empty="source empty")
