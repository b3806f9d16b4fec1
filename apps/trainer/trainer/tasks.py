"""What the trainer trains a model to do: one small object per task, instead of a branch on the
model kind in every module.

``lm`` (GPT-2, LLaMA: next-token prediction on packed text), ``mlm`` (BERT: masked tokens),
``classify`` (ViT: digits images) and ``seq2seq`` (the encoder-decoder: a window's second half
from its first). Each says how its loss and its evaluation logits are computed
from a batch, what a step consumes (tokens or images), and which extras apply (text samples,
bits per byte, the memory fit, the [MASK] id). The model kind → task map is `Config.task`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from trainer.config import Config

Batch = dict[str, jax.Array]
#: The loss function's auxiliary sums: summed loss, scored units, top-1 correct (int32 scalars).
Aux = dict[str, jax.Array]


def token_loss(model: Any, hidden: jax.Array, targets: jax.Array, cfg: Config) -> dict[str, Any]:
    """Mean loss (z-loss included) and exact sums, chunked (no [b,s,V] logits) or plain."""
    from tjx.kernels import chunked_cross_entropy

    if cfg.train.chunked_ce:
        out = chunked_cross_entropy(
            hidden,
            model.unembedding(),
            targets,
            chunk_size=cfg.train.ce_chunk_size,
            z_loss=cfg.train.z_loss,
        )
        return {
            "loss": out.loss,
            "sum_loss": out.sum_loss,
            "num_tokens": out.num_tokens,
            "num_correct": out.num_correct,
        }
    # Plain path: the model's own float32 logits, tjx-nn's loss and tjx-metrics' sums.
    from tjx import nn

    logits = model.logits(hidden)
    _, sums = scored_sums(logits, targets)
    return {"loss": nn.cross_entropy_loss(logits, targets, z_loss=cfg.train.z_loss), **sums}


def scored_sums(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, Aux]:
    """(mean loss, aux sums) of float32 logits against labels (-100: unscored), from tjx-metrics'
    ``lm_stats``: the summed loss, the scored labels and the top-1 correct among them."""
    from tjx import metrics

    stats = metrics.lm_stats(logits, labels, top_k=(1,))
    aux = {
        "sum_loss": stats["sum_loss"],
        "num_tokens": stats["num_tokens"],
        "num_correct": stats["correct_top1"],
    }
    return stats["sum_loss"] / jnp.maximum(stats["num_tokens"], 1), aux


@dataclass(frozen=True)
class Task:
    """The decoder LM task (the base): the others override what differs.

    Attributes
    ----------
    name : str
        ``"lm"``, ``"mlm"`` or ``"classify"``.
    unit : str
        What a step consumes and its rate is counted in (``tokens_per_s``, ``images_per_s``).
    extra_vocab : int
        Ids the model has beyond the tokenizer's (BERT's [MASK]).
    writes_samples, bits_per_byte, fits_memory
        Text samples during training; bits/byte in the validation metrics (every token scored);
        the pre-flight memory fit (trainer/memory_fit.py models a decoder's step).
    """

    name: str = "lm"
    unit: str = "tokens"
    extra_vocab: int = 0
    writes_samples: bool = True
    bits_per_byte: bool = True
    fits_memory: bool = True

    def units_per_step(self, cfg: Config) -> int:
        """Tokens (or images) in one global batch."""
        return cfg.data.batch_size * cfg.data.seq_len

    def loss(
        self, model: Any, batch: Batch, key: jax.Array, cfg: Config, *, deterministic: bool
    ) -> tuple[jax.Array, Aux]:
        """(mean loss, aux sums) of one batch; ``key`` draws what the task itself randomises."""
        del key  # dropout keys come from the model's own RNG streams (trainer.step: tjx.nn.reseed)
        hidden = model(
            batch["inputs"],
            positions=batch.get("positions"),
            segment_ids=batch.get("segment_ids"),
            deterministic=deterministic,
            return_hidden=True,
        )
        out = token_loss(model, hidden, batch["targets"], cfg)
        return out.pop("loss"), out

    def eval_logits(self, model: Any, batch: Batch, cfg: Config) -> tuple[jax.Array, jax.Array]:
        """(float32 logits, labels with -100 where unscored) for the validation metrics."""
        seg, pos = batch.get("segment_ids"), batch.get("positions")
        return model(batch["inputs"], positions=pos, segment_ids=seg), batch["targets"]

    def metrics(self, out: dict[str, float], cfg: Config) -> dict[str, float]:
        """The validation metrics under this task's names (the LM's are tjx-metrics' own)."""
        del cfg
        return out


@dataclass(frozen=True)
class MaskedLM(Task):
    """BERT: ``train.mlm_probability`` of the real tokens masked and predicted."""

    name: str = "mlm"
    extra_vocab: int = 1
    writes_samples: bool = False
    bits_per_byte: bool = False  # only the masked tokens are scored
    fits_memory: bool = False

    def loss(
        self, model: Any, batch: Batch, key: jax.Array, cfg: Config, *, deterministic: bool
    ) -> tuple[jax.Array, Aux]:
        return scored_sums(*self._masked(model, batch, key, cfg, deterministic=deterministic))

    def eval_logits(self, model: Any, batch: Batch, cfg: Config) -> tuple[jax.Array, jax.Array]:
        # A fixed masking key: every evaluation masks the same positions (and the evaluator,
        # apps/eval, uses the same key).
        key = jax.random.key(cfg.train.seed + 1)
        return self._masked(model, batch, key, cfg, deterministic=True)

    @staticmethod
    def _masked(
        model: Any, batch: Batch, key: jax.Array, cfg: Config, *, deterministic: bool
    ) -> tuple[jax.Array, jax.Array]:
        logits, labels = model.masked_lm(
            batch["inputs"],
            key,
            segment_ids=batch["segment_ids"],
            positions=batch.get("positions"),
            mask_prob=cfg.train.mlm_probability,
            deterministic=deterministic,
        )
        return logits, labels


@dataclass(frozen=True)
class Classify(Task):
    """ViT: one label per image."""

    name: str = "classify"
    unit: str = "images"
    writes_samples: bool = False
    bits_per_byte: bool = False
    fits_memory: bool = False

    def units_per_step(self, cfg: Config) -> int:
        return cfg.data.batch_size

    def loss(
        self, model: Any, batch: Batch, key: jax.Array, cfg: Config, *, deterministic: bool
    ) -> tuple[jax.Array, Aux]:
        del key, cfg
        return scored_sums(*self._logits(model, batch, deterministic=deterministic))

    def eval_logits(self, model: Any, batch: Batch, cfg: Config) -> tuple[jax.Array, jax.Array]:
        return self._logits(model, batch, deterministic=True)

    @staticmethod
    def _logits(model: Any, batch: Batch, *, deterministic: bool) -> tuple[jax.Array, jax.Array]:
        logits = model(batch["images"], deterministic=deterministic).astype(jnp.float32)
        return logits, batch["labels"]

    def metrics(self, out: dict[str, float], cfg: Config) -> dict[str, float]:
        """Accuracy and images, not perplexity and tokens; top-k only below the number of
        classes (top-10 of 10 classes is always 1)."""
        named = {"loss": out["loss"], "accuracy": out["top1"], "num_images": out["num_tokens"]}
        for key, value in out.items():
            if key.startswith("top") and 1 < int(key[3:]) < cfg.model.num_classes:
                named[key] = value
        return named


@dataclass(frozen=True)
class Seq2Seq(Task):
    """Encoder-decoder on plain text: the encoder reads the first half of each window, the
    decoder continues it (tjx-nn's ``EncoderDecoder.continue_halves``, which the evaluator calls
    too). Only the continued half is scored.
    """

    name: str = "seq2seq"
    writes_samples: bool = False  # sampling.py generates with a decoder-only model
    fits_memory: bool = False

    def units_per_step(self, cfg: Config) -> int:
        """The scored (decoder) tokens of one global batch."""
        return cfg.data.batch_size * (cfg.data.seq_len - cfg.data.seq_len // 2 + 1)

    def loss(
        self, model: Any, batch: Batch, key: jax.Array, cfg: Config, *, deterministic: bool
    ) -> tuple[jax.Array, Aux]:
        del key  # dropout keys come from the model's own RNG streams
        hidden, labels = model.continue_halves(
            batch["inputs"],
            batch["targets"],
            segment_ids=batch["segment_ids"],
            deterministic=deterministic,
            return_hidden=True,
        )
        out = token_loss(model, hidden, labels, cfg)
        return out.pop("loss"), out

    def eval_logits(self, model: Any, batch: Batch, cfg: Config) -> tuple[jax.Array, jax.Array]:
        return model.continue_halves(  # type: ignore[no-any-return]
            batch["inputs"], batch["targets"], segment_ids=batch["segment_ids"]
        )


TASKS: dict[str, Task] = {
    "lm": Task(),
    "mlm": MaskedLM(),
    "classify": Classify(),
    "seq2seq": Seq2Seq(),
}


def for_config(cfg: Config) -> Task:
    """The task of a config's model kind."""
    return TASKS[cfg.task]
