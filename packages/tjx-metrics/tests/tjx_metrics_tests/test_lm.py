import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.metrics import MetricAccumulator, lm_metrics, lm_stats, loss_metrics


def _reference(logits, labels, ignore_index=-100, byte_count=None, ks=(1, 5, 10)):
    """Direct float64 numpy computation."""
    logits = np.asarray(logits, dtype=np.float64)
    mask = labels != ignore_index
    safe = np.where(mask, labels, 0)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll = log_z - np.take_along_axis(logits, safe[..., None], -1)[..., 0]
    n = mask.sum()
    loss = nll[mask].sum() / n
    out = {"loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2)}
    order = np.argsort(-logits, axis=-1)
    for k in ks:
        hit = (order[..., :k] == safe[..., None]).any(-1)
        out[f"top{k}"] = hit[mask].sum() / n
    if byte_count is not None:
        out["bits_per_byte"] = nll[mask].sum() / math.log(2) / byte_count
    return out


def test_lm_metrics_match_numpy():
    rng = np.random.default_rng(0)
    b, s, v = 3, 7, 33
    logits = rng.normal(size=(b, s, v)).astype(np.float32) * 2.0
    labels = rng.integers(0, v, size=(b, s))
    labels[0, :3] = -100
    labels[2, -1] = -100
    byte_counts = rng.integers(1, 9, size=(b,))
    got = lm_metrics(jnp.asarray(logits), jnp.asarray(labels), byte_counts=byte_counts)
    want = _reference(logits, labels, byte_count=byte_counts.sum())
    for key, value in want.items():
        # float32 logits / log-sum-exp on device vs float64 numpy: ~1e-6 relative.
        assert got[key] == pytest.approx(value, rel=1e-5), key
    assert got["num_tokens"] == (labels != -100).sum()
    assert got["num_bytes"] == byte_counts.sum()


def test_top_k_exact_counts_and_custom_ignore_index():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(64, 50)).astype(np.float32)
    labels = rng.integers(0, 50, size=(64,))
    labels[::9] = 7  # also a real class; ignore_index=-1 must not touch it
    labels[5] = -1
    got = lm_metrics(logits, labels, ignore_index=-1, top_k=(1, 3, 50))
    want = _reference(logits, labels, ignore_index=-1, ks=(1, 3, 50))
    assert got["top1"] == pytest.approx(want["top1"], abs=1e-12)
    assert got["top3"] == pytest.approx(want["top3"], abs=1e-12)
    assert got["top50"] == 1.0
    assert "top5" not in got
    assert "bits_per_byte" not in got


def test_lm_stats_is_jittable_and_bf16_logits():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(2, 5, 17)), dtype=jnp.bfloat16)
    labels = jnp.asarray(rng.integers(0, 17, size=(2, 5)))
    stats = jax.jit(lambda x, y: lm_stats(x, y, top_k=(1, 5)))(logits, labels)
    assert stats["num_tokens"].dtype == jnp.int32 and int(stats["num_tokens"]) == 10
    want = _reference(np.asarray(logits.astype(jnp.float32)), np.asarray(labels), ks=(1, 5))
    assert float(stats["sum_loss"]) / 10 == pytest.approx(want["loss"], rel=1e-5)
    assert int(stats["correct_top5"]) / 10 == pytest.approx(want["top5"])


def test_loss_metrics_from_token_losses():
    rng = np.random.default_rng(3)
    losses = rng.uniform(0.5, 6.0, size=(4, 9))
    mask = rng.uniform(size=(4, 9)) > 0.3
    got = loss_metrics(jnp.asarray(losses), mask=jnp.asarray(mask), byte_counts=123)
    loss = losses[mask].sum() / mask.sum()
    assert got["loss"] == pytest.approx(loss, rel=1e-6)
    assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-6)
    assert got["bits_per_byte"] == pytest.approx(losses[mask].sum() / math.log(2) / 123, rel=1e-6)
    unmasked = loss_metrics(losses)
    assert unmasked["loss"] == pytest.approx(losses.mean(), rel=1e-12)
    assert unmasked["num_tokens"] == losses.size


def test_lm_bad_input():
    logits = jnp.zeros((2, 3, 5)) + jnp.arange(5.0)
    with pytest.raises(ValueError, match="labels"):
        lm_stats(logits, jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        lm_stats(logits, jnp.zeros((2, 3), jnp.float32))
    with pytest.raises(ValueError, match="top_k"):
        lm_metrics(logits, jnp.zeros((2, 3), jnp.int32), top_k=(0,))
    with pytest.raises(ValueError, match="top_k"):
        lm_metrics(logits, jnp.zeros((2, 3), jnp.int32), top_k=(True,))
    with pytest.raises(ValueError, match="no scored tokens"):
        lm_metrics(logits, jnp.full((2, 3), -100, jnp.int32))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\).*\[0, 5\]"):
        lm_metrics(logits, jnp.array([[0, 1, 5], [2, 3, -100]]))
    with pytest.raises(ValueError, match="mask shape"):
        loss_metrics(np.ones((2, 3)), mask=np.ones((3, 2), bool))
    with pytest.raises(ValueError, match="num_bytes must be > 0"):
        lm_metrics(logits, jnp.zeros((2, 3), jnp.int32), byte_counts=0)


def test_one_shot_uses_accumulator_path():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 4, 11)).astype(np.float32)
    labels = rng.integers(0, 11, size=(2, 4))
    acc = MetricAccumulator()
    acc.update_stats(lm_stats(jnp.asarray(logits), jnp.asarray(labels)))
    streamed, one_shot = acc.compute(), lm_metrics(logits, labels)
    assert streamed.keys() == one_shot.keys()
    for key in one_shot:
        # eager vs jitted float32 reductions may round differently in the last bit
        assert streamed[key] == pytest.approx(one_shot[key], rel=1e-6), key
    assert streamed["top5"] == one_shot["top5"]


def test_nonfinite_logits_never_count_as_top_k_correct():
    # A diverged model's logits: some rows all NaN, some with one NaN or inf entry. The NumPy
    # reference counts a hit only where the label is in the top k of an all-finite row.
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(40, 20)).astype(np.float32)
    labels = rng.integers(0, 20, size=(40,))
    logits[:10] = np.nan
    logits[10:15, 3] = np.nan
    logits[15:18, 0] = np.inf
    logits[18:20, labels[18:20]] = np.nan
    finite = np.isfinite(logits).all(-1)
    order = np.argsort(-np.where(finite[:, None], logits, 0.0), axis=-1)
    for k in (1, 5, 10):
        hit = (order[:, :k] == labels[:, None]).any(-1) & finite
        got = lm_metrics(logits, labels, top_k=(1, 5, 10))
        assert got[f"top{k}"] == pytest.approx(hit.mean(), abs=1e-12), k
    all_nan = lm_metrics(np.full((4, 8), np.nan, np.float32), np.arange(4), top_k=(1, 5))
    assert all_nan["top1"] == 0.0 and all_nan["top5"] == 0.0
