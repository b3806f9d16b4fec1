"""Held-out metrics of a run: loss, perplexity, bits/token, bits/byte, top-1/5/10 accuracy; an
image run's accuracy and top-k; a preference (DPO) run's DPO metrics (`eval.preference`).

The step and the loop are the packages', the same the trainer's validation calls: tjx-nn's
``objective_logits_fn`` (next token for a decoder, masked tokens for BERT, the continued half for
the encoder-decoder, one class per image for ViT) into tjx-metrics' ``heldout_step`` (``lm_stats``
sums on device), summed and named by tjx-metrics' ``evaluate_heldout``. This module says which
batches, and how an error reads on the command line.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from eval import attention_choice, preference
from eval.runs import LoadedRun, RunError, heldout_dir
from tjx import data, metrics, nn

#: The top-k accuracies of a text run (an image run reports its own ``eval.top_k``, as trained).
TOP_K = (1, 5, 10)


def make_step(
    model: Any,
    *,
    key: jax.Array | None = None,
    mask_prob: float = 0.15,
    top_k: Sequence[int] = TOP_K,
) -> Any:
    """A jitted ``step(params, batch) -> lm_stats sums`` of tjx-nn's ``objective_logits_fn`` for
    the model's graph; ``key`` and ``mask_prob`` are BERT's fixed masking (see ``evaluate``)."""
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    logits_fn = nn.objective_logits_fn(graphdef, rest, key=key, mask_prob=mask_prob)
    return jax.jit(metrics.heldout_step(logits_fn, top_k=top_k))


def score(
    model: Any,
    batches: Iterable[dict[str, Any]],
    *,
    bytes_per_token: float | None,
    empty: str,
    key: jax.Array | None = None,
    mask_prob: float = 0.15,
    top_k: Sequence[int] = TOP_K,
) -> dict[str, float]:
    """tjx-metrics' held-out metrics of ``model`` over ``batches``, named for its objective (a
    classifier's ``accuracy`` and ``num_images``); ``empty`` is the error when none is scored."""
    objective = nn.objective_of(model)
    return metrics.evaluate_heldout(
        make_step(model, key=key, mask_prob=mask_prob, top_k=top_k),
        nnx.to_pure_dict(nnx.state(model, nnx.Param)),
        batches,
        empty=empty,
        bytes_per_token=bytes_per_token,
        scores_every_token=objective.scores_every_token,
        num_classes=model.config.num_classes if objective.name == "classify" else None,
    )


def evaluate(
    model: Any,
    shard_dir: Path,
    *,
    seq_len: int,
    batch_size: int,
    max_batches: int | None,
    bytes_per_token: float | None,
    key: jax.Array | None = None,
    mask_prob: float = 0.15,
) -> dict[str, float]:
    """Metrics over the held-out token shards (in order; the first ``max_batches`` batches).

    ``bits_per_byte`` needs ``bytes_per_token`` and an objective that scores every token
    (tjx.nn's ``Objective.scores_every_token``);
    masked-LM runs (BERT: ``key``, e.g. ``tjx.nn.eval_mask_key(seed)``, masks ``mask_prob`` of
    the real tokens, the same at every call) report loss, perplexity and accuracy over the
    masked tokens, encoder-decoder runs over the continued half of each window (every token
    there is scored, so bits/byte too).
    """
    batches = data.validation_batches(shard_dir, seq_len, batch_size)
    return score(
        model,
        itertools.islice(batches, max_batches),  # None: all of them
        bytes_per_token=bytes_per_token,
        empty=f"{shard_dir}: no full held-out batch of {batch_size}×{seq_len} tokens; "
        "lower --batch-size",
        key=key,
        mask_prob=mask_prob,
    )


def evaluate_run(
    run: LoadedRun,
    *,
    source: str | None = None,
    batch_size: int = 8,
    max_batches: int | None = None,
) -> dict[str, float]:
    """The held-out metrics ``python -m eval --checkpoint`` prints, for a run of any objective.

    A text run is scored on its validation shards (or ``source``'s, tokenized with the run's
    tokenizer), a BERT run masking with the trainer's evaluation key of the run's seed; an image
    run on its held-out images with its own ``eval.top_k``. With ``batch_size`` and
    ``max_batches`` at the run's ``eval.batch_size`` and ``train.eval_batches`` these are the
    numbers of the trainer's ``val_*`` at that step. The attention kernel is one that compiles
    here (a failing one costs a line, or is the error). A preference (DPO) run reports DPO's
    held-out metrics over its pairs (`eval.preference`; ``batch_size`` counts pairs).
    """
    if run.data.get("format") == "preference":  # DPO's metrics against the run's reference
        return preference.evaluate(
            run, source=source, batch_size=batch_size, max_batches=max_batches
        )
    train = run.config.get("train", {})
    # The same masked positions as the trainer's evaluation, so the two agree on one batch.
    key = nn.eval_mask_key(int(train.get("seed", 0)))
    mask_prob = float(train.get("mlm_probability", 0.15))
    batches, bpt, empty = _heldout(run, source, batch_size, max_batches)
    top_k = TOP_K
    if run.objective.name == "classify":
        top_k = tuple(run.config.get("eval", {}).get("top_k") or TOP_K)
    run = attention_choice.choose_attention(
        run,
        next(batches(), None),
        make_step=lambda model: make_step(model, key=key, mask_prob=mask_prob, top_k=top_k),
    )
    return score(
        run.model,
        batches(),
        bytes_per_token=bpt,
        empty=empty,
        key=key,
        mask_prob=mask_prob,
        top_k=top_k,
    )


def _heldout(
    run: LoadedRun, source: str | None, batch_size: int, max_batches: int | None
) -> tuple[Callable[[], Iterator[dict[str, Any]]], float | None, str]:
    """(fresh held-out batches on each call, bytes/token, the error when none fits)."""
    if run.chat:
        return _conversations(run, source, batch_size, max_batches)
    if run.objective.name != "classify":
        shard_dir, bpt = heldout_dir(run, source)
        seq_len = int(run.data["seq_len"])

        def tokens() -> Iterator[dict[str, Any]]:
            batches = data.validation_batches(shard_dir, seq_len, batch_size)
            return itertools.islice(batches, max_batches)

        empty = f"{shard_dir}: no full held-out batch of {batch_size}×{seq_len} tokens"
        return tokens, bpt, f"{empty}; lower --batch-size"
    if source is not None:
        raise RunError("--data: an image run is scored on its own held-out images; leave it out")
    # tjx-data's image split, as the trainer's validation reads it (every batch full).
    try:
        images = data.prepare_image_run_data(
            run.run_data.source, image_size=run.nn_config.image_size
        )
    except data.DataError as err:
        raise RunError(f"--checkpoint: {str(run.run_dir / 'data.json')!r}: {err}") from None
    count = len(images.images["validation"]) if images.images else 0
    return (
        lambda: images.validation_batches(batch_size, max_batches),
        None,
        f"--batch-size: {batch_size} is more than the {count} held-out images; lower it",
    )


def _conversations(
    run: LoadedRun, source: str | None, batch_size: int, max_batches: int | None
) -> tuple[Callable[[], Iterator[dict[str, Any]]], None, str]:
    """A chat run's held-out conversations, packed as the trainer's validation packs them
    (tjx.data's `ChatRunData.validation_batches`: targets -100 off the assistant's tokens, so
    the loss is the trainer's, over the assistant's tokens only; no bytes per token)."""
    if source is not None:
        raise RunError(
            "--data: a chat run is scored on its own held-out conversations (the assistant's "
            "tokens); leave --data out"
        )
    chat: Any = run.run_data  # tjx.data's ChatRunData
    return (
        lambda: chat.validation_batches(batch_size, max_batches),
        None,
        f"{chat.val_dir}: no held-out conversation",
    )
