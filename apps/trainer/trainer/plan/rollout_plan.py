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
the rollout. Not counted: the rewards (host Python).
"""

from __future__ import annotations

import dataclasses

from tjx.metrics import ProgramCost
from trainer.config.seams import Record

__all__ = ["RolloutEstimate", "decode_label", "logps_label", "logps_passes", "prefill_label"]


def prefill_label(rows: int, prompt: int) -> str:
    """The prefill program's label in a plan (its line and its ``programs`` record)."""
    return f"rollout prefill ({rows} × {prompt} prompt tokens)"


def decode_label(rows: int, cache: int) -> str:
    """The decode step's label in a plan."""
    return f"rollout decode step ({rows} rows, a cache of {cache})"


def logps_label(rows: int, width: int) -> str:
    """The log-probability pass's label in a plan."""
    return f"rollout log-probabilities ({rows} × {width} tokens)"


def logps_passes(iterations: int, beta: float) -> int:
    """Forward passes over a rollout batch for its log-probabilities: π_old's when μ > 1, the
    reference's when β > 0 (trainer.step.grpo's `Rollouts`)."""
    return int(iterations > 1) + int(beta > 0)


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
    def step_seconds(self) -> float:
        """A rollout and the μ updates that use it."""
        return self.seconds + self.iterations * self.update_s

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
            ),
            f"rl step ({label}): the rollout {ms(self.seconds)} + {updates} × "
            f"{ms(self.update_s)} = {ms(self.step_seconds)}: {self.samples_per_s:,.0f} "
            f"samples/s, the rollout {self.share:.0%} of the step",
        ]

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
            "samples_per_s": self.samples_per_s,
            "rollout_share": self.share,
        }
