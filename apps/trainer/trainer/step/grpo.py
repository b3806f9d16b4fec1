"""GRPO in the trainer: ``data.format: prompts`` trains with group-relative policy optimisation
on rewards a program checks (tjx.data's `rewards`), never as SFT.

At each step ``s`` with ``s % μ == 0`` (``grpo.iterations``) the loop asks `Rollouts` for a new
rollout batch: the next ``data.batch_size / G`` prompts, ``G`` (``grpo.group_size``) completions of
each sampled with the current parameters (tjx.nn's `sample_groups`: KV-cache generation,
temperature, top-p, stop at end of turn) under the key ``fold_in(rollout key of train.seed, s)``,
scored on the host by the named rewards (Python functions; nothing from the data is run), turned
into group-normalised advantages, with the sampling policy's log-probabilities (when ``μ > 1`` or
overlapped: ``old_logps``, from the sampler's decode or a second forward pass, ``grpo.old_logps``)
and the reference's (when ``β > 0``: DPO's reference, trainer/step/dpo.py: the adapters off with
LoRA, else the frozen start in the train state). Each step then makes one update on that batch
(`loss_fn`: tjx.nn's `grpo_loss` inside the trainer's usual train step), so μ updates use one
rollout; with ``optimizer.accumulation_steps: k`` that update is k micro-batches, each scored with
the whole batch's counts (`micro_totals`): their sum is the whole batch's loss and gradient for
every loss type. A checkpoint at a multiple of μ resumes bit for bit: the keys are the step's, the
prompt loader's position is saved. A run resumed inside a rollout's μ steps (a signal's save)
samples a fresh rollout at its first step. With ``grpo.overlap: 1`` a rollout is sampled with the
weights of the step before, on devices of its own, while that step's update runs (`Rollouts`).

Logged with TRL's names: ``loss``, ``kl``, ``entropy``, ``clip_ratio/*`` (or the loss type's
own: tjx.nn's `GrpoOutput.metrics`), ``reward``, ``reward_std``, ``rewards/<name>/mean``,
``completions/mean_length``, and ``rollout_tokens_per_s``; held out (`heldout_reward`):
``val_reward`` of greedy completions of the validation prompts.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

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
    """``loss_fn(params, batch, step, reference=None, totals=None) -> (loss, aux)``: tjx.nn's
    `grpo_loss` of a rollout batch (`Rollouts.batch`) with the config's loss type, ratio level
    and masks; ``aux`` holds the completion tokens (``num_tokens``) and TRL's metrics
    (``"grpo"``). Without ``old_logps`` in the batch (μ = 1) the sampling policy is the policy
    itself, its log-probabilities without gradient (TRL's ``detach``). ``totals``
    (`micro_totals`): ``batch`` is a micro-batch of a batch with these counts, and the loss and
    metrics are its shares of the batch's."""
    settings, r = cfg.grpo, cfg.rollout

    def fn(
        params: chex.ArrayTree,
        batch: Batch,
        step: jax.Array,
        reference: chex.ArrayTree | None = None,
        totals: nn.grpo.GrpoTotals | None = None,
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
            totals=totals,
        )
        return out.loss, {"num_tokens": out.tokens, "grpo": out.metrics()}

    return fn


def micro_totals(batch: Batch) -> nn.grpo.GrpoTotals:
    """The whole rollout batch's counts (completions, scored tokens), taken once before the
    update splits it into micro-batches (``optimizer.accumulation_steps``): each micro-batch's
    loss divides by them, not by its own (`loss_fn`)."""
    return nn.grpo.batch_totals(batch["mask"])


def micro_aux(stacked: chex.ArrayTree) -> chex.ArrayTree:
    """The whole batch's aux from its micro-batches' (stacked on a leading axis): the tokens
    summed, TRL's metrics merged (tjx.nn's `merge_micro_metrics`)."""
    return {
        "num_tokens": jnp.sum(stacked["num_tokens"], axis=0),
        "grpo": nn.grpo.merge_micro_metrics(stacked["grpo"]),
    }


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
    if cfg.rollout.iterations > 1 or cfg.rollout.overlap:  # π_old's, scored once per rollout
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


def sampler_devices(count: int) -> list[jax.Device]:
    """The devices an overlapped run samples on (``grpo.sampler_devices``): the last ``count``
    of this machine's, the ones trainer.step.state's `trainer_devices` leaves out of the
    trainer's mesh."""
    return list(jax.devices()[len(jax.devices()) - count :])


class Rollouts:
    """The rollout batches of a GRPO run (the module docstring): one every μ steps, kept for
    the steps between.

    With ``grpo.overlap: 1`` the rollout of a step ``s`` (a multiple of μ) is sampled with the
    weights of step ``s - 1``, on devices of its own (``grpo.sampler_devices``, the last ones;
    the trainer's mesh is the rest; the rollout's rows split over them, the policy replicated),
    while step ``s - 1``'s update runs. Once a step that precedes a rollout, `batch` copies the
    policy's weights to the sampler (``device_put`` to its replicated sharding, dispatched
    before the update donates them); the loop dispatches
    the update, which returns at once (JAX's dispatch is asynchronous), and calls `ahead`,
    which samples on the sampler's devices: the host waits for each generated token there (the
    decode loop reads it) and scores the completions, all while the trainer's devices run the
    update. The sampling policy's log-probabilities (``old_logps``, what the importance ratio
    divides by: the one-step lag corrected as μ > 1 corrects its own) are by default the ones
    the decode computed from the logits it sampled each token from (``grpo.old_logps: auto``;
    ``recompute`` scores the rollout again in a forward pass on the sampler). The host waits
    for the update only when the step after reads its output. No thread is needed.

    The rollouts of the run's first step, and of each step that is a multiple of
    ``train.checkpoint_every``, are sampled with that step's own weights, after the update
    before (no lag): a checkpoint then holds no pending rollout, and a resume resamples it
    from the saved weights, with the same key and prompts, as the uninterrupted run did.
    A run stopped elsewhere (a signal, a ``train.stop_at`` off the checkpoints) drops its
    pending rollout and resumes with a fresh one there.
    """

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
        # grpo.overlap: the sampler's devices, a 1-D mesh that splits the rollout's rows as the
        # trainer's splits a batch (each holds the whole policy, replicated), the weights
        # copied there for the next rollout, and that rollout once sampled.
        self.sampler: jax.sharding.NamedSharding | None = None
        if self.r.overlap:
            devices = np.array(sampler_devices(self.r.sampler_devices))
            mesh = jax.sharding.Mesh(devices, ("sampler",))
            self.sampler = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
            self.sampler_rest = jax.device_put(rest, self.sampler)
        self.lagged: tuple[int, chex.ArrayTree] | None = None  # (its step, the weights)
        self.pending: tuple[int, Batch, dict[str, float]] | None = None

    def batch(self, step: int, state: TrainState) -> tuple[Batch, dict[str, float]]:
        """Step ``step``'s batch and its rollout's metrics: a new rollout when ``step`` is a
        multiple of μ (or none is held: a resume inside a rollout's steps). With
        ``grpo.overlap`` the rollout `ahead` sampled during the update before, or a fresh one
        (the class docstring); then, when the next step starts a rollout that lags, the
        weights of this step are copied to the sampler."""
        if self.sampler is None:
            if self.current is None or step % self.r.iterations == 0:
                self.current, self.stats = self._rollout(step, state)
            return self.current, self.stats
        if self.current is None or step % self.r.iterations == 0:
            if self.pending is not None and self.pending[0] == step:
                _, self.current, self.stats = self.pending
            else:  # fresh: this step's own weights
                weights = jax.device_put(state.param_tree(), self.sampler)
                self.current, self.stats = self._rollout(step, state, weights)
            self.pending = None
            if self.cfg.grpo.beta > 0:  # the reference's, on the trainer's mesh
                self.current = self.current | {"ref_logps": self._ref_logps(state, self.current)}
        if self.lags(step + 1):
            # Dispatched before the update that donates them: the copy reads them first.
            self.lagged = step, jax.device_put(state.param_tree(), self.sampler)
        return self.current, self.stats

    def lags(self, step: int) -> bool:
        """Whether step ``step``'s rollout is sampled with the weights of the step before, during
        its update (``grpo.overlap``; not at a checkpoint's step, nor past the last)."""
        every = self.cfg.train.checkpoint_every
        starts = step % self.r.iterations == 0 and step < self.cfg.train.steps
        return bool(self.r.overlap) and starts and not (every and step % every == 0)

    def ahead(self, step: int, state: TrainState) -> None:
        """Called by the loop once step ``step``'s update is dispatched: with ``grpo.overlap``,
        sample the next step's rollout with the weights `batch` copied while the update runs
        (the class docstring). ``state``: the update's (its reference, when β > 0, is read
        when the rollout is used)."""
        del state  # the weights were copied before the update; the reference is read later
        if self.lagged is None or self.lagged[0] != step:
            return
        weights, self.lagged = self.lagged[1], None
        self.pending = (step + 1, *self._sample(step + 1, weights))

    def _rollout(
        self, step: int, state: TrainState, weights: chex.ArrayTree | None = None
    ) -> tuple[Batch, dict[str, float]]:
        """A rollout of step ``step``: sampled with ``state``'s weights on the trainer's mesh,
        or with ``weights`` on the sampler's devices (``grpo.overlap``)."""
        if weights is not None:
            return self._sample(step, weights)
        batch, stats = self._sample(step, state.param_tree())
        if self.cfg.grpo.beta > 0:  # DPO's reference: the frozen start, or the adapters off
            batch["ref_logps"] = self._ref_logps(state, batch)
        return batch, stats

    def _ref_logps(self, state: TrainState, batch: Batch) -> jax.Array:
        """The reference's log-probabilities of ``batch``: the frozen start in ``state``, or its
        weights with the adapters off (LoRA)."""
        frozen = state.reference
        params = state.param_tree() if frozen is None else frozen
        return self.logps(params, batch, frozen is None)

    def on_sampler(self, x: Any, axis: int = 0) -> jax.Array:
        """``x`` on the sampler's devices (``grpo.overlap``): an array whose axis ``axis`` is the
        rollout's rows (``data.batch_size``, which the sampler's devices divide: trainer.config's
        rule) split over them along it, anything else replicated."""
        assert self.sampler is not None
        split = np.ndim(x) > axis and np.shape(x)[axis] == self.cfg.data.batch_size
        spec = jax.sharding.PartitionSpec(*[None] * axis, "sampler")
        where = jax.sharding.NamedSharding(self.sampler.mesh, spec) if split else self.sampler
        return jax.device_put(x, where)

    def on_sampler_cache(self, x: Any) -> jax.Array:
        """A KV cache's leaf on the sampler's devices: its rows (axis 1, after the layers:
        tjx.nn.kv_cache) split over them."""
        return self.on_sampler(x, axis=1)

    def _sample(self, step: int, params: chex.ArrayTree) -> tuple[Batch, dict[str, float]]:
        """Sample, score and lay out step ``step``'s rollout with ``params``: on the trainer's
        mesh, or (``grpo.overlap``) on the sampler's devices, whose results are copied over."""
        r = self.r
        prompts: HostBatch = next(self.loader)
        started = time.perf_counter()
        rest = self.rest if self.sampler is None else self.sampler_rest
        # The sampler's arrays made in the decode loop (cache, tokens) live on its devices, the
        # rows split over them (`on_sampler`: each samples its share, none idles); the keys
        # split on the host's side too: on an accelerator, an array made on a trainer's device
        # would queue behind the update.
        where = (
            contextlib.nullcontext()
            if self.sampler is None
            else jax.default_device(self.sampler.mesh.devices.flat[0])
        )
        place, place_cache = (
            (None, None) if self.sampler is None else (self.on_sampler, self.on_sampler_cache)
        )
        with where:
            model = nnx.merge(self.graphdef, params, rest)
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
                place=place,
                place_cache=place_cache,
                logprobs=r.old_from_decode,
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
        if rollout.logps is not None:
            # π_old as the decode scored it (no second pass): the same weights and float32
            # log-softmax as the forward pass, but the KV cache's path rounds differently in
            # the last bits. Expected: verl and TRL with vLLM take a sampler's log-probabilities
            # too and keep an importance correction; here the clipped ratio is it.
            # grpo.old_logps=recompute scores the forward pass instead.
            batch["old_logps"] = self.place({"old": rollout.logps})["old"]
        elif self.sampler is not None:  # π_old: the sampler's weights, lagging or not; rows split
            with where:
                old = self.logps(params, jax.tree.map(self.on_sampler, rollout.batch), False)
            batch["old_logps"] = self.place({"old": old})["old"]
        elif r.iterations > 1:  # π_old: the policy that sampled, for the μ steps that follow
            batch["old_logps"] = self.logps(params, batch, False)
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


class OverlapEstimate(NamedTuple):
    """A GRPO step's time with its rollout and update one after the other, and overlapped
    (``grpo.overlap``): `overlap_estimate`."""

    sequential_s: float
    overlapped_s: float

    @property
    def speedup(self) -> float:
        """How many times faster the overlapped step is."""
        return self.sequential_s / self.overlapped_s


def overlap_estimate(rollout_s: float, update_s: float, copy_s: float) -> OverlapEstimate:
    """A step's time from its rollout's and its update's (each on the devices it runs on):
    sequential, their sum; overlapped, the longer of the two plus the weights' copy to the
    sampler, which neither hides (it is made before the update starts, and the rollout
    samples with it).

    Parameters
    ----------
    rollout_s : float
        Seconds of the rollout (prefill, ``grpo.max_new_tokens`` decode steps, the scoring) on
        the sampler's devices.
    update_s : float
        Seconds of the update on the trainer's devices.
    copy_s : float
        Seconds to copy the policy's weights to the sampler (their bytes over the link).

    Returns
    -------
    OverlapEstimate
    """
    if min(rollout_s, update_s, copy_s) < 0:
        raise ValueError("overlap_estimate: times are >= 0")
    return OverlapEstimate(rollout_s + update_s, max(rollout_s, update_s) + copy_s)


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
