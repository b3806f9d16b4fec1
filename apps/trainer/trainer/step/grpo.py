"""GRPO in the trainer: ``data.format: prompts`` trains with group-relative policy optimisation
on rewards a program checks (tjx.data's `rewards`), never as SFT.

At each step ``s`` with ``s % μ == 0`` (``grpo.iterations``) the loop asks `Rollouts` for a new
rollout batch: the next ``data.batch_size / G`` prompts, ``G`` (``grpo.group_size``) completions
of each sampled with the current parameters (tjx.nn's `sample_groups`: KV-cache generation,
temperature, top-p, stop at end of turn) under the key ``fold_in(rollout key of train.seed,
s)``, scored on the host by the named rewards (Python functions; nothing from the data is run),
turned into group-normalised advantages, with the sampling policy's log-probabilities (when
``μ > 1``) and the reference's (when ``β > 0``: DPO's reference, trainer/step/dpo.py: the adapters
off with LoRA, else the frozen start in the train state). Each step then makes one update on that
batch (`loss_fn`: tjx.nn's `grpo_loss` inside the trainer's usual train step), so μ updates use
one rollout. A checkpoint at a multiple of μ resumes bit for bit: the keys are the step's, the
prompt loader's position is saved. A run resumed inside a rollout's μ steps (a signal's save)
samples a fresh rollout at its first step.

Logged with TRL's names: ``loss``, ``kl``, ``entropy``, ``clip_ratio/*`` (or the loss type's
own: tjx.nn's `GrpoOutput.metrics`), ``reward``, ``reward_std``, ``rewards/<name>/mean``,
``completions/mean_length``, and ``rollout_tokens_per_s``; held out (`heldout_reward`):
``val_reward`` of greedy completions of the validation prompts.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx import data, nn, parallel
from trainer.config.grpo_settings import GrpoRollout
from trainer.config.schema import ConfigError
from trainer.config.typed import Config, StepConfig
from trainer.step.data_setup import Bundle, HostBatch, TrainLoader
from trainer.step.state import Setup
from trainer.step.train_state import TrainState

Batch = dict[str, jax.Array]
#: Folded into the run's seed key before the step: the rollouts' keys are not dropout's.
ROLLOUT_STREAM = 0x6772706F


def loss_fn(
    graphdef: nnx.GraphDef[nnx.Module], rest: nnx.State, cfg: StepConfig
) -> Callable[[chex.ArrayTree, Batch, jax.Array], tuple[jax.Array, chex.ArrayTree]]:
    """``loss_fn(params, batch, step, reference=None) -> (loss, aux)``: tjx.nn's `grpo_loss` of
    a rollout batch (`Rollouts.batch`) with the config's loss type, ratio level and masks;
    ``aux`` holds the completion tokens (``num_tokens``) and TRL's metrics (``"grpo"``). Without
    ``old_logps`` in the batch (μ = 1) the sampling policy is the policy itself, its
    log-probabilities without gradient (TRL's ``detach``)."""
    settings, r = cfg.grpo, cfg.rollout

    def fn(
        params: chex.ArrayTree,
        batch: Batch,
        step: jax.Array,
        reference: chex.ArrayTree | None = None,
    ) -> tuple[jax.Array, chex.ArrayTree]:
        # No dropout: the rollout's log-probabilities are the deterministic model's. The
        # reference (DPO's, bound by the step) was scored once per rollout: batch["ref_logps"].
        del step, reference
        model = nnx.merge(graphdef, params, rest)
        # The entropies too (TRL's logged `entropy`; the entropy mask and bonus when set): from
        # the same logits, differentiated only through the bonus.
        scored = nn.grpo.token_logprobs_and_entropies
        logps, entropies = scored(model, batch, temperature=r.temperature)  # type: ignore[arg-type]
        old = batch.get("old_logps", jax.lax.stop_gradient(logps))
        out = nn.grpo.grpo_loss(
            logps,
            old,
            batch["advantages"],
            batch["mask"],
            config=settings,
            ref_logps=batch.get("ref_logps"),
            entropies=entropies,
            max_completion_length=r.max_new_tokens,
        )
        return out.loss, {"num_tokens": out.tokens, "grpo": out.metrics()}

    return fn


def batch_shapes(cfg: StepConfig) -> dict[str, tuple[tuple[int, ...], Any]]:
    """``{key: (shape, dtype)}`` of a rollout batch (`Rollouts.batch`): ``data.batch_size``
    completions of prompts padded to ``data.seq_len``, each sequence the prompt and
    ``grpo.max_new_tokens`` new tokens, less its last (``inputs`` and ``targets``)."""
    rows, width = cfg.data.batch_size, cfg.data.seq_len + cfg.rollout.max_new_tokens - 1
    shapes: dict[str, tuple[tuple[int, ...], Any]] = {
        "inputs": ((rows, width), jnp.int32),
        "targets": ((rows, width), jnp.int32),
        "mask": ((rows, width), jnp.float32),
        "advantages": ((rows,), jnp.float32),
    }
    if cfg.rollout.iterations > 1:  # π_old's log-probabilities, scored once per rollout
        shapes["old_logps"] = ((rows, width), jnp.float32)
    if cfg.grpo.beta > 0:  # the reference's
        shapes["ref_logps"] = ((rows, width), jnp.float32)
    return shapes


def prompt_data(bundle: Bundle) -> data.ChatRunData:
    """``bundle`` as the prompt data it is (``data.format: prompts``)."""
    assert isinstance(bundle, data.ChatRunData) and bundle.kind == "prompts"
    return bundle


def prompt_rows(bundle: Bundle, split: str) -> list[dict[str, Any]]:
    """The rows of a prompt split (``"train"`` or ``"validation"``), which ``row_ids`` index."""
    run = prompt_data(bundle)
    folder = run.train_dir if split == "train" else run.val_dir
    return data.read_prompt_rows(data.load_sequences(folder))


def check_rewards(cfg: Config, bundle: Bundle) -> None:
    """Every named reward gives a finite number on the first training prompt row (tjx.data's
    `check_rewards`), before anything is written; a `ConfigError` naming ``grpo.rewards``."""
    rows = prompt_rows(bundle, "train")
    try:
        data.check_rewards(cfg.rollout.rewards, rows[0] if rows else {})
    except data.RewardError as err:
        raise ConfigError(f"grpo.rewards: {err}") from None


def _logps_fn(
    graphdef: nnx.GraphDef[nnx.Module], rest: nnx.State, temperature: float
) -> Callable[[chex.ArrayTree, Batch, bool], jax.Array]:
    """Jitted ``fn(params, batch, adapters_off) -> [rows, seq]`` token log-probabilities."""

    def fn(params: chex.ArrayTree, batch: Batch, adapters_off: bool) -> jax.Array:
        model = nnx.merge(graphdef, params, rest)
        if adapters_off:  # LoRA's reference: the base model (DPO's, tjx.nn.adapters_off)
            model = nn.adapters_off(model)
        return nn.grpo.token_logprobs(model, batch, temperature=temperature)  # type: ignore[arg-type]

    return jax.jit(fn, static_argnums=(2,))


class Rollouts:
    """The rollout batches of a GRPO run (the module docstring): one every μ steps, kept for
    the steps between."""

    def __init__(
        self,
        cfg: Config,
        setup: Setup,
        loader: TrainLoader,
        bundle: Bundle,
    ) -> None:
        graphdef, rest = setup.graphdef, setup.rest
        self.cfg, self.r, self.graphdef, self.rest = cfg, cfg.rollout, graphdef, rest
        # The rollout batch is the step's: its rows split over the mesh as a loader's are.
        self.place = functools.partial(parallel.place_batch, mesh=setup.mesh)
        self.loader, self.bundle = loader, bundle
        self.rows = prompt_rows(bundle, "train")
        self.eos_id = prompt_data(bundle).encoder.end_of_turn_id
        self.key = jax.random.fold_in(jax.random.key(cfg.train.seed), ROLLOUT_STREAM)
        self.logps = _logps_fn(graphdef, rest, cfg.rollout.temperature)
        self.current: Batch | None = None
        self.stats: dict[str, float] = {}

    def batch(self, step: int, state: TrainState) -> tuple[Batch, dict[str, float]]:
        """Step ``step``'s batch and its rollout's metrics: a new rollout when ``step`` is a
        multiple of μ (or none is held: a resume inside a rollout's steps)."""
        if self.current is None or step % self.r.iterations == 0:
            self.current, self.stats = self._rollout(step, state)
        return self.current, self.stats

    def _rollout(self, step: int, state: TrainState) -> tuple[Batch, dict[str, float]]:
        r, params = self.r, state.param_tree()
        prompts: HostBatch = next(self.loader)
        started = time.perf_counter()
        model = nnx.merge(self.graphdef, params, self.rest)
        rollout = nn.grpo.sample_groups(
            model,  # type: ignore[arg-type]
            prompts["prompts"],
            prompts["lengths"],
            group=r.group_size,
            max_new_tokens=r.max_new_tokens,
            key=jax.random.fold_in(self.key, step),
            temperature=r.temperature,
            top_p=r.top_p,
            eos_id=self.eos_id,
            pad_id=0,
            mask_truncated=r.mask_truncated_completions,
        )
        took = time.perf_counter() - started
        examples = [self.rows[int(i)] for i in np.repeat(prompts["row_ids"], r.group_size)]
        texts = data.completion_texts(
            self.bundle.tokenizer, rollout.completions, rollout.lengths, self.eos_id
        )
        rewards, per_reward = score(r, texts, examples)
        settings = self.cfg.grpo
        batch: Batch = {
            **self.place(rollout.batch),
            "mask": self.place({"mask": rollout.mask})["mask"],
        }
        advantages = nn.grpo.group_advantages(
            jnp.asarray(rewards), r.group_size, scale=settings.scale_rewards
        )
        batch["advantages"] = self.place({"a": advantages})["a"]
        if r.iterations > 1:  # π_old: the policy that sampled, for the μ steps that follow
            batch["old_logps"] = self.logps(params, batch, False)
        if settings.beta > 0:  # DPO's reference: the frozen start, or the adapters off
            frozen = state.reference
            batch["ref_logps"] = self.logps(
                params if frozen is None else frozen, batch, frozen is None
            )
        groups = rewards.reshape(-1, r.group_size)
        new_tokens = float(rollout.lengths.sum())
        stats = {
            "reward": float(rewards.mean()),
            "reward_std": float(groups.std(axis=1, ddof=1).mean()),  # TRL's: the groups' std
            "completions/mean_length": float(rollout.lengths.mean()),
            "rollout_tokens_per_s": new_tokens / max(took, 1e-9),
        }
        stats |= {f"rewards/{k}/mean": float(v.mean()) for k, v in per_reward.items()}
        return batch, stats


def score(
    r: GrpoRollout, texts: Sequence[str], examples: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The weighted reward of each completion and each named reward's own values."""
    return data.score_each(r.rewards, texts, examples, r.reward_weights)


def heldout_reward(
    cfg: Config,
    graphdef: nnx.GraphDef[nnx.Module],
    rest: nnx.State,
    params: chex.ArrayTree,
    bundle: Bundle,
    batches: Iterable[HostBatch],
) -> dict[str, float]:
    """The mean reward of greedy completions of held-out prompt ``batches`` (padding rows left
    out): ``reward``, each reward's ``rewards/<name>`` and ``prompts``, their count. The success
    rate of the policy, without the rollouts' sampling noise."""
    r = cfg.rollout
    rows = prompt_rows(bundle, "validation")
    eos_id = prompt_data(bundle).encoder.end_of_turn_id
    model = nnx.merge(graphdef, params, rest)
    texts: list[str] = []
    examples: list[Mapping[str, Any]] = []
    for batch in batches:
        real = np.asarray(batch["lengths"]) > 0
        if not real.any():
            continue
        prompts, lengths = np.asarray(batch["prompts"])[real], np.asarray(batch["lengths"])[real]
        done = nn.grpo.greedy_completions(
            model,  # type: ignore[arg-type]
            prompts,
            lengths,
            max_new_tokens=r.max_new_tokens,
            eos_id=eos_id,
            pad_id=0,
        )
        texts += data.completion_texts(bundle.tokenizer, done.completions, done.lengths, eos_id)
        examples += [rows[int(i)] for i in np.asarray(batch["row_ids"])[real]]
    if not texts:
        raise ValueError("validation data is empty: no held-out prompt fits data.seq_len")
    total, each = score(r, texts, examples)
    means = {"reward": float(total.mean()), "prompts": float(len(texts))}
    return means | {f"rewards/{k}": float(v.mean()) for k, v in each.items()}
