"""LoRA: low-rank adapters on a model's projections, named by their logical role.

``add_lora(model, LoraConfig(rank=8, alpha=16, targets=("q", "v")), rngs=...)`` puts a
`LoRAAdapter` beside every projection of those roles, in place:

======  ==============================  ======  ==============================
role    projection                      role    projection
======  ==============================  ======  ==============================
``q``   attention query (``query``)     ``gate``  gated MLP's gate (``fc_gate``)
``k``   attention key (``key``)         ``up``    MLP input (``fc_in``)
``v``   attention value (``value``)     ``down``  MLP output (``fc_out``)
``o``   attention output (``out``)
======  ==============================  ======  ==============================

The update is ``(alpha / rank) · dropout(x) · A · B`` (``alpha / √rank`` with ``rslora``), PEFT's
definition, with ``A`` drawn as PEFT draws it (uniform in ``±1/√fan_in``) and ``B = 0``: the
adapted model computes exactly what the base model computes until ``B`` is trained. Adapters are
``nnx.LoRAParam`` leaves (a subclass of ``nnx.Param``), so ``nnx.split(model, nnx.LoRAParam,
nnx.Param, ...)`` separates what trains from what stays frozen, and ``nnx.state(model,
nnx.Param)`` (checkpoints, ``get_flat_params``) holds both.

`merge_lora` folds the adapters into the kernels (an ordinary model again); `save_hf` writes a
model with adapters merged; `save_peft` writes them as a PEFT adapter. `adapters_off` is the same
model with its adapters zeroed (no copy of the weights): DPO's reference model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx.nn.attention import Attention
from tjx.nn.linear import Dense, LoRAAdapter
from tjx.nn.lora_config import LORA_ROLES, LoraConfig
from tjx.nn.mlp import MLP
from tjx.nn.params import is_stacked

__all__ = [
    "LORA_ROLES",
    "LoraConfig",
    "adapters_off",
    "add_lora",
    "has_lora",
    "lora_modules",
    "lora_param_count",
    "merge_lora",
    "merged_readers",
    "projections",
]

_ATTENTION = {"query": "q", "key": "k", "value": "v", "out": "o"}
_MLP = {"fc_gate": "gate", "fc_in": "up", "fc_out": "down"}


def projections(model: nnx.Module) -> Iterator[tuple[tuple[Any, ...], str, Dense]]:
    """``(path, role, dense)`` of every projection of ``model`` that has a role."""
    for path, node in nnx.iter_graph(model):
        names = _ATTENTION if isinstance(node, Attention) else _MLP if isinstance(node, MLP) else {}
        for attr, role in names.items():
            dense = getattr(node, attr, None)
            if isinstance(dense, Dense):
                yield (*path, attr), role, dense


def _adapter(dense: Dense, config: LoraConfig, key: jax.Array) -> LoRAAdapter:
    kernel = dense.kernel
    names = tuple(kernel.get_metadata().get("out_sharding") or (None,) * kernel.ndim)
    lead = 1 if is_stacked(kernel) else 0
    n_in = dense.n_in
    in_shape, out_shape = kernel.shape[lead : lead + n_in], kernel.shape[lead + n_in :]
    in_names, out_names = names[lead : lead + n_in], names[lead + n_in :]
    layers, layer_names = kernel.shape[:lead], names[:lead]
    fan_in = int(np.prod(in_shape))
    bound = 1.0 / np.sqrt(fan_in)  # PEFT: kaiming_uniform(a=√5) of A is U(±1/√fan_in)
    a = jax.random.uniform(key, (*layers, *in_shape, config.rank), jnp.float32, -bound, bound)
    b = jnp.zeros((*layers, config.rank, *out_shape), jnp.float32)
    # The rank axis is `lora_rank` (replicated by every strategy); the rest shard as the kernel.
    rank = "lora_rank"
    a_var = nnx.LoRAParam(a, out_sharding=(*layer_names, *in_names, rank), eager_sharding=False)
    b_var = nnx.LoRAParam(b, out_sharding=(*layer_names, rank, *out_names), eager_sharding=False)
    return LoRAAdapter(a_var, b_var, scale=config.scale, rate=config.dropout)


def add_lora(model: nnx.Module, config: LoraConfig, *, rngs: nnx.Rngs) -> list[str]:
    """Put an adapter beside every projection whose role ``config.targets`` names, in place.

    Parameters
    ----------
    model : nnx.Module
        A tjx model (scanned stacks get adapters with a leading ``layers`` axis).
    config : LoraConfig
        Rank, alpha, dropout and target roles.
    rngs : nnx.Rngs
        ``A``'s initialisation (the ``params`` stream) and, with ``dropout > 0`` on a model that
        has no dropout of its own, the model's dropout stream (``dropout``, else ``default``).

    Returns
    -------
    list of str
        The adapted projections' paths (``"stack/layers/attn/query"``, ...).

    Raises
    ------
    ValueError
        A target role that matches no projection of this model (naming the roles it has), or a
        model that already has adapters.
    """
    found = list(projections(model))
    if any(dense.lora is not None for _, _, dense in found):
        raise ValueError("the model already has LoRA adapters; add them once (merge_lora first)")
    chosen = [(path, dense) for path, role, dense in found if role in config.targets]
    present = {role for _, role, _ in found}
    missing = [t for t in config.targets if t not in present]
    if missing or not chosen:
        has = [r for r in LORA_ROLES if r in present]
        raise ValueError(
            f"LoRA targets {missing or list(config.targets)} match no projection of this "
            f"{type(model).__name__}; its projections are {has}"
        )
    for _, dense in chosen:
        dense.lora = _adapter(dense, config, rngs.params())
    if config.dropout > 0 and getattr(model, "dropout_rngs", "absent") is None:
        try:
            stream = nnx.Rngs(dropout=rngs.dropout())
            model.dropout_rngs = nnx.data(stream)  # type: ignore[attr-defined]
        except AttributeError as err:
            raise ValueError(
                "LoRA dropout > 0 on a model without dropout needs a `dropout` (or default) "
                "stream in rngs: nnx.Rngs(params=..., dropout=...)"
            ) from err
    return ["/".join(map(str, path)) for path, _ in chosen]


def add_saved_lora(model: nnx.Module, saved: Mapping[str, Any] | None) -> bool:
    """Add the adapters a run trained with, so its checkpoint restores into ``model``.

    Parameters
    ----------
    model : nnx.Module
        The run's model, built without adapters.
    saved : mapping or None
        The run's saved ``lora`` config section: ``enabled`` and `LoraConfig`'s fields.

    Returns
    -------
    bool
        Whether adapters were added (`merge_lora` then folds the restored ones in).
    """
    settings = dict(saved or {})
    if not settings.pop("enabled", False):
        return False
    add_lora(model, LoraConfig(**settings), rngs=nnx.Rngs(0))  # the restore overwrites them
    return True


def lora_modules(model: nnx.Module) -> Iterator[tuple[tuple[Any, ...], str, Dense]]:
    """``(path, role, dense)`` of every projection that holds an adapter."""
    return ((p, r, d) for p, r, d in projections(model) if d.lora is not None)


def has_lora(model: nnx.Module) -> bool:
    """Whether any projection of ``model`` holds an adapter."""
    return any(True for _ in lora_modules(model))


def lora_param_count(model: nnx.Module) -> int:
    """Trainable adapter parameters of ``model`` (0 without adapters)."""
    leaves = jax.tree.leaves(nnx.state(model, nnx.LoRAParam))
    return int(sum(np.prod(x.shape) for x in leaves))


def _delta(adapter: LoRAAdapter, stacked: bool) -> jax.Array:
    """``scale · A · B`` in float32, shaped like the kernel (per layer when stacked)."""
    a, b = adapter.lora_a[...].astype(jnp.float32), adapter.lora_b[...].astype(jnp.float32)
    if stacked:
        return adapter.scale * jax.vmap(lambda x, y: jnp.tensordot(x, y, axes=1))(a, b)
    return adapter.scale * jnp.tensordot(a, b, axes=1)


def merge_lora(model: nnx.Module) -> int:
    """Fold every adapter into its kernel (``W + scale · A · B``) and remove it, in place.

    The kernel keeps its dtype; the sum is taken in float32. Returns how many were merged.
    """
    merged = 0
    for _, _, dense in list(lora_modules(model)):
        assert dense.lora is not None
        kernel = dense.kernel
        total = kernel[...].astype(jnp.float32) + _delta(dense.lora, is_stacked(kernel))
        kernel.set_value(total.astype(kernel[...].dtype))
        dense.lora = None
        merged += 1
    return merged


def merged_readers(
    model: nnx.Module, readers: dict[str, Callable[[], np.ndarray]]
) -> dict[str, Callable[[], np.ndarray]]:
    """``params_io.param_readers(model)`` with each adapted kernel read merged (float32 sum,
    cast back) and the adapter entries dropped: an export of one tensor at a time."""
    out = {k: v for k, v in readers.items() if ".lora." not in k}
    for path, _, dense in lora_modules(model):
        adapter = dense.lora
        assert adapter is not None
        for name, layer in _kernel_names(path, dense):
            out[name] = _merged(readers[name], adapter, layer)
    return out


def _kernel_names(path: tuple[Any, ...], dense: Dense) -> list[tuple[str, int | None]]:
    """The unrolled names (``params_io`` naming) of a projection's kernel, with the layer each
    is in a scanned stack (None when the kernel is not stacked)."""
    parts = [str(p) for p in path]
    if not is_stacked(dense.kernel):
        return [(".".join([*parts, "kernel"]), None)]
    i = parts.index("layers") + 1
    return [
        (".".join([*parts[:i], str(layer), *parts[i:], "kernel"]), layer)
        for layer in range(dense.kernel.shape[0])
    ]


def _merged(
    read: Callable[[], np.ndarray], adapter: LoRAAdapter, layer: int | None
) -> Callable[[], np.ndarray]:
    def value() -> np.ndarray:
        base = read()
        a = np.asarray(adapter.lora_a[...], np.float32)
        b = np.asarray(adapter.lora_b[...], np.float32)
        if layer is not None:
            a, b = a[layer], b[layer]
        delta = adapter.scale * np.tensordot(a, b, axes=1)
        return (base.astype(np.float32) + delta).astype(base.dtype)

    return value


def adapters_off(model: nnx.Module) -> nnx.Module:
    """The same model with every adapter zeroed: the base model's outputs exactly (``x · A · 0``
    adds 0), sharing the frozen weights rather than copying them. Inside a traced loss this is
    DPO's reference model for free; wrap its outputs in ``jax.lax.stop_gradient``."""
    graphdef, adapters, rest = nnx.split(model, nnx.LoRAParam, ...)  # type: ignore[misc]
    return nnx.merge(graphdef, jax.tree.map(jnp.zeros_like, adapters), rest)
