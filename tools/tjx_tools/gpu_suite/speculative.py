"""Speculative decoding against greedy decoding, tokens per second (#68's suite cell).

`measure` times ``tools/bench_speculative.py``'s `time_speculative_vs_greedy` on two small Llamas
with one multi-token-prediction depth: random weights (a random model's drafts are rarely
accepted, so this row is the cost of verifying a rejected draft: one two-token main-model pass
where greedy makes a one-token one) and the copying model (`copying_mtp_model`: every draft is
accepted by construction, the best case: half the main-model passes). Both rows check that
speculative decoding emitted greedy decoding's tokens, or parted from them only at a near tie
(`bench_speculative.first_divergence`: bf16 decoders round two-token and one-token passes apart).
"""

from __future__ import annotations

import time
from typing import Any

import jax.numpy as jnp
import numpy as np
from bench_speculative import copying_mtp_model, time_speculative_vs_greedy
from flax import nnx

from tjx import nn
from tjx_tools.gpu_suite.report import Section, fmt, md_table

#: The model and the call (GPU); the smoke run shrinks both.
MODEL: dict[str, Any] = dict(vocab_size=32000, max_seq_len=1024, d_model=1024, num_layers=8,
                             num_heads=16, num_kv_heads=4, mlp=nn.MLPConfig(dim=2816),
                             mtp=nn.MTPConfig(depths=1))  # fmt: skip
CALL = dict(batch=8, prompt=128, new=256)
SMOKE_MODEL: dict[str, Any] = dict(vocab_size=64, max_seq_len=64, d_model=32, num_layers=2,
                                   num_heads=2, num_kv_heads=1, mlp=nn.MLPConfig(dim=64),
                                   mtp=nn.MTPConfig(depths=1))  # fmt: skip
SMOKE_CALL = dict(batch=2, prompt=4, new=8)


def measure(smoke: bool) -> list[dict[str, Any]]:
    """Two rows (random weights; the copying model), each ``model``, ``call`` and
    `time_speculative_vs_greedy`'s figures (``greedy_tokens_per_s``, ``speculative_tokens_per_s``,
    ``speedup``, ``acceptance_rate``, the main-model passes, ``same_tokens``)."""
    fields, call = (SMOKE_MODEL, SMOKE_CALL) if smoke else (MODEL, CALL)
    precision = nn.Precision(jnp.float32, jnp.float32 if smoke else jnp.bfloat16)
    config = nn.LlamaConfig(**fields, precision=precision)
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, fields["vocab_size"], (call["batch"], call["prompt"]))
    rows = []
    for name, model in (
        (f"{fields['num_layers']} layers, random weights", nn.Llama(config, rngs=nnx.Rngs(0))),
        ("1 layer, copying (every draft accepted)", copying_mtp_model(config)),
    ):
        got = time_speculative_vs_greedy(model, prompts, call["new"], repeats=1 if smoke else 3)
        rows.append(
            {
                "model": f"Llama d{fields['d_model']}, {name}, MTP depth 1",
                "call": f"{call['batch']} rows, prompt {call['prompt']}, {call['new']} new tokens",
                **got,
            }
        )
    return rows


def run(sec: Section, smoke: bool, deadline: float) -> None:
    """The hook's one row (skipped past the deadline)."""
    if time.perf_counter() > deadline:
        sec.notes.append("skipped (time budget): speculative decoding vs greedy")
        return
    with sec.cell("speculative decoding vs greedy"):
        rows = measure(smoke)
        for row in rows:
            sec.add_row(row)
        # 16-bit decoders may part at a near tie (`bench_speculative.first_divergence`: the
        # H200 call of 2026-11-30 saw the random model's rows part, unexplained then): only a
        # divergence the float32 twin can tell apart is a failure.
        wrong = [r for r in rows if r["divergence"] and not r["divergence"]["near_tie"]]
        if wrong:
            sec.fail("speculative decoding emitted other tokens than greedy decoding where float32 "
                     f"tells them apart: {said(wrong[0])}")  # fmt: skip
        for row in rows:
            if row["divergence"] and row["divergence"]["near_tie"]:
                sec.notes.append(f"{row['model']}: {said(row)}")
        sec.summary = dict(rows[0])
        sec.markdown = (
            ("Smoke run (CPU): a harness check. " if smoke else "**Measured**, one call. ")
            + "Greedy against speculative decoding with the model's own MTP draft (one two-token "
            "verification pass per step; `tools/bench_speculative.py`).\n\n"
            + md_table(
                ["model", "call", "greedy tokens/s", "speculative tokens/s", "× greedy",
                 "acceptance", "main passes (greedy / speculative)", "same tokens as greedy"],
                [[row["model"], row["call"], fmt(row["greedy_tokens_per_s"], ",.0f"),
                  fmt(row["speculative_tokens_per_s"], ",.0f"), fmt(row["speedup"], ".2f"),
                  fmt(row["acceptance_rate"], ".2f"),
                  f"{row['greedy_main_passes']} / {row['speculative_main_passes']}",
                  said(row)] for row in rows],
            )
        )  # fmt: skip


def said(row: dict[str, Any]) -> str:
    """A row's "same tokens" cell: yes, or where the two first parted and how far apart the two
    tokens are in float32 against the model's own rounding."""
    d = row.get("divergence")
    if row["same_tokens"] or not d:
        return "yes"
    kind = "a near tie" if d["near_tie"] else "NOT a near tie"
    return (f"no: row {d['row']} parts at new token {d['token']} ({d['greedy']} vs "
            f"{d['speculative']}), {kind}: float32 margin {d['margin']:.2g}, the model's own "
            f"logits within {d['noise']:.2g} of float32")  # fmt: skip
