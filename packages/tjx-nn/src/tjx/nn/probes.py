"""Probes: what a model did inside a step, computed in a program of their own.

A replay (the trainer's ``--replay``) recomputes a step of a finished run and asks what happened
in it. The functions here are pure functions of a step's values, to be traced into a probe
program beside (never into) the run's own train step:

* `layer_norms`: the L2 norm of each layer's share of a parameter-shaped tree (gradients,
  updates), a scanned stack's stacked leaves cut per layer;
* `token_losses`: each target's cross-entropy, ``[batch, seq]`` (0 where unscored);
* `recording`: while a model is traced inside it, each layer's largest activation (the block's
  output) and largest attention logit (the scaled ``q·k`` of a position a query sees, before any
  soft cap) are collected. The layers report through `layer_begins` / `layer_ends` (the stack's
  unrolled loop) and `attention_logits` (the attention's kernel call), which do nothing outside
  a recording: a program traced outside one is unchanged. Record an unrolled stack without
  remat (``scan_layers=False``, ``remat="none"``): values traced inside ``nnx.scan`` or
  ``nnx.remat`` cannot leave their transform.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import chex
import jax
import jax.numpy as jnp

from tjx.kernels import AttentionMask

__all__ = [
    "Recording",
    "attention_logits",
    "layer_begins",
    "layer_ends",
    "layer_norms",
    "recording",
    "token_losses",
]

Array = jax.Array


@dataclass
class Recording:
    """The per-layer values of a model traced inside `recording`, in call order.

    Attributes
    ----------
    layers : list of str
        Each layer's name: ``"layer 3"``, a later stack's ``"stack 2 layer 3"`` (an
        encoder-decoder's decoder).
    values : dict
        ``{"activation_max": [...], "attention_logit_max": [...]}``: a float32 scalar per layer
        (``-inf`` for a layer without attention).
    """

    layers: list[str] = field(default_factory=list)
    values: dict[str, list[Array]] = field(
        default_factory=lambda: {"activation_max": [], "attention_logit_max": []}
    )
    _stacks: int = 0
    _open: int | None = None

    def stacked(self) -> dict[str, Array]:
        """Each value over the layers: float32 ``[layers]``."""
        empty = jnp.zeros((0,), jnp.float32)
        return {k: jnp.stack(v) if v else empty for k, v in self.values.items()}


_ACTIVE: list[Recording] = []


@contextlib.contextmanager
def recording() -> Iterator[Recording]:
    """Collect the layers' maxima of the model traced inside the block (see the module)."""
    rec = Recording()
    _ACTIVE.append(rec)
    try:
        yield rec
    finally:
        _ACTIVE.remove(rec)


def layer_begins(index: int) -> None:
    """A stack's layer ``index`` starts (its attention reports to it)."""
    if not _ACTIVE:
        return
    rec = _ACTIVE[-1]
    if index == 0:
        rec._stacks += 1
    name = f"layer {index}" if rec._stacks <= 1 else f"stack {rec._stacks} layer {index}"
    rec.layers.append(name)
    rec.values["attention_logit_max"].append(jnp.asarray(-jnp.inf, jnp.float32))
    rec.values["activation_max"].append(jnp.asarray(-jnp.inf, jnp.float32))
    rec._open = len(rec.layers) - 1


def layer_ends(x: Array) -> None:
    """The open layer's output ``x``: its largest absolute value is recorded."""
    if not _ACTIVE or _ACTIVE[-1]._open is None:
        return
    rec = _ACTIVE[-1]
    assert rec._open is not None
    rec.values["activation_max"][rec._open] = jnp.max(jnp.abs(x)).astype(jnp.float32)
    rec._open = None


def attention_logits(q: Array, k: Array, mask: AttentionMask, *, scale: float | None) -> None:
    """Record the open layer's largest attention logit: ``scale · q·k`` over the (query, key)
    pairs the attention lets a query see (``mask``'s causal order, segment and window).

    ``q`` ``[b, s, heads, d]``, ``k`` ``[b, s_kv, kv_heads, d]``; the mask's segment ids
    ``[b, s]`` or a ``(q_ids, kv_ids)`` pair; ``scale`` None: ``1/sqrt(d)``. Computed whole
    (``[b, heads, s, s_kv]``): a probe's cost, not a step's.
    """
    if not _ACTIVE or _ACTIVE[-1]._open is None:
        return
    rec = _ACTIVE[-1]
    assert rec._open is not None
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    groups = q.shape[2] // k.shape[2]
    kk = jnp.repeat(k, groups, axis=2) if groups > 1 else k
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), kk.astype(jnp.float32)) * scale
    s, s_kv = q.shape[1], k.shape[1]
    rows = jnp.arange(s)[:, None] + (s_kv - s)  # each query's position among the keys
    cols = jnp.arange(s_kv)[None, :]
    causal, window, segment_ids = mask.causal, mask.window, mask.segment_ids
    seen = jnp.ones((s, s_kv), bool)
    if causal:
        seen = seen & (cols <= rows)
    if window is not None:
        seen = seen & (rows - cols < window)
    visible = jnp.broadcast_to(seen, (q.shape[0], 1, s, s_kv))
    if segment_ids is not None:
        q_ids, kv_ids = segment_ids if isinstance(segment_ids, tuple) else (segment_ids,) * 2
        same = (q_ids[:, :, None] == kv_ids[:, None, :]) & (q_ids[:, :, None] > 0)
        visible = visible & same[:, None]
    top = jnp.max(jnp.where(visible, logits, -jnp.inf))
    rec.values["attention_logit_max"][rec._open] = top.astype(jnp.float32)


def _layer_of(path: tuple[Any, ...]) -> tuple[str, bool]:
    """A leaf's group and whether it is stacked over layers (a scanned stack's leading axis)."""
    keys = [getattr(p, "key", getattr(p, "idx", getattr(p, "name", p))) for p in path]
    if "layers" in keys:
        i = keys.index("layers")
        nxt = keys[i + 1] if i + 1 < len(keys) else None
        if isinstance(nxt, int) or (isinstance(nxt, str) and nxt.isdigit()):
            return f"layer {int(nxt)}", False
        return "layers", True
    if "segments" in keys:
        i = keys.index("segments")
        return f"segment {keys[i + 1]}", False
    return str(keys[0]), False


def layer_norms(tree: chex.ArrayTree) -> dict[str, Array]:
    """The L2 norm of each layer's leaves of a parameter-shaped ``tree`` (a model's pure dict:
    gradients, updates, parameters), float32 scalars by name: ``"layer 0"``, ``"layer 1"``, …
    (a scanned stack's stacked leaves cut along their leading axis), and the other top-level
    modules by their own name (``"embed"``, ``"final_norm"``, ``"head"``); a mixed stack's
    segments whole (``"segment 0"``).

    >>> import jax.numpy as jnp
    >>> grads = {"embed": {"w": jnp.ones((2, 2))},
    ...          "stack": {"layers": {"mlp": {"w": jnp.stack([jnp.zeros(3), jnp.full(3, 2.0)])}}}}
    >>> {k: float(v) for k, v in sorted(layer_norms(grads).items())}
    {'embed': 2.0, 'layer 0': 0.0, 'layer 1': 3.464...}
    """
    squares: dict[str, Array] = {}
    stacked: list[Array] = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if leaf is None or not hasattr(leaf, "dtype"):
            continue
        x = jnp.square(jnp.asarray(leaf).astype(jnp.float32))
        group, per_layer = _layer_of(path)
        if per_layer and x.ndim >= 1:
            stacked.append(jnp.sum(x.reshape(x.shape[0], -1), axis=1))
            continue
        squares[group] = squares.get(group, jnp.zeros((), jnp.float32)) + jnp.sum(x)
    if stacked:
        total = sum(stacked[1:], stacked[0])
        for i in range(total.shape[0]):
            name = f"layer {i}"
            squares[name] = squares.get(name, jnp.zeros((), jnp.float32)) + total[i]
    return {k: jnp.sqrt(v) for k, v in squares.items()}


def token_losses(logits: Array, targets: Array, ignore_index: int = -100) -> Array:
    """Each target's cross-entropy ``logsumexp(logits) - logits[target]`` in float32,
    ``[...]`` like ``targets``; 0 where the target is ``ignore_index``."""
    logits = logits.astype(jnp.float32)
    scored = targets != ignore_index
    safe = jnp.where(scored, targets, 0)
    picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    loss = jax.nn.logsumexp(logits, axis=-1) - picked
    return jnp.where(scored, loss, 0.0)
