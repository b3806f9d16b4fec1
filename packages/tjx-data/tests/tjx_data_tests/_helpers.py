"""Test helpers: fresh random documents and an environment for child interpreters."""

from __future__ import annotations

import os
import sys

import numpy as np

WORDS = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "ηta", "theta", "😀", "iota"]


def random_docs(seed: int, count: int, *, max_words: int = 40) -> list[str]:
    """Fresh random documents (some multi-line, some non-ASCII)."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(count):
        words = rng.choice(WORDS, size=int(rng.integers(1, max_words)))
        docs.append(" ".join(words) + ("\n" if rng.random() < 0.5 else ""))
    return docs


def child_env() -> dict[str, str]:
    """Environment for a child Python that must import tjx.data like this process does (under
    Pants the sources are on sys.path, not on PYTHONPATH)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
