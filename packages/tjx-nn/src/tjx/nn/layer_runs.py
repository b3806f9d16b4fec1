"""How a scanned stack mixing layers of different kinds (dense and MoE MLPs, attention and delta
token mixers) is laid out: the fewest repeating runs (`segments`), each a scan over copies of a
`Unit` of blocks (`scanned`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from flax import nnx

from tjx.nn.block import Block


class LayerKind(NamedTuple):
    """What a layer's parameters are: an MoE MLP or a dense one, and its token mixer
    (``attention`` or ``delta``)."""

    moe: bool
    mixer: str = "attention"


class Segment(NamedTuple):
    """A run of a scanned stack: ``repeats`` copies of ``unit`` (each position's `LayerKind`),
    starting at layer ``start``."""

    start: int
    unit: tuple[LayerKind, ...]
    repeats: int


def segments(kinds: tuple[LayerKind, ...], max_period: int) -> tuple[Segment, ...]:
    """Cut a stack's layer kinds into the fewest repeating runs a scan can stack.

    Each run repeats a unit of at most ``max_period`` layers (ties: the longer first run). A dense
    or all-MoE stack is one run of period 1; DeepSeek's first dense layers are a run of their own
    before the MoE run; Qwen2-MoE's every-other-layer MoE is one run of the unit (dense, MoE);
    Qwen3.5's three delta layers and an attention one are one run of that unit of four.
    """
    n = len(kinds)
    # fewest[i]: (runs needed for kinds[i:], the first run as (period, repeats)); a small DP.
    fewest: list[tuple[int, tuple[int, int]]] = [(0, (0, 0))] * (n + 1)
    for i in range(n - 1, -1, -1):
        best = (n + 1, 0, (1, 1))  # (runs, -layers the first run covers, its (period, repeats))
        for p in range(1, min(max_period, n - i) + 1):
            unit = kinds[i : i + p]
            r = 1
            while kinds[i + r * p : i + (r + 1) * p] == unit:
                r += 1
            for reps in range(r, 0, -1):
                best = min(best, (1 + fewest[i + reps * p][0], -reps * p, (p, reps)))
        fewest[i] = (best[0], best[2])
    out: list[Segment] = []
    i = 0
    while i < n:
        p, reps = fewest[i][1]
        out.append(Segment(i, kinds[i : i + p], reps))
        i += p * reps
    return tuple(out)


class Unit(nnx.Module):
    """One repeat of a segment: its blocks in order (stacked over the repeats when scanned)."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = nnx.List(blocks)


def scanned(make: Callable[[nnx.Rngs], Any], rngs: nnx.Rngs, n: int) -> Any:
    """``n`` modules made by ``make`` under ``nnx.vmap``: parameters gain a leading ``layers``
    axis (each copy initialised from its own key)."""
    layer_rngs = nnx.Rngs(params=rngs.params())

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(r: nnx.Rngs) -> Any:
        return make(r)

    return create(layer_rngs)
