"""What the trainer trains a model to do: one small object per task, instead of a branch on the
model kind in every module.

``lm`` (GPT-2, LLaMA: next-token prediction on packed text), ``mlm`` (BERT: masked tokens),
``classify`` (ViT: digits images) and ``seq2seq`` (the encoder-decoder: a window's second half
from its first). The loss and the evaluation logits are tjx-nn's (``objective_loss``,
``objective_logits``, which the evaluator calls too); a task holds what is about the run: what a
step consumes (tokens or images), and which extras apply (text samples, bits per byte, the memory
fit, the [MASK] id). The model kind → task map is `Config.task`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from trainer.config import Config

Batch = dict[str, jax.Array]
#: The loss function's auxiliary sums: summed loss, scored units, top-1 correct (int32 scalars).
Aux = dict[str, jax.Array]


def head_settings(cfg: Config) -> dict[str, Any]:
    """The vocabulary head's loss settings (tjx.nn's ``chunked``, ``chunk_size``, ``z_loss``)."""
    t = cfg.train
    return {"chunked": t.chunked_ce, "chunk_size": t.ce_chunk_size, "z_loss": t.z_loss}


def loss(
    model: Any, batch: Batch, key: jax.Array, cfg: Config, *, deterministic: bool
) -> tuple[jax.Array, Aux]:
    """(mean loss, aux sums) of one batch: tjx.nn's ``objective_loss`` with the config's settings;
    ``key`` draws what the objective itself randomises (BERT's masking)."""
    from tjx import nn

    out = nn.objective_loss(
        model,
        batch,
        key=key,
        deterministic=deterministic,
        mask_prob=cfg.train.mlm_probability,
        **head_settings(cfg),
    )
    return out.loss, {k: getattr(out, k) for k in ("sum_loss", "num_tokens", "num_correct")}


def eval_logits(model: Any, batch: Batch, cfg: Config) -> tuple[jax.Array, jax.Array]:
    """(float32 logits, labels with -100 where unscored) for the validation metrics; a masked LM
    masks with tjx.nn's fixed ``eval_mask_key`` of the run's seed, as the evaluator does."""
    from tjx import nn

    key = nn.eval_mask_key(cfg.train.seed)
    return nn.objective_logits(model, batch, key=key, mask_prob=cfg.train.mlm_probability)


@dataclass(frozen=True)
class Task:
    """The decoder LM task (the base): the others override what differs.

    Attributes
    ----------
    name : str
        ``"lm"``, ``"mlm"``, ``"classify"`` or ``"seq2seq"``.
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
    decoder continues it (tjx-nn's ``EncoderDecoder.continue_halves``). Only the continued half
    is scored.
    """

    name: str = "seq2seq"
    writes_samples: bool = False  # sampling.py generates with a decoder-only model
    fits_memory: bool = False

    def units_per_step(self, cfg: Config) -> int:
        """The scored (decoder) tokens of one global batch."""
        return cfg.data.batch_size * (cfg.data.seq_len - cfg.data.seq_len // 2 + 1)


TASKS: dict[str, Task] = {
    "lm": Task(),
    "mlm": MaskedLM(),
    "classify": Classify(),
    "seq2seq": Seq2Seq(),
}


def for_config(cfg: Config) -> Task:
    """The task of a config's model kind."""
    return TASKS[cfg.task]
