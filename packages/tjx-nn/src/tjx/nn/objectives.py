"""What each model is trained and evaluated on, from a batch: one definition for a trainer and an
evaluator, so the two cannot score a model differently.

=================  ==================  ===========================================  ===============
model              objective           batch keys                                   scored labels
=================  ==================  ===========================================  ===============
``DecoderLM``      next token          ``inputs``, ``targets`` (``positions``,      ``targets``
(GPT-2, LLaMA)                         ``segment_ids`` optional)                    not -100
``BERT``           masked tokens       ``inputs``, ``segment_ids`` (``positions``)  the masked ones
``ViT``            classification      ``images``, ``labels``                       every image
``EncoderDecoder`` second half of      ``inputs``, ``targets`` (``segment_ids``)    ``targets`` of
                   each window                                                      the second half
=================  ==================  ===========================================  ===============

Supervised fine-tuning is the ``lm`` objective on chat batches (``tjx.data.ChatLoader``): every
target the assistant did not write is ``-100``, so the loss is the mean over the assistant's
tokens, per token over the whole batch (``losses.masked_mean``: why per token, not per sequence).
Preference optimisation (DPO, IPO) is ``tjx.nn.preference_loss`` on preference batches.

Decoders and the encoder-decoder end in a vocabulary head, so their loss runs on final hidden
states (``head_cross_entropy``: chunked or plain, optional z-loss); BERT's MLM head and ViT's
classifier are scored on their float32 logits (``logits_cross_entropy``, no z-loss).

What an app needs to know about an objective without running it (what a step counts, which
labels are scored, whether bits per byte apply, whether the model writes text) is its `Objective`
(``objective_of(config or model)``), so no app branches on the model's class for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
from flax import nnx

from tjx.kernels import CrossEntropyOutput
from tjx.nn.bert import BERT
from tjx.nn.configs import TransformerConfig
from tjx.nn.decoder import DecoderLM, head_cross_entropy
from tjx.nn.encdec import EncoderDecoder, window_halves
from tjx.nn.encoder_configs import BertConfig, EncoderDecoderConfig, ViTConfig
from tjx.nn.losses import ObjectiveLoss, logits_cross_entropy
from tjx.nn.moe.layer import MoEStats, router_penalty
from tjx.nn.mtp import MTPLoss, mtp_loss
from tjx.nn.vit import ViT

Array = jax.Array
Batch = dict[str, Array]

_MODELS = (DecoderLM, BERT, ViT, EncoderDecoder)


@dataclass(frozen=True)
class Objective:
    """What a model family is trained on, as facts (see the module's table for the batches).

    Attributes
    ----------
    name : str
        ``"lm"`` (GPT-2, LLaMA: the next token), ``"mlm"`` (BERT: masked tokens),
        ``"classify"`` (ViT: one label per image) or ``"seq2seq"`` (the encoder-decoder: the
        second half of each window from its first).
    unit : str
        What a batch row is counted in: ``"tokens"`` or ``"images"``.
    scores : str
        The scored labels in words (``"masked tokens"``), for reports.
    extra_vocab : int
        Ids the model needs beyond its tokenizer's: BERT's [MASK] is the id after them.
    scores_every_token : bool
        Every token of the label positions is scored (not BERT's masked share, and no image
        task), so bits per token over a corpus' bytes per token is its bits per byte.
    decodes : bool
        The model writes text: ``generate`` for a decoder, ``generate_seq2seq`` for the
        encoder-decoder.
    """

    name: str
    unit: str
    scores: str
    extra_vocab: int = 0
    scores_every_token: bool = True
    decodes: bool = True

    def units_per_window(self, seq_len: int) -> int:
        """The label positions ``objective_logits`` returns per batch row of ``seq_len`` tokens.

        A decoder's and BERT's are every token (BERT reads them all and scores its masked ones,
        the rest labelled -100), the encoder-decoder's the continued half
        (``seq_len - seq_len // 2 + 1``, as ``EncoderDecoder.continue_halves`` cuts it), and a
        classifier's one per image. A throughput counts these.

        Parameters
        ----------
        seq_len : int
            Tokens per window (ignored for images).

        Returns
        -------
        int
            Units (tokens or images) per batch row.

        Raises
        ------
        ValueError
            ``seq_len`` below the objective's shortest window (2 for seq2seq, else 1).
        """
        if self.unit == "images":
            return 1
        shortest = 2 if self.name == "seq2seq" else 1
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < shortest:
            raise ValueError(
                f"seq_len: the {self.name} objective needs an int >= {shortest}; got {seq_len!r}"
            )
        return window_halves(seq_len)[1] if self.name == "seq2seq" else seq_len


#: Every objective by name.
OBJECTIVES: dict[str, Objective] = {
    "lm": Objective("lm", "tokens", "tokens"),
    "mlm": Objective(
        "mlm", "tokens", "masked tokens", extra_vocab=1, scores_every_token=False, decodes=False
    ),
    "classify": Objective("classify", "images", "images", scores_every_token=False, decodes=False),
    "seq2seq": Objective("seq2seq", "tokens", "tokens continuing the first half of their window"),
}

# The base config (plain decoders, GPT-2, LLaMA) last: every config class derives from it.
_FAMILIES: tuple[tuple[tuple[type, ...], str], ...] = (
    ((BertConfig, BERT), "mlm"),
    ((ViTConfig, ViT), "classify"),
    ((EncoderDecoderConfig, EncoderDecoder), "seq2seq"),
    ((TransformerConfig, DecoderLM), "lm"),
)


def objective_of(config_or_model: Any) -> Objective:
    """The `Objective` of a model, of its config, or of a config class.

    Parameters
    ----------
    config_or_model : TransformerConfig, type or nnx.Module
        A config (``GPT2Config``, ``BertConfig``, ...), a config class (e.g. a value of
        ``MODEL_KINDS``) or a model ``build_model`` makes.

    Returns
    -------
    Objective
        One of ``OBJECTIVES``.

    Raises
    ------
    ValueError
        Anything else (the message names what is accepted).
    """
    probe = config_or_model if isinstance(config_or_model, type) else type(config_or_model)
    for types, name in _FAMILIES:
        if issubclass(probe, types):
            return OBJECTIVES[name]
    allowed = ", ".join(m.__name__ for m in _MODELS)
    raise ValueError(f"no objective for a {probe.__name__}; give a model ({allowed}) or its config")


def eval_mask_key(seed: int) -> Array:
    """The fixed masking key of a masked LM's evaluation, for a run seeded ``seed``.

    Every evaluation masks the same positions, so scores of two steps compare; the trainer draws
    its training masks from ``jax.random.key(seed)`` folded with the step, and ``seed + 1`` keeps
    this key off that stream.

    Parameters
    ----------
    seed : int
        The run's seed.

    Returns
    -------
    Array
        A typed PRNG key.
    """
    return jax.random.key(seed + 1)


def token_loss(
    model: Any,
    hidden: Array,
    labels: Array,
    *,
    chunked: bool = True,
    chunk_size: int | None = None,
    z_loss: float = 0.0,
) -> CrossEntropyOutput:
    """Cross-entropy of a decoder's or encoder-decoder's vocabulary head on its final hidden
    states (``head_cross_entropy`` of the model's ``embed``/``head``).

    Parameters
    ----------
    model : DecoderLM or EncoderDecoder
        The model whose head scores ``hidden``.
    hidden : Array
        ``[..., d_model]`` from ``return_hidden=True``.
    labels : Array
        int ``[...]``; ``-100`` is unscored.
    chunked, chunk_size, z_loss
        As for ``head_cross_entropy``.

    Returns
    -------
    CrossEntropyOutput
        ``loss``, ``sum_loss``, ``num_tokens``, ``num_correct``.
    """
    return head_cross_entropy(
        model.embed,
        model.head,
        hidden,
        labels,
        model.config.precision,
        chunked=chunked,
        chunk_size=chunk_size,
        z_loss=z_loss,
        softcap=model.config.final_logit_softcap,
        implementation=getattr(model.config, "cross_entropy_impl", "auto"),
    )


def objective_loss(
    model: Any,
    batch: Batch,
    *,
    key: Array | None = None,
    deterministic: bool = True,
    chunked: bool = True,
    chunk_size: int | None = None,
    z_loss: float = 0.0,
    mask_prob: float = 0.15,
) -> ObjectiveLoss:
    """The training loss of ``model``'s objective on ``batch`` (see the module's table).

    Parameters
    ----------
    model : DecoderLM, BERT, ViT or EncoderDecoder
        The model (its class picks the objective).
    batch : dict
        The objective's batch keys.
    key : Array, optional
        BERT's masking key (required there; a new one per training step, e.g.
        ``jax.random.fold_in(key, step)``); the other models ignore it. Dropout keys come from
        the model's own stream.
    deterministic : bool
        Disable dropout.
    chunked, chunk_size, z_loss
        The vocabulary head's loss (decoders, encoder-decoder), as for ``head_cross_entropy``.
    mask_prob : float
        BERT's share of real tokens masked.

    Returns
    -------
    ObjectiveLoss
        ``loss`` (mean over scored labels, plus an MoE model's router losses and
        ``mtp.loss_weight`` times a multi-token-prediction model's `tjx.nn.mtp.mtp_loss`),
        ``sum_loss``, ``num_tokens`` (scored labels, images for ViT), ``num_correct`` (top-1),
        ``moe`` (the router statistics; None without MoE layers) and ``mtp`` (None without
        ``mtp.depths``).

    Raises
    ------
    ValueError
        A model of another class, or BERT without ``key``.
    """
    if isinstance(model, BERT | ViT):
        logits, labels = _scored_logits(model, batch, key, mask_prob, deterministic)
        return ObjectiveLoss(*logits_cross_entropy(logits, labels))
    stats: MoEStats | None = None
    mtp: MTPLoss | None = None

    def score(hidden: Array, labels: Array) -> CrossEntropyOutput:
        return token_loss(
            model, hidden, labels, chunked=chunked, chunk_size=chunk_size, z_loss=z_loss
        )

    if isinstance(model, DecoderLM):
        prenorm, stats = model.trunk(
            batch["inputs"],
            positions=batch.get("positions"),
            segment_ids=batch.get("segment_ids"),
            deterministic=deterministic,
        )
        hidden, labels = model.normed(prenorm), batch["targets"]
        if model.mtp is not None:  # its own dropout key: the stack's draws stay as they were
            rng = model.dropout_key(deterministic)
            mtp = mtp_loss(model, prenorm, batch, score, deterministic=deterministic, rng=rng)
    else:
        hidden, labels = _lm_outputs(model, batch, deterministic, hidden=True)
    out = score(hidden, labels)
    loss = out.loss
    if stats is not None:
        loss = loss + router_penalty(stats, model.config).astype(out.loss.dtype)
    if mtp is not None:
        loss = loss + model.config.mtp.loss_weight * mtp.loss.astype(out.loss.dtype)
    return ObjectiveLoss(loss, out.sum_loss, out.num_tokens, out.num_correct, stats, mtp)


def objective_logits(
    model: Any, batch: Batch, *, key: Array | None = None, mask_prob: float = 0.15
) -> tuple[Array, Array]:
    """Float32 logits and labels (``-100``: unscored) of ``model``'s objective on ``batch``, for
    evaluation metrics (e.g. ``tjx.metrics.lm_stats``); dropout off.

    Parameters
    ----------
    model, batch
        As `objective_loss`'s.
    key : Array, optional
        BERT's masking key (required there): a fixed one, ``eval_mask_key(seed)``, masks the
        same positions at every evaluation. Other models ignore it.
    mask_prob : float
        BERT's share of real tokens masked.

    Returns
    -------
    (Array, Array)
        ``[..., vocab or classes]`` logits and int labels ``[...]``.

    Raises
    ------
    ValueError
        A model of another class, or BERT without ``key``.
    """
    if isinstance(model, BERT | ViT):
        return _scored_logits(model, batch, key, mask_prob, True)
    return _lm_outputs(model, batch, True, hidden=False)


def objective_logits_fn(
    graphdef: Any, rest: Any, *, key: Array | None = None, mask_prob: float = 0.15
) -> Callable[[Any, Batch], tuple[Array, Array]]:
    """``fn(params, batch) -> (logits, labels)``: `objective_logits` of the model that
    ``graphdef``, ``params`` and ``rest`` make, a pure function of the parameters for ``jax.jit``.

    A trainer and an evaluator build their held-out step from this one function (e.g. with
    ``tjx.metrics.heldout_step``), so the two score a checkpoint the same way.

    Parameters
    ----------
    graphdef : nnx.GraphDef
        The model's graph (``nnx.split(model, nnx.Param, ...)``'s first part).
    rest : nnx.State
        Its non-parameter state (RNG streams; evaluation draws nothing from them).
    key : Array, optional
        BERT's fixed masking key, e.g. ``eval_mask_key(seed)``; other models ignore it.
    mask_prob : float
        BERT's share of real tokens masked.

    Returns
    -------
    Callable
        ``fn(params, batch)`` with ``params`` the pure parameter dict (or state).
    """

    def fn(params: Any, batch: Batch) -> tuple[Array, Array]:
        model = nnx.merge(graphdef, params, rest)
        return objective_logits(model, batch, key=key, mask_prob=mask_prob)

    return fn


def _scored_logits(
    model: Any, batch: Batch, key: Array | None, mask_prob: float, deterministic: bool
) -> tuple[Array, Array]:
    """BERT's masked-token logits or ViT's class logits, with their labels."""
    if isinstance(model, ViT):
        return model(batch["images"], deterministic=deterministic), batch["labels"]
    if key is None:
        raise ValueError("BERT's masked-LM objective needs key= (evaluation: eval_mask_key(seed))")
    logits, labels = model.masked_lm(
        batch["inputs"],
        key,
        segment_ids=batch["segment_ids"],
        positions=batch.get("positions"),
        mask_prob=mask_prob,
        deterministic=deterministic,
    )
    return logits, labels


def _lm_outputs(
    model: Any, batch: Batch, deterministic: bool, *, hidden: bool
) -> tuple[Array, Array]:
    """(final hidden states or float32 logits, labels) of a decoder or the encoder-decoder."""
    if isinstance(model, EncoderDecoder):
        out, labels = model.continue_halves(
            batch["inputs"],
            batch["targets"],
            segment_ids=batch.get("segment_ids"),
            deterministic=deterministic,
            return_hidden=hidden,
        )
        return out, labels
    if not isinstance(model, DecoderLM):
        allowed = ", ".join(m.__name__ for m in _MODELS)
        raise ValueError(f"no objective for a {type(model).__name__}; models: {allowed}")
    return (
        model.on_batch(batch, deterministic=deterministic, return_hidden=hidden),
        batch["targets"],
    )
