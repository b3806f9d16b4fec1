"""What the loop measures and writes at a boundary: held-out metrics (tjx-metrics'
``evaluate_heldout``, what the evaluator's ``--checkpoint`` runs too; ``evaluate_heldout_sources``
for a mixture) over this run's validation batches, placed on its mesh; and text samples
(tjx.nn.generate, KV cache inside)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import numpy as np
from flax import nnx

import trainer.step.data_setup as data_setup
from tjx import data, metrics, nn, parallel
from trainer.config.grpo_settings import is_grpo
from trainer.config.typed import Config
from trainer.step import dpo, grpo
from trainer.step.data_setup import Bundle
from trainer.step.state import Setup
from trainer.step.train_state import TrainState
from trainer.step.train_step import make_eval_step

_EMPTY = "validation data is empty: no batch of the configured size fits"


def evaluate(
    setup: Setup,
    params: chex.ArrayTree,
    bundle: Bundle,
    cfg: Config,
    reference: chex.ArrayTree | None = None,
) -> dict[str, float]:
    """tjx-metrics' held-out metrics (``loss``, ``perplexity``, ``bits_per_byte``, ``top{k}``, a
    classifier's ``accuracy`` ...) over the first ``train.eval_batches`` validation batches; a
    mixture's pooled and ``PER_SOURCE`` per source (``loss/web``, logged ``val_loss/web``); DPO's
    (`trainer.step.dpo.heldout`) against ``reference`` (the frozen params; None: the adapters off).
    """

    step, count, mesh = eval_step(setup, cfg), cfg.train.eval_batches, setup.mesh
    place = functools.partial(parallel.place_batch, mesh=mesh)
    model = setup.nn_config
    classes = None
    if cfg.task == "classify" and isinstance(model, nn.ViTConfig):  # (only ViT classifies)
        classes = model.num_classes
    how: dict[str, Any] = {"place": place, "empty": _EMPTY, "num_classes": classes}
    how["scores_every_token"] = cfg.objective.scores_every_token
    if getattr(bundle, "mixture", None) is not None:  # text only: a chat mixture is refused
        sets = bundle.mixture_validation(  # type: ignore[union-attr]  # (RunData's)
            cfg.eval.batch_size, count, **data_setup.shares(mesh)
        )
        return metrics.evaluate_heldout_sources(step, params, sets, **how)
    held, bpt = data_setup.val_batches(bundle, cfg, count, mesh), bundle.bytes_per_token
    if is_grpo(cfg.data):  # the held-out reward of greedy completions (trainer.step.grpo)
        return grpo.heldout_reward(cfg, setup.graphdef, setup.rest, params, bundle, held)
    if dpo.is_dpo(cfg.data):
        return dpo.heldout(step, params, reference, held, place)
    return metrics.evaluate_heldout(step, params, held, bytes_per_token=bpt, **how)


def eval_step(setup: Setup, cfg: Config) -> Callable[..., dict[str, jax.Array]]:
    """The jitted held-out step of ``setup``, built at its first evaluation and kept on it, so it
    dies with its run. (A module cache keyed by ``id(setup)`` once gave a study's next run, made at
    a freed setup's address, the old run's step.)"""
    if setup.eval_step is None:
        step = make_eval_step(setup.graphdef, setup.rest, setup.step_config, setup.split)
        setup.eval_step = jax.jit(step)
    return setup.eval_step


def evaluate_state(
    setup: Setup, state: TrainState, bundle: Bundle, cfg: Config
) -> dict[str, float]:
    """`evaluate` of a train state's params, float8 state included (`TrainState.model_tree`),
    against its DPO reference, if it holds one."""
    return evaluate(setup, state.model_tree(), bundle, cfg, state.reference)


def format_samples(texts: list[str], prompts: list[str]) -> str:
    """A sampling step's ``samples/step_N.txt``: each sample under a header naming its prompt."""
    return "\n".join(
        f"--- sample {i} (prompt {p!r}) ---\n{t}\n"
        for i, (p, t) in enumerate(zip(prompts, texts, strict=True))
    )


def sample(
    setup: Setup, params: chex.ArrayTree, bundle: Bundle, cfg: Config, step: int
) -> list[str]:
    """Each configured prompt and its continuation at ``step`` (seeded by run seed and step)."""

    s, seed = cfg.sampling, cfg.train.seed * 1_000_003 + step
    tokenizer: data.Tokenizer = bundle.tokenizer  # type: ignore[assignment]  # text has one
    tokens, lengths = data.encode_prompts(tokenizer, list(s.prompts))
    new = max(1, min(s.max_new_tokens, int(setup.nn_config.max_seq_len) - tokens.shape[1]))
    # ``params``: the state's `TrainState.model_tree` (delayed float8 scaling's state with it)
    model = nnx.merge(setup.graphdef, params, nn.split_fp8_meta(setup.rest)[0])
    knobs = {k: getattr(s, k) for k in ("temperature", "top_k", "top_p")}
    out = nn.generate(  # the model is a decoder (a text run samples)
        model,  # type: ignore[arg-type]
        tokens,
        max_new_tokens=new,
        seed=seed,
        prompt_lengths=lengths,
        **knobs,
    )
    ids = np.asarray(out)  # each row: the real prompt, then the new tokens (tjx.nn.generate layout)
    return [tokenizer.decode([int(t) for t in ids[i, : n + new]]) for i, n in enumerate(lengths)]
