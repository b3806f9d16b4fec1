"""Logical axis names (what models annotate) → mesh axes (what the hardware has)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence

from jax.sharding import Mesh, PartitionSpec

# The names tjx-nn's models use: one tuple in tjx-core, which both packages import.
from tjx.core.axes import LOGICAL_AXES

__all__ = ["LOGICAL_AXES", "STRATEGIES", "AxisRules", "rules"]

#: A logical name maps to no mesh axis (replicated), one axis, or several (in major-to-minor order).
MeshAxes = None | str | tuple[str, ...]

_BATCH: MeshAxes = ("data", "fsdp", "expert")
_EP: dict[str, MeshAxes] = {"experts": "expert"}
#: Every preset splits the activations' sequence over the context axis (a size-1 axis splits
#: nothing); no parameter has a ``length`` dimension.
_LENGTH: MeshAxes = "context"
_TP: dict[str, MeshAxes] = {
    "mlp": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "vocab": "tensor",
}
_PRESETS: dict[str, dict[str, MeshAxes]] = {
    "dp": {"batch": _BATCH, "length": _LENGTH, **_EP},
    "fsdp": {"batch": _BATCH, "length": _LENGTH, "embed": "fsdp", **_EP},
    "tp": {"batch": _BATCH, "length": _LENGTH, **_TP, **_EP},
    "fsdp_tp": {"batch": _BATCH, "length": _LENGTH, "embed": "fsdp", **_TP, **_EP},
    "dp_tp": {"batch": _BATCH, "length": _LENGTH, **_TP, **_EP},
}
STRATEGIES: tuple[str, ...] = tuple(_PRESETS)

# Warn once per (logical name, size, mesh axes): a 48-layer model would otherwise repeat it 48x.
_WARNED: set[tuple[str, int, tuple[str, ...]]] = set()


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


@dataclasses.dataclass(frozen=True)
class AxisRules:
    """A total map from every logical axis name to mesh axes.

    Parameters
    ----------
    mapping : tuple of (str, MeshAxes) pairs
        One pair per name in :data:`LOGICAL_AXES` (plus any extra names you add); ``None`` means
        replicated. Build it with :func:`rules` or :meth:`from_dict`.
    strict : bool
        What to do when a dimension's size is not divisible by its mesh axes (e.g. GPT-2's vocab
        50257 over tensor=2): ``False`` (default) replicates that dimension and warns once;
        ``True`` raises :class:`ValueError`.
    """

    mapping: tuple[tuple[str, MeshAxes], ...]
    strict: bool = False

    def __post_init__(self) -> None:
        names = [name for name, _ in self.mapping]
        if len(set(names)) != len(names):
            raise ValueError(f"AxisRules.mapping names a logical axis twice: {names}")
        for name, axes in self.mapping:
            if not isinstance(name, str):
                raise ValueError(f"AxisRules.mapping: logical name must be a str, got {name!r}")
            for axis in _as_tuple(axes):
                if not isinstance(axis, str):
                    raise ValueError(
                        f"AxisRules.mapping[{name!r}]: mesh axes must be None, a str or a tuple "
                        f"of str, got {axes!r}"
                    )

    @classmethod
    def from_dict(cls, mapping: Mapping[str, MeshAxes], *, strict: bool = False) -> AxisRules:
        """Rules from ``{logical: mesh_axes}``; every name of :data:`LOGICAL_AXES` not given is
        replicated."""
        full: dict[str, MeshAxes] = {name: None for name in LOGICAL_AXES}
        full.update(mapping)
        return cls(tuple((k, _normalise(v)) for k, v in full.items()), strict=strict)

    def as_dict(self) -> dict[str, MeshAxes]:
        """The mapping as a dict."""
        return dict(self.mapping)

    def replace(self, **overrides: MeshAxes) -> AxisRules:
        """A copy with some logical names remapped, e.g. ``rules("fsdp").replace(vocab="fsdp")``."""
        return AxisRules.from_dict({**self.as_dict(), **overrides}, strict=self.strict)

    def flax_rules(self) -> tuple[tuple[str, MeshAxes], ...]:
        """``(logical, mesh_axes)`` pairs for ``flax.nnx.logical_axis_rules`` (eager sharding)."""
        return self.mapping

    @property
    def known(self) -> tuple[str, ...]:
        """Logical names these rules know."""
        return tuple(name for name, _ in self.mapping)

    def mesh_axes(self, name: str) -> tuple[str, ...]:
        """Mesh axes of one logical name; an unknown name → ValueError listing the known ones."""
        table = self.as_dict()
        if name not in table:
            raise ValueError(
                f"unknown logical axis name {name!r}; known names: {', '.join(self.known)}"
            )
        return _as_tuple(table[name])

    def to_mesh_spec(
        self,
        logical: PartitionSpec | Sequence[str | None | tuple[str, ...]],
        mesh: Mesh,
        shape: Sequence[int] | None = None,
    ) -> PartitionSpec:
        """Translate a PartitionSpec of logical names into one of mesh axes of ``mesh``.

        A mesh axis is used once per array (a later dimension asking again is replicated), and,
        when ``shape`` is given, a dimension not divisible by the product of its mesh-axis sizes
        is replicated with a one-time warning (or an error when ``strict``).
        """
        entries = list(logical)
        if shape is not None and len(entries) > len(shape):
            raise ValueError(
                f"partition spec {tuple(entries)} has {len(entries)} entries but the array has "
                f"shape {tuple(shape)}"
            )
        used: set[str] = set()
        out: list[MeshAxes] = []
        for dim, entry in enumerate(entries):
            names = _as_tuple(entry)
            axes: list[str] = []
            for name in names:
                for axis in self.mesh_axes(name):
                    if axis not in mesh.shape:
                        raise ValueError(
                            f"logical axis {name!r} maps to mesh axis {axis!r}, which the mesh "
                            f"{dict(mesh.shape)} does not have"
                        )
                    if axis not in used and axis not in axes:
                        axes.append(axis)
            if shape is not None and axes:
                size = math.prod(mesh.shape[a] for a in axes)
                if shape[dim] % size != 0:
                    label = "/".join(names)
                    msg = (
                        f"dimension {dim} ({label}) of size {shape[dim]} is not divisible by "
                        f"mesh axes {tuple(axes)} of total size {size}"
                    )
                    if self.strict:
                        raise ValueError(msg)
                    key = (label, int(shape[dim]), tuple(axes))
                    if key not in _WARNED:
                        _WARNED.add(key)
                        warnings.warn(msg + "; replicating it", stacklevel=3)
                    axes = []
            used.update(axes)
            out.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
        while out and out[-1] is None:  # canonical form: P('x') rather than P('x', None)
            out.pop()
        return PartitionSpec(*out)


def _normalise(axes: MeshAxes) -> MeshAxes:
    if axes is None or isinstance(axes, str):
        return axes
    axes = tuple(axes)
    return None if not axes else axes[0] if len(axes) == 1 else axes


def rules(strategy: str = "dp", *, strict: bool = False, **overrides: MeshAxes) -> AxisRules:
    """Preset logical-axis rules.

    Parameters
    ----------
    strategy : {"dp", "fsdp", "tp", "fsdp_tp", "dp_tp"}
        ``dp``: params replicated. ``fsdp``: ZeRO-3, ``embed`` → ``fsdp`` (every weight with an
        embed dimension, and its optimizer state, is split). ``tp``/``dp_tp``: Megatron — ``mlp``,
        ``heads``, ``kv_heads`` and ``vocab`` → ``tensor`` (column split of up/QKV projections,
        row split of down/output projections). ``fsdp_tp``: both. In all, ``batch`` →
        ``("data", "fsdp", "expert")``, ``length`` → ``context`` (context parallelism) and
        ``experts`` → ``expert`` (an MoE layer's experts split over the expert axis; a size-1
        axis changes nothing); other names are replicated.
    strict : bool
        Raise instead of replicating a dimension that its mesh axes do not divide.
    **overrides
        Remap logical names, e.g. ``layers="stage"``.

    Returns
    -------
    AxisRules
    """
    if strategy not in _PRESETS:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return AxisRules.from_dict({**_PRESETS[strategy], **overrides}, strict=strict)
