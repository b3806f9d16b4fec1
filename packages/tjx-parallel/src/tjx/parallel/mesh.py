"""Device meshes with the axes ("pipeline", "data", "fsdp", "expert", "context", "tensor") over all
devices of all processes."""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

from tjx.core.fields import setting
from tjx.parallel.axis_rules import STRATEGIES, AxisRules, MeshAxes, rules
from tjx.parallel.schedule import SCHEDULES

__all__ = [
    "BATCH_AXES",
    "CONTEXT_AXIS",
    "CONTEXT_STRATEGIES",
    "MESH_AXES",
    "MeshConfig",
    "batch_axes",
    "batch_ways",
    "check_batch_split",
    "make_mesh",
    "rules_for",
]


#: Mesh axis names, outermost (least communication) to innermost (most communication).
MESH_AXES: tuple[str, ...] = ("pipeline", "data", "fsdp", "expert", "context", "tensor")
#: The axes a batch's leading dimension is split over. ``expert`` is one of them: outside its MoE
#: layers a model is data-parallel over the expert axis (its devices read different rows, as
#: MaxText's and torchtitan's expert parallelism borrow from data parallelism); inside, the
#: rows' assignments go to the devices of their experts by all-to-all (`expert_parallel`).
BATCH_AXES: tuple[str, ...] = ("data", "fsdp", "expert")
#: The axis a sequence (dimension 1 of a batch and of the activations) is split over.
CONTEXT_AXIS = "context"
#: How attention crosses the context axis (tjx.parallel.context): keys/values passed around a
#: ring of ppermutes, or all-gathered once. "ring" is the default: measured on the deviceless
#: H100 compile (tjx-parallel README, "Context parallelism"), it holds 1/context of the
#: keys/values per device where all-gather holds them all, for the same bytes moved.
CONTEXT_STRATEGIES: tuple[str, ...] = ("ring", "all_gather")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the mesh axes; one of them may be ``-1`` ("all remaining devices").

    Parameters
    ----------
    data : int
        Data-parallel replicas (params replicated, batch split). Default ``-1``.
    fsdp : int
        Fully-sharded data parallel (ZeRO-3) group size: batch split *and* params/optimizer state
        split along their ``embed`` dimension.
    tensor : int
        Tensor (Megatron) parallel group size: MLP / attention heads / vocab split. Kept inside one
        host by :func:`make_mesh` because it communicates on every layer.
    pipeline : int
        Pipeline stages: the layer stack split into this many groups of consecutive layers, one
        per stage (see :mod:`tjx.parallel.pipeline`). Outermost axis: it only sends activations
        between neighbours. Default 1 (a size-1 axis changes nothing). Last field, so the
        positional order of the older three is kept.
    strategy : str
        How logical axes map onto these mesh axes: a name of `STRATEGIES` (:func:`rules_for`).
        Default ``"dp"``.
    microbatches : int
        Pipeline microbatches per step (with ``pipeline > 1``; `pipeline_loss`). Default 4.
    schedule : str
        Pipeline schedule, one of `SCHEDULES` (``"gpipe"``, ``"1f1b"``). Default ``"gpipe"``.
    context : int
        Context parallelism: every sequence (a batch's dimension 1, and the activations' length)
        split over this many devices, attention crossing them by `context_strategy`
        (:mod:`tjx.parallel.context`). Default 1. Sequences must split into ``2 × context``
        equal chunks (each device holds two mirrored ones, for causal load balance).
    context_strategy : str
        One of `CONTEXT_STRATEGIES`: ``"ring"`` (default) or ``"all_gather"``.
    expert : int
        Expert parallelism: an MoE layer's experts split over this many devices (logical
        axis ``experts`` → ``expert``; it must divide the model's ``num_experts``,
        `check_expert_split`), its tokens exchanged by all-to-all (`expert_parallel`); outside
        MoE layers the axis splits the batch like ``data``. Default 1.

    Each field's metadata holds its ``help`` line and ``resumable: True``: a run resumed from a
    checkpoint may lay its state out on another mesh (apps list and document fields from them).
    """

    data: int = setting(-1, resumable=True, help="data-parallel size (-1: all remaining devices)")
    fsdp: int = setting(
        1, resumable=True, help="fully sharded data-parallel size (-1: all remaining devices)"
    )
    tensor: int = setting(1, resumable=True, help="tensor-parallel size (kept inside one host)")
    pipeline: int = setting(
        1, resumable=True, help="pipeline stages (layers split into runs of equal length)"
    )
    strategy: str = setting(
        "dp",
        resumable=True,
        help="which logical axes map to which mesh axes (rules_for)",
        choices=STRATEGIES,
    )
    microbatches: int = setting(
        4, resumable=True, help="pipeline microbatches per step (pipeline > 1)"
    )
    schedule: str = setting(
        "gpipe", resumable=True, help="pipeline schedule (pipeline > 1)", choices=SCHEDULES
    )
    context: int = setting(
        1,
        resumable=True,
        help="context-parallel size: each sequence split over this many devices (-1: the rest)",
    )
    context_strategy: str = setting(
        "ring",
        resumable=True,
        help="how attention crosses the context axis (ring: ppermute; all_gather: keys/values)",
        choices=CONTEXT_STRATEGIES,
    )
    expert: int = setting(
        1, resumable=True, help="expert-parallel size: MoE experts split over it, batch too"
    )

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"MeshConfig.strategy must be one of {STRATEGIES}, got {self.strategy!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"MeshConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}"
            )
        if self.context_strategy not in CONTEXT_STRATEGIES:
            raise ValueError(
                f"MeshConfig.context_strategy must be one of {CONTEXT_STRATEGIES}, got "
                f"{self.context_strategy!r}"
            )
        if isinstance(self.microbatches, bool) or not isinstance(self.microbatches, int):
            raise ValueError(f"MeshConfig.microbatches must be an int, got {self.microbatches!r}")
        if self.microbatches < 1:
            raise ValueError(f"MeshConfig.microbatches must be >= 1, got {self.microbatches}")
        sizes = self.sizes_or_minus_one()
        for name, size in zip(MESH_AXES, sizes, strict=False):
            if not isinstance(size, int) or isinstance(size, bool):
                raise ValueError(f"MeshConfig.{name} must be an int, got {size!r}")
            if size == 0 or size < -1:
                raise ValueError(
                    f"MeshConfig.{name} must be a positive int or -1 (take the remaining "
                    f"devices), got {size}"
                )
        if sum(s == -1 for s in sizes) > 1:
            raise ValueError(
                f"MeshConfig: at most one of {', '.join(MESH_AXES)} may be -1 (all remaining "
                f"devices); got {self.describe()}"
            )
        if self.context > 1 and self.pipeline > 1:
            raise ValueError(
                f"MeshConfig: context parallelism (context={self.context}) with pipeline "
                f"stages (pipeline={self.pipeline}) is not supported; set one of them to 1"
            )

    def describe(self) -> str:
        """``"pipeline=P, data=D, fsdp=F, expert=E, context=C, tensor=T"`` for messages."""
        return ", ".join(
            f"{n}={s}" for n, s in zip(MESH_AXES, self.sizes_or_minus_one(), strict=True)
        )

    def sizes_or_minus_one(self) -> tuple[int, ...]:
        """The raw sizes in `MESH_AXES` order (-1 unresolved)."""
        return tuple(getattr(self, name) for name in MESH_AXES)

    def resolve(self, num_devices: int) -> tuple[int, ...]:
        """Concrete axis sizes for ``num_devices`` devices.

        Raises
        ------
        ValueError
            If the sizes cannot multiply to ``num_devices`` (the message names the sizes).
        """
        sizes = list(self.sizes_or_minus_one())
        fixed = math.prod(s for s in sizes if s != -1)
        desc = self.describe()
        if -1 in sizes:
            if num_devices % fixed != 0:
                raise ValueError(
                    f"mesh {desc}: the fixed axes multiply to {fixed}, which does not divide "
                    f"the {num_devices} available devices"
                )
            sizes[sizes.index(-1)] = num_devices // fixed
        elif fixed != num_devices:
            raise ValueError(
                f"mesh {desc} has {fixed} devices but {num_devices} are available; "
                "the product of the axis sizes must equal the device count (or set one to -1)"
            )
        named = dict(zip(MESH_AXES, sizes, strict=True))
        if named["context"] > 1 and named["pipeline"] > 1:
            raise ValueError(
                f"mesh {desc}: context parallelism (context={named['context']}) with pipeline "
                f"stages (pipeline={named['pipeline']}) is not supported; set one of them to 1"
            )
        return tuple(sizes)


def _dcn_split(sizes: Sequence[int], num_granules: int) -> tuple[list[int], list[int]] | None:
    """Split each axis into (per-host, across-host) factors, hosts taken from the outer axes.

    Returns ``None`` when the across-host factor cannot be taken from the outer axes alone, i.e.
    when the tensor axis would have to span hosts. Hosts are taken from ``pipeline`` first (it
    only sends activations to its neighbour), then ``data``, then ``fsdp``, then ``expert`` (its
    all-to-all wants the fast links of a host), then ``context`` (its ring passes one block of
    keys/values per step: hosts only when the others are used up).
    """
    remaining = num_granules
    dcn = []
    for size in sizes[:-1]:  # never put hosts on the tensor axis
        factor = math.gcd(size, remaining)
        dcn.append(factor)
        remaining //= factor
    dcn.append(1)
    if remaining != 1:
        return None
    ici = [size // d for size, d in zip(sizes, dcn, strict=False)]
    return ici, dcn


def make_mesh(config: MeshConfig | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """Build a :class:`jax.sharding.Mesh` with axes `MESH_AXES`.

    Parameters
    ----------
    config : MeshConfig, optional
        Axis sizes; default ``MeshConfig()`` = pure data parallelism over every device.
    devices : sequence of jax.Device, optional
        Devices to use; default ``jax.devices()`` (all devices of all processes).

    Returns
    -------
    jax.sharding.Mesh

    Notes
    -----
    Device order: the tensor axis is innermost, so its groups are consecutive devices of one host
    (it all-reduces every layer and wants the fast intra-host links). One process:
    :func:`jax.experimental.mesh_utils.create_device_mesh` (topology-aware on TPU, id-sorted on
    GPU). Several processes: :func:`~jax.experimental.mesh_utils.create_hybrid_device_mesh` with
    processes as granules, putting the process count on the outer axes (pipeline, then data, then
    fsdp, expert, context), so that tensor traffic never crosses hosts. If that is impossible (the
    tensor axis is larger than a host), a :class:`ValueError` says so.
    """
    config = MeshConfig() if config is None else config
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("make_mesh needs at least one device")
    sizes = config.resolve(len(devs))
    num_processes = len({d.process_index for d in devs})
    if num_processes == 1:
        array = mesh_utils.create_device_mesh(sizes, devs)
    else:
        split = _dcn_split(sizes, num_processes)
        if split is None:
            per_host = len(devs) // num_processes
            named = ", ".join(f"{n}={s}" for n, s in zip(MESH_AXES, sizes, strict=True))
            raise ValueError(
                f"mesh {named} cannot keep the tensor axis inside a host: {num_processes} "
                f"processes with {per_host} devices each must divide the product of the other "
                "axes (and tensor must divide the devices per host)"
            )
        ici, dcn = split
        array = mesh_utils.create_hybrid_device_mesh(ici, dcn, devs, process_is_granule=True)
    return Mesh(np.asarray(array), MESH_AXES)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The :data:`BATCH_AXES` that ``mesh`` has (a mesh made elsewhere may lack some)."""
    return tuple(axis for axis in BATCH_AXES if axis in mesh.shape)


def batch_ways(mesh: Mesh) -> int:
    """Into how many parts a batch is split on ``mesh``: the product of its :data:`BATCH_AXES`.

    Parameters
    ----------
    mesh : Mesh
        A mesh (:func:`make_mesh`'s has every batch axis; one without some counts the others).

    Returns
    -------
    int
        ``data × fsdp × expert``.
    """
    return math.prod(int(mesh.shape[axis]) for axis in batch_axes(mesh))


def batch_label(mesh: Mesh) -> str:
    """``"data×fsdp×expert"``: the batch axes of ``mesh``, for messages."""
    return "×".join(batch_axes(mesh))


def check_batch_split(sizes: Mapping[str, int], mesh: Mesh) -> int:
    """Check that every named batch size splits evenly over the mesh's batch axes'
    (``data × fsdp × expert``) devices.

    Call it once the mesh exists, before any batch is built: the caller names each size by its
    own key (a config key, a flag), so the error says what to change.

    Parameters
    ----------
    sizes : mapping of str to int
        Batch sizes (rows per step, per microbatch, per evaluation batch) by the caller's name.
    mesh : Mesh

    Returns
    -------
    int
        :func:`batch_ways` of ``mesh``.

    Raises
    ------
    ValueError
        ``"<name>: <size> must be divisible by the data×fsdp×expert mesh size (<ways>)"`` for
        the first size that does not split.

    Examples
    --------
    >>> import jax
    >>> mesh = make_mesh(MeshConfig(data=1), jax.devices()[:1])
    >>> check_batch_split({"batch_size": 6}, mesh)
    1
    """
    ways = batch_ways(mesh)
    for name, size in sizes.items():
        if size % ways:
            raise ValueError(
                f"{name}: {size} must be divisible by the {batch_label(mesh)} mesh size ({ways})"
            )
    return ways


def rules_for(config: MeshConfig, **overrides: MeshAxes) -> AxisRules:
    """The logical-axis rules of a run laid out by ``config``: its ``strategy`` preset, and with
    context parallelism (``context`` other than 1) ZeRO-3 over the context devices too.

    A ZeRO strategy (``embed`` → ``fsdp``) then splits weights over ``("fsdp", "context")``: the
    context devices hold other tokens of the same rows, so like data-parallel ranks each needs a
    weight once per layer and reduces its gradient (torchtitan's FSDP spans ``dp_shard × cp``,
    MaxText's ``embed`` rule lists its context axis). Without context parallelism the preset is
    returned as it is (its specs unchanged).

    Parameters
    ----------
    config : MeshConfig
    **overrides
        Remapped logical names, as for :func:`rules` (an ``embed`` given here is kept).

    Returns
    -------
    AxisRules
    """
    found = rules(config.strategy).replace(**overrides)
    zero = found.mesh_axes("embed") == ("fsdp",) and "embed" not in overrides
    if config.context != 1 and zero:
        return found.replace(embed=("fsdp", CONTEXT_AXIS))
    return found
