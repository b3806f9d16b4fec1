"""An RL run's rollout, estimated beside its update: what ``--plan TARGET`` says of a GRPO config.

A rollout (trainer.step.grpo's `Rollouts`) samples ``data.batch_size`` completions at once
(``batch_size / G`` prompts, ``G = grpo.group_size`` completions each) with tjx.nn's generation:
one prefill of the prompt batch, which samples the first new token, then one decode step per
further token: ``grpo.max_new_tokens - 1`` calls. Each call is priced from its compiled program
by tjx-metrics' `program_cost` (calibrated where the device table has a calibration), so the
rollout is ``prefill + (max_new_tokens - 1) × decode step``.

The decode step's cache length: the cache is allocated once at ``prompt + max_new_tokens`` slots
and every decode step reads all of them (the attention masks the slots past each row's length),
so each step is the same program at the full length: the sum over the steps is that program's
cost times their count, exact for this program and not a bound (a decode that read only the
filled slots would grow from the prompt's length; tjx's does not). Every completion is priced
to ``max_new_tokens``: generation stops early only when every row has ended.

Calibrated, each call carries the calibration's step overhead (fitted on a train step: a
launch from the host each; the decode loop reads each step's tokens back before the next).

The log-probability passes of π_old (``μ > 1``) and of the reference (``β > 0``) are one
forward over the rollout batch each, once per rollout: the same compiled program, counted in
the rollout. Where π_old's log-probabilities come from the decode (``grpo.old_logps``: by
default when overlapped) there is no π_old pass: the prefill and decode programs compiled and
priced are the ones that also score each sampled token (a log-softmax over the vocabulary of
each row, inside the program). Not counted: the rewards (host Python).

Overlapped (``grpo.overlap: 1``, trainer.step.grpo's `Rollouts`): the rollout runs on the last
``grpo.sampler_devices`` devices (each holds the whole policy and samples its share of the
batch: the rows split over them, data parallel; its programs priced per device), with
π_old's pass there too where it is not the decode's (``grpo.old_logps: recompute``); the
update runs on the others. A step's rollout is sampled while the update before it runs, so a
cycle of μ steps takes the longer of the rollout and one update, the other ``μ - 1`` updates,
the reference's pass on the trainer's devices (``β > 0``, priced as the sampler's pass: an
upper bound, its rows are not split there) and the weights' copy to the sampler
(`trainer.step.grpo.overlap_estimate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tjx.metrics import ProgramCost
from trainer.config.seams import Record
from trainer.step.grpo import overlap_estimate

__all__ = [
    "RolloutEstimate",
    "decode_label",
    "logps_label",
    "logps_passes",
    "prefill_label",
    "trainer_passes",
]


def prefill_label(rows: int, prompt: int) -> str:
    """The prefill program's label in a plan (its line and its ``programs`` record)."""
    return f"rollout prefill ({rows} × {prompt} prompt tokens)"


def decode_label(rows: int, cache: int) -> str:
    """The decode step's label in a plan."""
    return f"rollout decode step ({rows} rows, a cache of {cache})"


def logps_label(rows: int, width: int) -> str:
    """The log-probability pass's label in a plan."""
    return f"rollout log-probabilities ({rows} × {width} tokens)"


def logps_passes(iterations: int, beta: float, overlap: bool = False, decoded: bool = False) -> int:
    """Forward passes over a rollout batch for its log-probabilities in the rollout: π_old's when
    μ > 1 or overlapped, unless the decode scored them (``decoded``: trainer.config's
    `GrpoRollout.old_from_decode`), and the reference's when β > 0 (trainer.step.grpo's
    `Rollouts`); overlapped, π_old's only (on the sampler, its own weights; the reference's
    runs on the trainers: `trainer_passes`)."""
    old = int((overlap or iterations > 1) and not decoded)
    return old if overlap else old + int(beta > 0)


def trainer_passes(beta: float, overlap: bool) -> int:
    """Overlapped, the reference's pass (β > 0) on the trainer's devices, once per rollout."""
    return int(overlap and beta > 0)


@dataclasses.dataclass(frozen=True)
class RolloutEstimate:
    """A rollout's estimated time from its programs' costs, and the RL step it is part of.

    Attributes
    ----------
    rows, group : int
        Completions per rollout (``data.batch_size``) and per prompt (``grpo.group_size``).
    prompt_tokens, new_tokens : int
        The padded prompt (``data.seq_len``) and ``grpo.max_new_tokens``.
    prefill, decode : ProgramCost
        One call of each program (the decode step at its full cache).
    update_s : float
        One optimizer step on the rollout batch (the train step's estimate).
    iterations : int
        μ: optimizer steps per rollout (``grpo.iterations``).
    passes : int
        Log-probability passes per rollout (`logps_passes`).
    scoring : ProgramCost or None
        One such pass (None without any).
    sampler_devices : int
        Overlapped (``grpo.sampler_devices``): the devices the rollout runs on, the update on
        the rest; 0: one after the other on every device.
    copy_s : float
        Overlapped: the policy's copy to the sampler, once per rollout.
    policy_bytes : int
        The policy's bytes (what the copy moves).
    trainer_passes : int
        Overlapped: log-probability passes on the trainer's devices (the reference's, β > 0).
    decoded : bool
        π_old's log-probabilities are the decode's (``grpo.old_logps``): the prefill and decode
        programs priced score each sampled token, and no π_old pass is counted.
    """

    rows: int
    group: int
    prompt_tokens: int
    new_tokens: int
    prefill: ProgramCost
    decode: ProgramCost
    update_s: float
    iterations: int
    passes: int = 0
    scoring: ProgramCost | None = None
    sampler_devices: int = 0
    copy_s: float = 0.0
    policy_bytes: int = 0
    trainer_passes: int = 0
    decoded: bool = False

    @property
    def decode_steps(self) -> int:
        """Decode calls: the prefill samples the first new token."""
        return self.new_tokens - 1

    @property
    def cache(self) -> int:
        """Slots of the KV cache every decode step reads."""
        return self.prompt_tokens + self.new_tokens

    @property
    def seconds(self) -> float:
        """The rollout: prefill plus each decode step, plus its log-probability passes."""
        sampled = self.prefill.seconds + self.decode_steps * self.decode.seconds
        return sampled + self.passes * self.scoring_s

    @property
    def scoring_s(self) -> float:
        """One log-probability pass (0 without any)."""
        return self.scoring.seconds if self.scoring is not None else 0.0

    @property
    def sequential_s(self) -> float:
        """A rollout and the μ updates that use it, one after the other."""
        return self.seconds + self.iterations * self.update_s

    @property
    def step_seconds(self) -> float:
        """A rollout and the μ updates that use it: one after the other, or overlapped (the
        module doc: the longer of the rollout and one update, the other updates, the
        reference's passes on the trainers and the weights' copy)."""
        if not self.sampler_devices:
            return self.sequential_s
        trainer = (self.iterations - 1) * self.update_s + self.trainer_passes * self.scoring_s
        return overlap_estimate(self.seconds, self.update_s, self.copy_s).overlapped_s + trainer

    @property
    def samples_per_s(self) -> float:
        """Completions sampled (and trained on) per second."""
        return self.rows / self.step_seconds

    @property
    def share(self) -> float:
        """The rollout's share of its step."""
        return self.seconds / self.step_seconds

    def lines(self) -> list[str]:
        """The plan's lines (labelled estimates, as every figure of a plan is)."""
        ms = lambda s: f"{s * 1e3:,.2f} ms"
        label = self.prefill.label
        updates = f"{self.iterations} update{'s' if self.iterations > 1 else ''}"
        return [
            f"rollout ({label}): {self.rows} completions ({self.rows // self.group} prompts × "
            f"group {self.group}) of {self.prompt_tokens} prompt tokens: prefill "
            f"{ms(self.prefill.seconds)} + {self.decode_steps} decode steps × "
            f"{ms(self.decode.seconds)}"
            + (
                f" + {self.passes} log-probability pass{'es' if self.passes > 1 else ''} × "
                f"{ms(self.scoring_s)}"
                if self.passes
                else ""
            )
            + f" = {ms(self.seconds)}",
            f"  each decode step at the full cache of {self.cache} slots: the cache is "
            "allocated once and read whole every step (masked to each row's length), so the "
            "sum is exact for this program, not a bound; every completion runs to "
            "grpo.max_new_tokens (the first new token is the prefill's)"
            + (
                f"; each call carries the calibration's step overhead "
                f"({ms(self.decode.overhead_s)}, fitted on a train step)"
                if self.decode.overhead_s
                else ""
            )
            + (
                "; π_old's log-probabilities are the decode's (grpo.old_logps), scored inside "
                "the prefill and each decode step: no pass of their own"
                if self.decoded
                else ""
            ),
            self._step_line(ms, label, updates),
        ]

    def _step_line(self, ms: Callable[[float], str], label: str, updates: str) -> str:
        """The RL step's line: the sum, or (overlapped) the longer side plus the copy."""
        tail = f"{self.samples_per_s:,.0f} samples/s, the rollout {self.share:.0%} of the step"
        if not self.sampler_devices:
            return (
                f"rl step ({label}): the rollout {ms(self.seconds)} + {updates} × "
                f"{ms(self.update_s)} = {ms(self.step_seconds)}: {tail}"
            )
        rest = self.iterations - 1
        others = f" + {rest} × {ms(self.update_s)}" if rest else ""
        ref = (
            f" + {self.trainer_passes} reference pass × {ms(self.scoring_s)}"
            if self.trainer_passes
            else ""
        )
        return (
            f"rl step ({label}), overlapped: the rollout on {self.sampler_devices} sampler "
            f"devices, the update on the others: max(rollout {ms(self.seconds)}, update "
            f"{ms(self.update_s)}){others}{ref} + the weights' copy {ms(self.copy_s)} "
            f"({self.policy_bytes / 1e6:,.1f} MB) = {ms(self.step_seconds)} (one after the "
            f"other: {ms(self.sequential_s)}): {tail}"
        )

    def record(self) -> Record:
        """``--plan-json``'s ``rollout``: the inputs and every derived figure."""
        return {
            "label": self.prefill.label,
            "rows": self.rows,
            "group_size": self.group,
            "prompts": self.rows // self.group,
            "prompt_tokens": self.prompt_tokens,
            "max_new_tokens": self.new_tokens,
            "cache": self.cache,
            "overhead_s": self.decode.overhead_s,
            "decode_lengths": "full cache (bound = sum: the program reads every slot)",
            "prefill_s": self.prefill.seconds,
            "decode_step_s": self.decode.seconds,
            "decode_steps": self.decode_steps,
            "logps_passes": self.passes,
            "logps_pass_s": self.scoring_s,
            "seconds": self.seconds,
            "update_s": self.update_s,
            "iterations": self.iterations,
            "step_s": self.step_seconds,
            "sequential_s": self.sequential_s,
            "sampler_devices": self.sampler_devices,
            "copy_s": self.copy_s,
            "policy_bytes": self.policy_bytes,
            "trainer_passes": self.trainer_passes,
            "old_logps_from_decode": self.decoded,
            "samples_per_s": self.samples_per_s,
            "rollout_share": self.share,
        }
