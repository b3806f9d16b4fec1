"""Held-out metrics during training: tjx-metrics' loop (``evaluate_heldout``, what the evaluator's
``--checkpoint`` runs too; ``evaluate_heldout_sources`` for a mixture) over this run's validation
batches, placed on its mesh."""

from __future__ import annotations

from typing import Any

import jax

from trainer.config import Config
from trainer.step import make_eval_step

_EVAL_STEPS: dict[int, Any] = {}
_EMPTY = "validation data is empty: no batch of the configured size fits"


def _eval_step(setup: Any, cfg: Config) -> Any:
    key = id(setup)
    if key not in _EVAL_STEPS:
        _EVAL_STEPS.clear()
        _EVAL_STEPS[key] = jax.jit(make_eval_step(setup.graphdef, setup.rest, cfg, setup.split))
    return _EVAL_STEPS[key]


def evaluate(
    setup: Any, params: Any, bundle: Any, cfg: Config, reference: Any = None
) -> dict[str, float]:
    """Metrics over the first ``train.eval_batches`` validation batches (always the same ones):
    tjx-metrics' token-weighted ``loss``, ``perplexity``, ``bits_per_token``, ``top{k}``,
    ``num_tokens`` and, for text, ``bits_per_byte``; a classifier's ``loss``, ``accuracy``,
    ``num_images`` and ``top{k}`` below its class count. A mixture (``data.sources``): those of
    all sources pooled, and tjx-metrics' ``PER_SOURCE`` of each as ``loss/web`` (logged
    ``val_loss/web``). Preference pairs: `trainer.dpo.heldout`'s DPO ``loss``,
    ``rewards/accuracies`` ... against ``reference`` (None: the adapters off).
    """
    import trainer.data_setup as data_setup
    from tjx import metrics, parallel
    from trainer import dpo

    step, count, mesh = _eval_step(setup, cfg), cfg.train.eval_batches, setup.mesh

    def place(batch: Any) -> Any:
        return parallel.place_batch(batch, mesh)

    if dpo.is_dpo(cfg):
        return dpo.heldout(
            step, params, reference, data_setup.val_batches(bundle, cfg, count, mesh), place
        )
    classes = setup.nn_config.num_classes if cfg.task == "classify" else None
    naming = {"scores_every_token": cfg.objective.scores_every_token, "num_classes": classes}
    if getattr(bundle, "mixture", None) is None:
        batches = data_setup.val_batches(bundle, cfg, count, mesh)
        bpt = bundle.bytes_per_token
        return metrics.evaluate_heldout(
            step, params, batches, place=place, empty=_EMPTY, bytes_per_token=bpt, **naming
        )
    sets = data_setup.val_sets(bundle, cfg, count, mesh)
    return metrics.evaluate_heldout_sources(step, params, sets, place=place, empty=_EMPTY, **naming)


def evaluate_state(setup: Any, state: Any, bundle: Any, cfg: Config) -> dict[str, float]:
    """`evaluate` of a train state's params (against its DPO reference, if it holds one)."""
    return evaluate(setup, state["params"], bundle, cfg, state.get("reference"))
