"""tools/bench_speculative.py on a tiny model: what it reports besides the times (which no test
compares: tests check correctness, never wall-clock time)."""

from __future__ import annotations

from typing import Any

import pytest
from bench_speculative import copying_mtp_model, time_speculative_vs_greedy

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
