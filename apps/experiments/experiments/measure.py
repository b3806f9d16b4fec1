"""Measurements of a finished trainer run beyond its own log: the evaluator's held-out metrics
at longer sequences, attention-distance histograms at the start, middle and end, and the
compiled step's peak memory. Each is the owning code's (apps/eval, trainer.plan.memory_fit), called
on the run directory the trainer wrote."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from experiments.spec import Row, RunContext
from trainer import RunDir  # no jax or orbax on import

#: How far beyond the training length the positions study evaluates.
LENGTH_FACTORS = (1, 2, 4)


def extrapolation(ctx: RunContext) -> Row:
    """Held-out loss at 1×, 2× and 4× the training length (apps/eval's `heldout.evaluate` on the
    run's own validation shards); a length beyond the model's ``max_seq_len`` is left empty (a
    learned position table has no rows for it)."""
    from eval import evaluate_heldout, heldout_dir, load_run

    run = load_run(ctx.run_dir)
    shard_dir, bpt = heldout_dir(run, None)
    cfg = ctx.config
    seq = cfg.data.seq_len
    row: Row = {}
    for factor in LENGTH_FACTORS:
        key = f"val_loss_{factor}x"
        if seq * factor > run.nn_config.max_seq_len:
            row[key] = None
            continue
        # The same number of held-out tokens at every length: fewer rows of longer windows.
        rows = max(1, cfg.eval.batch_size // factor)
        out = evaluate_heldout(
            run.model,
            shard_dir,
            seq_len=seq * factor,
            batch_size=rows,
            max_batches=cfg.train.eval_batches,
            bytes_per_token=bpt,
        )
        row[key] = float(out["loss"])
    return row


def _initial_model(run_dir: Path, seed: int) -> Any:
    """The run's model as the trainer initialised it (same config, same seed)."""
    from flax import nnx

    from tjx import nn

    desc = RunDir(run_dir).read(RunDir.MODEL_FILE)
    return nn.build_model(nn.config_from_dict(desc), rngs=nnx.Rngs(seed))


def attention_stages(ctx: RunContext) -> Row:
    """Attention-distance histograms (apps/eval's `attention_map`) at the start (the initial
    weights), the middle (the checkpoint at half the steps) and the end; PNGs in the run dir,
    the mean distance over all layers, heads and queries in the row."""
    from eval import heldout_dir, layer_distances, load_run, plot_attention
    from tjx import data

    cfg = ctx.config
    end = load_run(ctx.run_dir)
    shard_dir, _ = heldout_dir(end, None)
    batch = next(iter(data.validation_batches(shard_dir, cfg.data.seq_len, 4)))
    batch = {k: np.asarray(v) for k, v in batch.items()}
    middle_step = cfg.train.steps // 2
    stages = {
        "start": (_initial_model(ctx.run_dir, cfg.train.seed), 0),
        "middle": (load_run(ctx.run_dir, step=middle_step).model, middle_step),
        "end": (end.model, end.step),
    }
    row: Row = {}
    for stage, (model, step) in stages.items():
        distances = layer_distances(model, batch)
        png = ctx.run_dir / f"attention_{stage}.png"
        plot_attention(distances, png, f"{ctx.spec.label}: {stage} (step {step})")
        row[f"attn_{stage}"] = float(np.mean([d.mean() for d in distances]))
    return row


def peak_memory(ctx: RunContext) -> Row:
    """Compiled peak memory of the run's train step (trainer.plan.memory_fit: XLA's analysis of the
    step compiled from abstract shapes) and its steps/s (the median logged tokens/s ÷ tokens per
    step)."""
    from trainer import resolve, step_config, step_peak

    desc = RunDir(ctx.run_dir).read(RunDir.MODEL_FILE)
    vocab = int(desc["fields"]["vocab_size"])
    cfg = ctx.config
    return {
        "peak_mib": step_peak(step_config(resolve(cfg, vocab))) / 2**20,
        "tokens_per_step": cfg.data.batch_size * cfg.data.seq_len,
    }


@functools.lru_cache(maxsize=8)
def _unigram_loss(
    train_dir: str, val_dir: str, seq_len: int, batch_size: int, batches: int
) -> float:
    from tjx import data
    from tjx.data.shards import load_index

    train = load_index(train_dir).read_all()
    vocab = int(load_index(train_dir).tokenizer["vocab_size"])
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0  # add-one: no log 0
    logp = np.log(counts / counts.sum())
    windows = itertools.islice(data.validation_batches(val_dir, seq_len, batch_size), batches)
    targets = np.concatenate([np.asarray(b["targets"]).ravel() for b in windows])
    targets = targets[targets >= 0]  # padding is -100
    return float(-logp[targets].mean())


def unigram(ctx: RunContext) -> Row:
    """The loss of the unigram model on the run's own held-out tokens: each token's frequency in
    the training split (add-one smoothed), scored on exactly the windows the trainer's
    evaluation uses (the first ``train.eval_batches`` validation batches). A model that has
    learned nothing about context scores about this; the depth and schedule studies compare
    their final validation losses with it."""
    desc = RunDir(ctx.run_dir).read(RunDir.DATA_FILE)
    cfg = ctx.config
    loss = _unigram_loss(
        desc["train_dir"],
        desc["val_dir"],
        cfg.data.seq_len,
        cfg.eval.batch_size,
        cfg.train.eval_batches,
    )
    return {"unigram_loss": loss}
