"""tools/bench_speculative.py on a tiny model: what it reports besides the times (which no test
compares: tests check correctness, never wall-clock time)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from bench_speculative import copying_mtp_model, first_divergence, time_speculative_vs_greedy
from flax import nnx

from tjx import nn

TINY: dict[str, Any] = dict(
    vocab_size=40, max_seq_len=32, d_model=16, num_layers=1, num_heads=4, num_kv_heads=2,
    mlp=nn.MLPConfig(dim=24), mtp=nn.MTPConfig(depths=1),
)  # fmt: skip


def test_the_measurement_counts_each_decoders_passes_on_the_same_tokens() -> None:
    model = copying_mtp_model(nn.LlamaConfig(**TINY), seed=3)
    row = time_speculative_vs_greedy(model, [1, 2, 3], 9, repeats=1)
    assert row["same_tokens"] and row["acceptance_rate"] == 1.0
    # Greedy: the prefill and 8 one-token passes; speculative: the prefill and 4 two-token ones.
    assert (row["greedy_main_passes"], row["speculative_main_passes"]) == (9, 5)
    assert (row["rows"], row["prompt_tokens"], row["new_tokens"], row["platform"]) == (
        1, 3, 9, "cpu",
    )  # fmt: skip
    assert {"greedy_tokens_per_s", "speculative_tokens_per_s", "speedup"} <= set(row)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        time_speculative_vs_greedy(model, [1, 2, 3], 9, repeats=0)
    assert row["divergence"] is None


def test_a_divergence_is_a_near_tie_only_where_float32_cannot_tell_the_tokens_apart() -> None:
    """Greedy's first token and the next id get the same head column: their logits tie, and a
    decoder picking the higher id where greedy picked the lower diverged by rounding; one
    picking the worst token (a planted bug) did not, its margin far above the bf16 noise."""
    config = nn.LlamaConfig(**TINY, precision=nn.Precision(jnp.float32, jnp.bfloat16))
    model = nn.Llama(config, rngs=nnx.Rngs(int(np.random.default_rng().integers(1000))))
    prompt = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    first = int(np.asarray(nn.generate(model, prompt, max_new_tokens=1))[0, 3])
    other = (first + 1) % TINY["vocab_size"]
    flat = nn.get_flat_params(model)
    head = np.array(flat["head.kernel"])
    head[:, other] = head[:, first]
    nn.set_flat_params(model, {**flat, "head.kernel": head})
    plain = np.asarray(nn.generate(model, prompt, max_new_tokens=4))
    low, high = sorted((first, other))
    assert plain[0, 3] == low  # a tie goes to the lower id
    assert first_divergence(model, 3, plain, plain.copy()) is None
    tied = plain.copy()
    tied[0, 3] = high
    found = first_divergence(model, 3, plain, tied)
    assert found is not None
    assert (found["row"], found["token"], found["greedy"], found["speculative"]) == (
        0, 0, low, high,
    )  # fmt: skip
    assert found["near_tie"] and abs(found["margin"]) <= 1e-6 < found["noise"]
    logits = np.asarray(model(jnp.asarray(prompt[:1]))[0, -1])
    wrong = plain.copy()
    wrong[0, 3] = int(np.argmin(logits))
    bug = first_divergence(model, 3, plain, wrong)
    assert bug is not None and not bug["near_tie"] and bug["margin"] > 10 * bug["noise"]
