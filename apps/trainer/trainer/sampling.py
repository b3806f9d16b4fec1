"""Text samples from the model being trained (tjx.nn.generate, KV cache inside)."""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from trainer.config import Config


def encode_prompts(tokenizer: Any, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded prompt ids [n, max_len] and their lengths (empty prompts get the EOS id)."""
    ids = tokenizer.encode_batch(prompts)
    eos = getattr(tokenizer, "eos_id", None)
    ids = [row if row else [eos if eos is not None else 0] for row in ids]
    lengths = np.asarray([len(r) for r in ids], np.int32)
    out = np.zeros((len(ids), int(lengths.max())), np.int32)
    for i, row in enumerate(ids):
        out[i, : len(row)] = row
    return out, lengths


def generate_texts(
    model: Any, tokenizer: Any, prompts: list[str], sampling: Any, seed: int, max_len: int
) -> list[str]:
    """Generate one continuation per prompt; returns prompt + continuation, decoded."""
    from tjx import nn

    tokens, lengths = encode_prompts(tokenizer, prompts)
    new = max(1, min(sampling.max_new_tokens, max_len - tokens.shape[1]))
    out = nn.generate(
        model,
        tokens,
        max_new_tokens=new,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        seed=seed,
        prompt_lengths=lengths,
    )
    ids = np.asarray(out)
    texts = []
    for i, n in enumerate(lengths):
        row = ids[i, : n + new]  # the real prompt, then the new tokens (tjx.nn.generate layout)
        texts.append(tokenizer.decode([int(t) for t in row]))
    return texts


def sample(setup: Any, params: Any, bundle: Any, cfg: Config, step: int) -> list[str]:
    """Samples for the configured prompts at ``step`` (seeded by the run seed and the step)."""
    model = nnx.merge(setup.graphdef, params, setup.rest)
    return generate_texts(
        model,
        bundle.tokenizer,
        list(cfg.sampling.prompts),
        cfg.sampling,
        seed=cfg.train.seed * 1_000_003 + step,
        max_len=int(setup.nn_config.max_seq_len),
    )
