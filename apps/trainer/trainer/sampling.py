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


def sample(setup: Any, params: Any, bundle: Any, cfg: Config, step: int) -> list[str]:
    """One continuation per configured prompt at ``step`` (seeded by the run seed and the step):
    prompt + continuation, decoded."""
    from tjx import data, nn

    s, tokenizer, seed = cfg.sampling, bundle.tokenizer, cfg.train.seed * 1_000_003 + step
    tokens, lengths = data.encode_prompts(tokenizer, list(s.prompts))
    new = max(1, min(s.max_new_tokens, int(setup.nn_config.max_seq_len) - tokens.shape[1]))
    model = nnx.merge(setup.graphdef, params, setup.rest)
    knobs = {k: getattr(s, k) for k in ("temperature", "top_k", "top_p")}
    out = nn.generate(model, tokens, max_new_tokens=new, seed=seed, prompt_lengths=lengths, **knobs)
    ids = np.asarray(out)  # each row: the real prompt, then the new tokens (tjx.nn.generate layout)
    return [tokenizer.decode([int(t) for t in ids[i, : n + new]]) for i, n in enumerate(lengths)]
