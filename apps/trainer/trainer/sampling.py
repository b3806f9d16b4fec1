"""Text samples from the model being trained (tjx.nn.generate, KV cache inside)."""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from trainer.config import Config


def format_samples(texts: list[str], prompts: list[str]) -> str:
    """One sampling step's text (``samples/step_N.txt``): each sample under a header naming its
    prompt."""
    return "\n".join(
        f"--- sample {i} (prompt {p!r}) ---\n{t}\n"
        for i, (p, t) in enumerate(zip(prompts, texts, strict=True))
    )


def generate_texts(
    model: Any, tokenizer: Any, prompts: list[str], sampling: Any, seed: int, max_len: int
) -> list[str]:
    """Generate one continuation per prompt; returns prompt + continuation, decoded."""
    from tjx import data, nn

    tokens, lengths = data.encode_prompts(tokenizer, prompts)
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
