"""A classifier's metrics: the LM means of its logits under classification names, checked against
a float64 NumPy reference on random logits."""

import numpy as np
import pytest

from tjx.metrics import MetricAccumulator, classification_metrics, lm_metrics, lm_stats


def _reference(logits, labels, ks):
    """float64 mean cross-entropy and top-k accuracies, straight from the definitions."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1)
    lse = np.log(np.exp(logits - top[:, None]).sum(-1)) + top
    loss = (lse - logits[np.arange(len(labels)), labels]).mean()
    order = np.argsort(-logits, axis=-1)
    return loss, {k: (order[:, :k] == labels[:, None]).any(-1).mean() for k in ks}


@pytest.mark.parametrize("num_classes", [2, 5, 10, 12])
def test_accuracy_images_and_only_the_informative_top_k(num_classes):
    rng = np.random.default_rng(num_classes)
    images, ks = 23, (1, 3, 5, 10)
    logits = rng.normal(size=(images, num_classes)).astype(np.float32) * 2
    labels = rng.integers(0, num_classes, images)
    got = classification_metrics(lm_metrics(logits, labels, top_k=ks), num_classes)
    loss, top = _reference(logits, labels, ks)
    kept = [k for k in ks if 1 < k < num_classes]
    assert list(got) == ["loss", "accuracy", "num_images", *(f"top{k}" for k in kept)]
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert got["accuracy"] == pytest.approx(top[1], abs=1e-12)
    assert got["num_images"] == images
    for k in kept:
        assert got[f"top{k}"] == pytest.approx(top[k], abs=1e-12)


def test_streamed_sums_name_the_same_way():
    """What an evaluation accumulates batch by batch gives the one-shot figures."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(12, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 12)
    acc = MetricAccumulator()
    for part in (slice(0, 5), slice(5, 12)):
        acc.update_stats(lm_stats(logits[part], labels[part], top_k=(1, 5)))
    streamed = classification_metrics(acc.compute(), 7)
    one_shot = classification_metrics(lm_metrics(logits, labels, top_k=(1, 5)), 7)
    assert streamed == pytest.approx(one_shot, rel=1e-6)


def test_bad_inputs_name_the_fix():
    means = {"loss": 1.0, "top1": 0.5, "num_tokens": 4}
    for bad in (1, 0, True, 3.0):
        with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
            classification_metrics(means, bad)
    with pytest.raises(ValueError, match="no top1 in the metrics .* holding 1"):
        classification_metrics({"loss": 1.0, "num_tokens": 4, "top5": 0.9}, 10)
    assert "topx" not in classification_metrics({**means, "topx": 1.0}, 10)
