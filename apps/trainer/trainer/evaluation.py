"""Held-out metrics during training: loss, perplexity, bits/token, bits/byte, top-k accuracy.

The loop is tjx-metrics' (``accumulate_heldout`` and ``heldout_metrics``, what the evaluator's
``--checkpoint`` runs too) over this run's validation batches, placed on its mesh.
"""

from __future__ import annotations

from typing import Any

import jax

from trainer.config import Config
from trainer.step import make_eval_step

_EVAL_STEPS: dict[int, Any] = {}
#: A mixture's metrics kept per source (``val_loss/<name>``, ...): the rest only pooled.
PER_SOURCE = ("loss", "bits_per_byte", "top1", "num_tokens")
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
    ``num_images`` and ``top{k}`` below its class count.

    A mixture (``data.sources``) evaluates each source's own held-out split: `PER_SOURCE`'s
    metrics per source as ``<metric>/<name>`` (``loss/web``, logged ``val_loss/web``), and every
    plain key over all of them together (the sources' tokens pooled, bytes by each source's
    bytes/token).

    Preference pairs: `trainer.dpo.heldout`'s DPO ``loss``, ``rewards/accuracies`` (held-out
    preference accuracy), ``rewards/margins`` ... over the pairs, against ``reference`` (the
    state's frozen params; None: the adapters off).
    """
    import trainer.data_setup as data_setup
    from tjx import metrics
    from trainer import dpo

    step = _eval_step(setup, cfg)
    if dpo.is_dpo(cfg):
        batches = data_setup.val_batches(bundle, cfg, cfg.train.eval_batches, setup.mesh)
        return dpo.heldout(step, params, reference, batches, _placer(setup.mesh))
    naming = {
        "scores_every_token": cfg.objective.scores_every_token,
        "num_classes": setup.nn_config.num_classes if cfg.task == "classify" else None,
    }
    if getattr(bundle, "mixture", None) is None:
        batches = data_setup.val_batches(bundle, cfg, cfg.train.eval_batches, setup.mesh)
        acc = _accumulate(step, params, setup.mesh, batches)
        return metrics.heldout_metrics(acc, bytes_per_token=bundle.bytes_per_token, **naming)
    pooled, per_source = metrics.MetricAccumulator(), {}
    num_bytes: float | None = 0.0  # None once a source has no bytes/token
    for name, (batches, bpt) in data_setup.val_sets(
        bundle, cfg, cfg.train.eval_batches, setup.mesh
    ).items():
        acc = _accumulate(step, params, setup.mesh, batches)
        for key, value in metrics.heldout_metrics(acc, bytes_per_token=bpt, **naming).items():
            if key in PER_SOURCE:
                per_source[f"{key}/{name}"] = value
        num_bytes = None if num_bytes is None or not bpt else num_bytes + acc.num_tokens * bpt
        pooled.merge(acc)
    # Bits over all sources' tokens / their bytes: bits per token / bytes per token.
    bpt_all = num_bytes / pooled.num_tokens if num_bytes else None
    out = metrics.heldout_metrics(pooled, bytes_per_token=bpt_all, **naming)
    return {**out, **per_source}


def evaluate_state(setup: Any, state: Any, bundle: Any, cfg: Config) -> dict[str, float]:
    """`evaluate` of a train state's params (against its DPO reference, if it holds one)."""
    return evaluate(setup, state["params"], bundle, cfg, state.get("reference"))


def _placer(mesh: Any) -> Any:
    from tjx import parallel

    return lambda batch: parallel.place_batch(batch, mesh)


def _accumulate(step: Any, params: Any, mesh: Any, batches: Any) -> Any:
    """tjx-metrics' held-out sums over ``batches`` on the run's mesh; none is an error."""
    from tjx import metrics, parallel

    return metrics.accumulate_heldout(
        step, params, batches, place=lambda b: parallel.place_batch(b, mesh), empty=_EMPTY
    )
