"""HOOK — speculative decoding against greedy decoding, tokens per second (#68's suite cell).

**A marked hook for the speculative-decoding work** (tjx-nn's ``speculative.py`` and
``kv_cache.py`` are being changed beside this suite): `measure` is the cell's one function and
returns one row; whoever adds tjx-nn's own speculative-vs-greedy timing function replaces its
body with a call to it, keeping the row's keys (the markdown and the fold read them). Until then
it times both decoders as they are: a small Llama with one multi-token-prediction depth and
random weights (`MODEL`; a random model's drafts are rarely accepted, so this is the decoders'
overhead, not a speed-up to expect from a trained model), ``tjx.nn.generate`` (greedy) and
``tjx.nn.generate_speculative`` on the same prompts, each called once to compile and once timed,
and checks that both emit the same tokens.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx import nn
from tjx_tools.gpu_suite.report import Section, fmt, md_table

#: The model and the call (GPU); the smoke run shrinks both.
MODEL: dict[str, Any] = dict(vocab_size=32000, max_seq_len=1024, d_model=1024, num_layers=8,
                             num_heads=16, num_kv_heads=4, mlp_dim=2816, mtp_depths=1)  # fmt: skip
CALL = dict(batch=8, prompt=128, new=256)
SMOKE_MODEL: dict[str, Any] = dict(vocab_size=64, max_seq_len=64, d_model=32, num_layers=2,
                                   num_heads=2, num_kv_heads=1, mlp_dim=64,
                                   mtp_depths=1)  # fmt: skip
SMOKE_CALL = dict(batch=2, prompt=4, new=8)


def measure(smoke: bool) -> dict[str, Any]:
    """HOOK: one row — ``greedy_tokens_per_s``, ``speculative_tokens_per_s``, ``speedup``,
    ``acceptance_rate``, ``same_tokens``, ``model``, ``call`` (module doc)."""
    fields, call = (SMOKE_MODEL, SMOKE_CALL) if smoke else (MODEL, CALL)
    precision = nn.Precision(jnp.float32, jnp.float32 if smoke else jnp.bfloat16)
    model = nn.Llama(nn.LlamaConfig(**fields, precision=precision), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, fields["vocab_size"], (call["batch"], call["prompt"]))
    new = call["new"]

    def greedy() -> Any:
        return jax.block_until_ready(nn.generate(model, prompts, max_new_tokens=new))

    def speculative() -> Any:
        got = nn.generate_speculative(model, prompts, max_new_tokens=new)
        jax.block_until_ready(got.tokens)
        return got

    greedy(), speculative()  # compile both
    t0 = time.perf_counter()
    want = greedy()
    greedy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = speculative()
    spec_s = time.perf_counter() - t0
    tokens = call["batch"] * new
    return {
        "model": f"Llama d{fields['d_model']} × {fields['num_layers']} layers, MTP depth 1, "
                 "random weights",
        "call": f"{call['batch']} rows, prompt {call['prompt']}, {new} new tokens",
        "greedy_tokens_per_s": tokens / greedy_s,
        "speculative_tokens_per_s": tokens / spec_s,
        "speedup": greedy_s / spec_s,
        "acceptance_rate": float(got.acceptance_rate),
        "same_tokens": bool(np.array_equal(np.asarray(got.tokens), np.asarray(want))),
    }  # fmt: skip


def run(sec: Section, smoke: bool, deadline: float) -> None:
    """The hook's one row (skipped past the deadline)."""
    if time.perf_counter() > deadline:
        sec.notes.append("skipped (time budget): speculative decoding vs greedy")
        return
    with sec.cell("speculative decoding vs greedy"):
        row = measure(smoke)
        sec.add_row(row)
        if not row["same_tokens"]:
            sec.fail("speculative decoding emitted other tokens than greedy decoding")
        sec.summary = dict(row)
        sec.markdown = (
            ("Smoke run (CPU): a harness check. " if smoke else "**Measured**, one call. ")
            + "Greedy against speculative decoding with the model's own MTP draft (a hook: "
            "`tools/tjx_tools/gpu_suite/speculative.py`).\n\n"
            + md_table(
                ["model", "call", "greedy tokens/s", "speculative tokens/s", "× greedy",
                 "acceptance", "same tokens"],
                [[row["model"], row["call"], fmt(row["greedy_tokens_per_s"], ",.0f"),
                  fmt(row["speculative_tokens_per_s"], ",.0f"), fmt(row["speedup"], ".2f"),
                  fmt(row["acceptance_rate"], ".2f"), row["same_tokens"]]],
            )
        )  # fmt: skip
