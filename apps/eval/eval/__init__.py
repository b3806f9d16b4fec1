"""The evaluator's public face (for tools and other apps): the harness's bucketed scorer, and a
finished run's loading, held-out metrics (``evaluate_run``: what ``--checkpoint`` prints, for any
objective; ``evaluate_heldout``: a model on token shards; ``evaluate_reward``: the held-out reward
of greedy completions, a GRPO run's measure) and attention maps.

The scorer is imported eagerly, as before; the other names load lazily (PEP 562), on first
access, since their modules import JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eval.harness_scoring import Scorer, length_buckets

if TYPE_CHECKING:  # the lazy names, eagerly, for the type checker
    from eval.attention_map import layer_distances
    from eval.attention_map import plot as plot_attention
    from eval.heldout import evaluate as evaluate_heldout
    from eval.heldout import evaluate_run
    from eval.reward import evaluate as evaluate_reward
    from eval.runs import LoadedRun, heldout_dir, load_run

#: Each lazily loaded name: (its module, its name there).
_LAZY: dict[str, tuple[str, str]] = {
    "LoadedRun": ("eval.runs", "LoadedRun"),
    "evaluate_heldout": ("eval.heldout", "evaluate"),
    "evaluate_run": ("eval.heldout", "evaluate_run"),
    "evaluate_reward": ("eval.reward", "evaluate"),
    "heldout_dir": ("eval.runs", "heldout_dir"),
    "layer_distances": ("eval.attention_map", "layer_distances"),
    "load_run": ("eval.runs", "load_run"),
    "plot_attention": ("eval.attention_map", "plot"),
}

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


def __getattr__(name: str) -> Any:
    """Import the module that owns ``name`` on first access (PEP 562), and keep the value."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
