"""What the trainer trains a model to do: tjx-nn's `Objective` of the model kind, with the run's
own policy on top, instead of a branch on the model kind in every module.

The objective (``lm``, ``mlm``, ``classify``, ``seq2seq``: what a step counts, BERT's [MASK] id,
which tokens are scored), the loss and the evaluation logits are tjx-nn's (``objective_of``,
``objective_loss``, ``objective_logits``, which the evaluator calls too), a classifier's metric
names tjx-metrics'. A task adds what is about the run: the config's loss settings and which of
the trainer's extras apply (text samples, the memory fit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from tjx import metrics, nn
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
    key = nn.eval_mask_key(cfg.train.seed)
    return nn.objective_logits(model, batch, key=key, mask_prob=cfg.train.mlm_probability)


@dataclass(frozen=True)
class Task:
    """A model kind's tjx-nn `Objective` and the trainer's extras for it.

    Attributes
    ----------
    objective : tjx.nn.Objective
        What the model is trained on; ``name``, ``unit`` and ``extra_vocab`` are its.
    """

    objective: nn.Objective

    @property
    def name(self) -> str:
        """``"lm"``, ``"mlm"``, ``"classify"`` or ``"seq2seq"``."""
        return self.objective.name

    @property
    def unit(self) -> str:
        """What a step consumes and its rate is counted in (``tokens_per_s``, ``images_per_s``)."""
        return self.objective.unit

    @property
    def extra_vocab(self) -> int:
        """Ids the model has beyond the tokenizer's (BERT's [MASK])."""
        return self.objective.extra_vocab

    @property
    def bits_per_byte(self) -> bool:
        """Bits/byte in the metrics: only where every token is scored."""
        return self.objective.scores_every_token

    @property
    def writes_samples(self) -> bool:
        """Text samples during training: sampling.py generates with a decoder-only model."""
        return self.objective.decodes and self.name == "lm"

    @property
    def fits_memory(self) -> bool:
        """The pre-flight memory fit: trainer/memory_fit.py models a decoder's step."""
        return self.name == "lm"

    def units_per_step(self, cfg: Config) -> int:
        """Tokens (or images) in one global batch; the encoder-decoder counts its scored
        (decoder) tokens."""
        return cfg.data.batch_size * self.objective.units_per_window(cfg.data.seq_len)

    def metrics(self, out: dict[str, float], cfg: Config) -> dict[str, float]:
        """The validation metrics under this task's names: tjx-metrics' own, a classifier's as
        accuracy and images (``classification_metrics``)."""
        if self.name == "classify":
            return metrics.classification_metrics(out, cfg.model.num_classes)
        return out


def for_config(cfg: Config) -> Task:
    """The task of a config's model kind."""
    return Task(nn.objective_of(nn.MODEL_KINDS[cfg.model.kind]))
