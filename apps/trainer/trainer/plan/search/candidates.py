"""The search's candidates: what may change in a run, and what is refused before any compile.

A `Candidate` is one choice per dimension: the mesh (`MeshChoice`: the six axes' sizes, whether
weights are sharded ZeRO-style, whether tensor rules apply), the remat policy, the gradient
accumulation steps (micro-batch = ``data.batch_size / accumulation``), the attention kernel, the
loss kernel and the linear layers' products (``model.precision.matmul``: fp8 where the target has
float8 units and the model can take it). `Space.of` lists the values each dimension may take for a
run on a target, in the order the search tries them (its prior: least communication, least
recompute, fewest micro-steps first); `Space.prune_mesh` and `Space.prune_pair` say why a value
cannot run, in one phrase per reason, so that a search can count them (`Pruned`). Nothing here
compiles.

The memory bound is analytic and a lower bound: a device holds at least its share of the
parameters and optimizer state (their bytes from the abstract train state, divided by the axes
that shard weights), so a mesh whose share alone exceeds the target's budget cannot fit with any
remat or micro-batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from typing import Any

import jax
import jax.numpy as jnp

from tjx import parallel
from tjx.kernels import Target as KernelTarget
from tjx.kernels.choice import unsupported_reason
from tjx.metrics import GIB
from tjx.metrics.memory import budget_bytes
from tjx.nn import REMAT_POLICIES, check_sequence_split
from tjx.nn.precision import MATMULS
from trainer.config.typed import XLA_KERNELS, Config, step_config
from trainer.step.state import abstract_state

__all__ = [
    "Candidate",
    "MeshChoice",
    "Pruned",
    "Space",
    "apply",
    "candidate_of",
    "describe",
    "state_bytes",
]

#: Axes in `tjx.parallel.MESH_AXES` order; the search's prior weighs how much each talks per
#: step (data: one gradient reduction; tensor: every layer, forward and backward).
AXES = parallel.MESH_AXES
_TALK = {"pipeline": 1.0, "data": 0.0, "fsdp": 1.0, "expert": 1.5, "context": 2.0, "tensor": 3.0}
#: The share of a device's memory a mesh should leave to activations to be tried early: below it
#: the split is tried after the others (it fits only small micro-batches; `Space.mesh_order`).
ACTIVATION_ROOM = 0.25
#: Remat policies from the least recomputed to the most: what the search tries first.
REMAT_ORDER = ("none", "save_dots_and_attention", "save_dots", "save_attention_output", "full")
assert sorted(REMAT_ORDER) == sorted(REMAT_POLICIES), "a new remat policy: place it in the order"
#: Attention kernels in the order tried (the fused ones first: they hold less memory).
ATTENTION_ORDER = ("cudnn", "pallas", "xla")
LOSS_ORDER = ("xla", "pallas")


@dataclasses.dataclass(frozen=True, order=True)
class MeshChoice:
    """A mesh split: sizes in `AXES` order, ZeRO (weights and optimizer state split over
    ``fsdp`` × ``context``) and tensor-parallel rules (``tensor`` > 1)."""

    sizes: tuple[int, ...]
    zero: bool

    def size(self, axis: str) -> int:
        """The size of ``axis``."""
        return self.sizes[AXES.index(axis)]

    @property
    def strategy(self) -> str:
        """tjx.parallel's strategy name for these rules."""
        tp = self.size("tensor") > 1
        return {(True, True): "fsdp_tp", (True, False): "fsdp", (False, True): "tp"}.get(
            (self.zero, tp), "dp"
        )

    @property
    def weight_shards(self) -> int:
        """The most ways any weight is split (the memory bound's divisor)."""
        zero = self.size("fsdp") * self.size("context") if self.zero else 1
        return zero * self.size("tensor") * self.size("pipeline") * self.size("expert")

    @property
    def batch_ways(self) -> int:
        """Into how many parts a batch's rows are split (data × fsdp × expert)."""
        return math.prod(self.size(a) for a in parallel.BATCH_AXES)

    def describe(self) -> str:
        """``"data=4 fsdp=2 (zero)"``: the axes above 1, ``data=1`` for one device."""
        shown = " ".join(f"{a}={s}" for a, s in zip(AXES, self.sizes, strict=True) if s > 1)
        return (shown or "data=1") + (" zero" if self.zero and self.size("fsdp") == 1 else "")

    def prior(self) -> float:
        """How much the split talks (lower first): the weighted log2 of each axis' size."""
        return sum(_TALK[a] * math.log2(s) for a, s in zip(AXES, self.sizes, strict=True))


@dataclasses.dataclass(frozen=True, order=True)
class Candidate:
    """One choice per dimension the search varies."""

    mesh: MeshChoice
    remat: str
    accumulation: int
    attention: str
    loss: str
    matmul: str = "default"

    def replace(self, **changes: Any) -> Candidate:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


def apply(run: Config, c: Candidate) -> Config:
    """``run`` with the candidate's settings (the mesh's other fields kept)."""
    sizes: dict[str, Any] = dict(zip(AXES, c.mesh.sizes, strict=True))
    mesh = dataclasses.replace(run.mesh, strategy=c.mesh.strategy, **sizes)
    optimizer = dataclasses.replace(run.optimizer, accumulation_steps=c.accumulation)
    model: dict[str, Any] = {"remat": c.remat, "attention_impl": c.attention}
    if "cross_entropy_impl" not in type(run.model).unused_fields:
        model["cross_entropy_impl"] = c.loss
    p = run.model.precision
    if c.matmul != p.matmul:  # float8 off: its settings too (tjx.nn refuses them idle)
        fp8 = c.matmul == "fp8"
        model["precision"] = dataclasses.replace(p, matmul=c.matmul) if fp8 else p.without_fp8()
    return dataclasses.replace(run, mesh=mesh, optimizer=optimizer).with_model(**model)


def candidate_of(run: Config, devices: int) -> Candidate:
    """The candidate ``run`` is as configured (its mesh resolved over ``devices``); a
    `ValueError` for a mesh that does not cover them."""
    sizes = run.mesh.resolve(devices)
    zero = run.mesh.strategy in ("fsdp", "fsdp_tp") and sizes[2] * sizes[4] > 1
    mesh = MeshChoice(tuple(sizes), zero)
    m = run.model
    return Candidate(mesh, m.remat, run.optimizer.accumulation_steps, m.attention_impl,
                     m.cross_entropy_impl, m.precision.matmul)  # fmt: skip


def describe(c: Candidate) -> dict[str, str]:
    """The table's words for a candidate: mesh, remat, micro-batch, kernels."""
    return {
        "mesh": c.mesh.describe(),
        "remat": c.remat,
        "accumulation": str(c.accumulation),
        "kernels": f"{c.attention}/{c.loss}" + (" fp8" if c.matmul == "fp8" else ""),
    }


def _fp8_refusal(run: Config, device: Any) -> str | None:
    """Why ``run`` cannot multiply in float8 on ``device`` (a `tjx.metrics.Accelerator`), or
    None: the rules the trainer and tjx-nn refuse it by."""
    m = run.model
    if not device.fp8_units:
        return f"the {device.key} has no float8 matrix units"
    if m.moe.num_experts:
        return "the MoE experts' products do not go through Dense (tjx-nn refuses fp8 there)"
    if m.precision.compute_dtype not in (jnp.bfloat16, jnp.float16):
        return f"compute_dtype {m.precision.compute_dtype} (fp8 is searched for bf16/fp16 runs)"
    return None


def state_bytes(run: Config) -> int:
    """Bytes of the parameters and optimizer state of ``run``'s train state, on no device."""
    # The state does not depend on the kernels; a fused one is refused off its device
    state = abstract_state(step_config(run.with_model(**XLA_KERNELS))).state
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)))


def gradient_bytes(run: Config) -> int:
    """Bytes of one gradient of ``run``'s trained parameters (as many as the parameters; none
    counted with LoRA, whose adapters' gradients are small beside the frozen base)."""
    if run.use_lora:
        return 0
    state = abstract_state(step_config(run.with_model(**XLA_KERNELS))).state
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.param_tree())))


def _splits(count: int, axes: int) -> list[tuple[int, ...]]:
    """Every way of writing ``count`` as an ordered product of ``axes`` positive factors."""
    divisors = [d for d in range(1, count + 1) if count % d == 0]
    return [s for s in itertools.product(divisors, repeat=axes) if math.prod(s) == count]


@dataclasses.dataclass
class Pruned:
    """Why values were refused before compiling: reason → count, and one example each."""

    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    examples: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        """Count one refusal."""
        self.counts[reason] += 1
        self.examples.setdefault(reason, example)

    def lines(self) -> list[str]:
        """One line per reason, with its count and an example."""
        return [
            f"pruned {n}: {reason} (e.g. {self.examples[reason]})"
            for reason, n in self.counts.most_common()
        ]


@dataclasses.dataclass
class Space:
    """The values each dimension may take for ``run`` on ``devices`` devices of a target, in
    the order the search tries them, and what was refused of them (`pruned`)."""

    run: Config
    devices: int
    budget: int
    meshes: list[MeshChoice]
    remats: list[str]
    accumulations: list[int]
    attentions: list[str]
    losses: list[str]
    matmuls: list[str] = dataclasses.field(default_factory=lambda: ["default"])
    pruned: Pruned = dataclasses.field(default_factory=Pruned)
    state: int = 0
    grads: int = 0

    @classmethod
    def of(
        cls,
        run: Config,
        target: Any,
        *,
        axes: tuple[str, ...] | None = None,
        remats: tuple[str, ...] | None = None,
        accumulations: tuple[int, ...] | None = None,
        attentions: tuple[str, ...] | None = None,
        losses: tuple[str, ...] | None = None,
        matmuls: tuple[str, ...] | None = None,
    ) -> Space:
        """The space of ``run`` on ``target`` (a `tjx.metrics.Target`): each keyword narrows a
        dimension (the axes the mesh may split: default every one the model can use). Meshes
        and kernels that cannot run are pruned here, each counted under its reason."""
        m, count = run.model, target.count
        budget, _ = budget_bytes(target.device)
        space = cls(run, count, budget, [], [], [], [], [])
        if axes is None:
            axes = tuple(a for a in AXES if a != "expert" or m.moe.num_experts)
        space.state, space.grads = state_bytes(run), gradient_bytes(run)
        for sizes in _splits(count, len(axes)):
            full = tuple(sizes[axes.index(a)] if a in axes else 1 for a in AXES)
            mesh = dict(zip(AXES, full, strict=True))
            # ZeRO is a choice only where it splits something: forced with fsdp (else fsdp is
            # data), both ways with a split sequence (weights over fsdp × context, or whole)
            zeros = (
                [mesh["fsdp"] > 1] if mesh["fsdp"] > 1 or mesh["context"] == 1 else [False, True]
            )
            for zero in zeros:
                choice = MeshChoice(full, zero)
                reason = space.prune_mesh(choice)
                if reason is None:
                    space.meshes.append(choice)
                else:
                    space.pruned.add(reason, f"mesh {choice.describe()}")
        space.meshes.sort(key=space.mesh_order)
        space.remats = list(remats or REMAT_ORDER)
        batch = run.data.batch_size
        divisors = [a for a in range(1, batch + 1) if batch % a == 0]
        space.accumulations = list(accumulations or divisors)
        kt = KernelTarget(*target.kernel_target)
        head_dim = m.head_dim or m.d_model // m.num_heads
        for kernel in attentions or ATTENTION_ORDER:
            why = unsupported_reason(kernel, m.precision.compute_dtype, head_dim, kt)
            if why is None:
                space.attentions.append(kernel)
            else:
                space.pruned.add(f"attention {kernel}: {why}", f"model.attention_impl={kernel}")
        if "cross_entropy_impl" in type(m).unused_fields:
            space.losses = [m.cross_entropy_impl]  # the model has no vocabulary head's loss
        else:
            for kernel in losses or LOSS_ORDER:
                if kernel == "pallas" and not kt.cuda:
                    space.pruned.add(
                        "loss pallas: the fused loss is a Triton (CUDA) kernel",
                        "model.cross_entropy_impl=pallas",
                    )
                else:
                    space.losses.append(kernel)
        space.matmuls = []
        configured = m.precision.matmul  # tried first: the run as given
        for matmul in matmuls or (configured, *(k for k in MATMULS if k != configured)):
            why = _fp8_refusal(run, target.device) if matmul == "fp8" else None
            if why is None:
                space.matmuls.append(matmul)
            else:
                space.pruned.add(f"matmul fp8: {why}", "model.precision.matmul=fp8")
        return space

    def mesh_order(self, mesh: MeshChoice) -> tuple[bool, float, tuple[int, ...], bool]:
        """The key meshes are tried in: those whose share of the state leaves the activations
        at least `ACTIVATION_ROOM` of the device first, then the least talk (`MeshChoice.prior`).

        A split that talks least but leaves almost no room (an 8B model's 15 GiB of state and
        gradient on a 16 GiB v5e chip) only fits the smallest activations: planned first, it
        spends the budget on compiles that do not fit."""
        # The step holds a gradient beside the state (sharded as the parameters are).
        cramped = (self.state + self.grads) / mesh.weight_shards > (
            1 - ACTIVATION_ROOM
        ) * self.budget
        return cramped, mesh.prior(), mesh.sizes, mesh.zero

    def prune_mesh(self, mesh: MeshChoice) -> str | None:
        """Why ``mesh`` cannot run ``self.run`` (None: it may), before any compile."""
        m, d = self.run.model, self.run.data
        pipeline, tensor = mesh.size("pipeline"), mesh.size("tensor")
        if pipeline > 1 and m.num_layers % pipeline:
            return "mesh.pipeline does not divide model.num_layers"
        if pipeline > 1:
            return "mesh.pipeline > 1: --plan does not compile a pipelined run yet"
        if tensor > 1 and (m.num_heads % tensor or (m.num_kv_heads or m.num_heads) % tensor):
            return "mesh.tensor does not divide model.num_heads and num_kv_heads"
        if mesh.size("expert") > 1 and (m.moe.num_experts or 0) % mesh.size("expert"):
            return "mesh.expert does not divide model.moe.num_experts"
        context = mesh.size("context")
        if context > 1:
            try:
                check_sequence_split(m, context)
                parallel.check_context_split(d.seq_len, context, "data.seq_len")
            except ValueError:
                return "mesh.context: the model or data.seq_len cannot be split that way"
        if d.batch_rows(self.run.eval.batch_size) % mesh.batch_ways:
            return "eval.batch_size does not split over data × fsdp × expert"
        if self.state / mesh.weight_shards > self.budget:
            need = self.state / mesh.weight_shards / GIB
            return (
                f"params + optimizer state alone exceed the {self.budget / GIB:.2f} GiB per "
                f"device (≥ {need:.2f} GiB)"
            )
        return None

    def prune_pair(self, mesh: MeshChoice, accumulation: int) -> str | None:
        """Why ``accumulation`` micro-steps cannot run on ``mesh`` (None: they may)."""
        rows = self.run.data.batch_rows(self.run.data.batch_size)
        if rows % accumulation or (rows // accumulation) % mesh.batch_ways:
            return "the micro-batch does not split over data × fsdp × expert"
        return None
