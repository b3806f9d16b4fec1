"""The evaluator's public face (for tools and other apps): the harness's bucketed scorer, and a
finished run's loading, held-out metrics (``evaluate_run``: what ``--checkpoint`` prints, for any
objective; ``evaluate_heldout``: a model on token shards; ``evaluate_reward``: the held-out reward
of greedy completions, a GRPO run's measure) and attention maps.

Each name's module imports JAX, so each is loaded on first access (`tjx.core.lazy.lazy_api`):
``python -m eval --help`` and a bad flag answer first.
"""

from __future__ import annotations

from tjx.core.lazy import lazy_api

with lazy_api(globals()):
    from eval.attention_map import layer_distances
    from eval.attention_map import plot as plot_attention
    from eval.harness_scoring import Scorer, length_buckets
    from eval.heldout import evaluate as evaluate_heldout
    from eval.heldout import evaluate_run
    from eval.reward import evaluate as evaluate_reward
    from eval.runs import LoadedRun, heldout_dir, load_run

__all__ = [
    "LoadedRun",
    "Scorer",
    "evaluate_heldout",
    "evaluate_reward",
    "evaluate_run",
    "heldout_dir",
    "layer_distances",
    "length_buckets",
    "load_run",
    "plot_attention",
]
