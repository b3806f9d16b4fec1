"""``build_optimizer``: the whole gradient-processing chain from one ``OptimizerConfig``.

The chain, outermost first (every stage's state is a NamedTuple that ``step_report`` finds)::

    [flat_groups]                               flat_update: the rest over a few flat buffers
    [optax.MultiSteps]                          accumulation_mode="multi_steps", k > 1
      optax.chain(
        [dynamic_loss_scale]                    loss_scale="dynamic": unscale, adapt the scale
        clip_by_global_norm_with_stats          record pre-clip norm; clip if clip_norm is set
        [skip_nonfinite](                       optax.apply_if_finite: skip + count NaN/Inf steps
          optax.chain(
            optimizer core (learning rate 1)    the optimizer, weight decay under the mask
            scale_by_schedule_with_stats)))     times lr(count); records the rate
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import optax
from optax import contrib

from tjx.optim.config import DEFAULT_LEARNING_RATES, OptimizerConfig
from tjx.optim.flat import (
    FLAT_OPTIMIZERS,
    FlatLayout,
    FlatState,
    flat_groups,
    to_flat_state,
    to_per_leaf_state,
)
from tjx.optim.loss_scale import dynamic_loss_scale
from tjx.optim.masks import decay_mask
from tjx.optim.muon import muon_dimension_numbers
from tjx.optim.schedules import build_schedule
from tjx.optim.transforms import (
    clip_by_global_norm_with_stats,
    scale_by_schedule_with_stats,
    skip_nonfinite,
)

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "build_optimizer",
    "learning_rate_schedule",
    "optimizer_core",
    "relayout_state",
    "uses_flat_update",
]


def learning_rate_schedule(
    config: OptimizerConfig, total_steps: int | None = None
) -> optax.ScalarOrSchedule:
    """``build_schedule(config.schedule, total_steps)`` over a run of ``total_steps`` steps, else
    ``config.learning_rate``, else the default (a constant rate needs no run length)."""
    if config.schedule is not None:
        return build_schedule(config.schedule, total_steps)
    if config.learning_rate is not None:
        return float(config.learning_rate)
    return DEFAULT_LEARNING_RATES[config.name]


def _l2(weight_decay: float, mask: Any) -> list[optax.GradientTransformation]:
    # Coupled (L2) decay: added to the gradient before the optimizer's statistics see it.
    return [optax.add_decayed_weights(weight_decay, mask)] if weight_decay > 0 else []


def optimizer_core(
    config: OptimizerConfig, *, axes: Any = None, mask: Any = None
) -> optax.GradientTransformation:
    """The bare optimizer with learning rate 1 (updates already point downhill).

    Multiply by the learning rate afterwards (``scale_by_schedule_with_stats``) to get the
    optimizer; weight decay is masked by ``decay_mask`` with the config's regexes.

    Parameters
    ----------
    config
        Any ``OptimizerConfig``; ``None`` hyper-parameters take the per-optimizer defaults.
    axes
        The params' logical axis names (see ``build_optimizer``); None: the path rules.
    mask
        The weight-decay mask itself (a tree of bools or a function of the params), instead of
        the one ``decay_mask`` reads from ``axes`` and the config's regexes.

    Returns
    -------
    optax.GradientTransformation
    """
    c = config.resolved()
    if mask is None:
        mask = _decays(c, axes)
    wd = float(c.weight_decay or 0.0)
    b1, b2, eps = c.b1, c.b2, c.eps
    if c.name == "adamw":
        return optax.adamw(1.0, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=mask)  # type: ignore[arg-type]
    if c.name == "adam":
        return optax.chain(*_l2(wd, mask), optax.adam(1.0, b1=b1, b2=b2, eps=eps))  # type: ignore[arg-type]
    if c.name == "sgd":
        momentum = c.momentum or None  # optax: None means plain SGD
        sgd = optax.sgd(1.0, momentum=momentum, nesterov=bool(c.nesterov))
        return optax.chain(*_l2(wd, mask), sgd)
    if c.name == "lamb":
        return optax.lamb(1.0, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=mask)  # type: ignore[arg-type]
    if c.name == "lion":
        return optax.lion(1.0, b1=b1, b2=b2, weight_decay=wd, mask=mask)  # type: ignore[arg-type]
    if c.name == "adafactor":
        return optax.adafactor(
            learning_rate=None,
            min_dim_size_to_factor=c.adafactor_min_dim_size_to_factor,
            factored=c.adafactor_factored,
            eps=eps,  # type: ignore[arg-type]
            weight_decay_rate=wd if wd > 0 else None,
            weight_decay_mask=mask,
        )
    # "muon": optax.contrib.muon exists in optax 0.2.8, so use it. Its AdamW half holds
    # embeddings, the head and vectors, which the default mask exempts anyway, so no decay there.
    return contrib.muon(
        learning_rate=1.0,
        ns_steps=c.muon_ns_steps,
        beta=c.momentum,  # type: ignore[arg-type]
        eps=eps,  # type: ignore[arg-type]
        weight_decay=wd,
        weight_decay_mask=mask,
        nesterov=bool(c.nesterov),
        adam_b1=b1,  # type: ignore[arg-type]
        adam_b2=b2,  # type: ignore[arg-type]
        adam_weight_decay=0.0,
        adam_learning_rate=c.muon_adam_lr_ratio,
        muon_weight_dimension_numbers=functools.partial(
            muon_dimension_numbers,
            axes=axes,
            stacked=c.muon_stacked_layers,
            exclude_regex=c.muon_exclude_regex,
        ),
    )


def _decays(c: OptimizerConfig, axes: Any) -> Any:
    return functools.partial(
        decay_mask, axes=axes, decay_regex=c.decay_mask_regex, no_decay_regex=c.no_decay_regex
    )


def flat_layout(config: OptimizerConfig, params: Any, *, axes: Any = None) -> FlatLayout:
    """The layout of the flat buffers `build_optimizer`'s flat chain (`uses_flat_update`) cuts
    ``params`` into: params held in it (`FlatParams`) are the chain's own buffers, so flattening
    them or the chain's updates launches nothing.

    Parameters
    ----------
    config
        A validated ``OptimizerConfig``.
    params
        The parameter tree (arrays or ``jax.ShapeDtypeStruct``).
    axes
        As `build_optimizer`'s.
    """
    return FlatLayout(params, _decays(config.resolved(), axes)(params))


def uses_flat_update(config: OptimizerConfig, *, whole_params: bool = True) -> bool:
    """Whether `build_optimizer` runs the chain over flat buffers (`tjx.optim.flat`).

    ``flat_update="auto"``: for the elementwise optimizers (`FLAT_OPTIMIZERS`) when the params
    are whole on each device; ``"on"`` / ``"off"``: always / never.

    Raises
    ------
    ValueError
        ``"on"`` with params split over devices (they would be gathered to be concatenated).
    """
    if config.flat_update == "off":
        return False
    if config.flat_update == "on":
        if not whole_params:
            raise ValueError(
                "OptimizerConfig.flat_update='on' needs each parameter whole on every device "
                "(one device or data parallelism); set it to 'auto' (per leaf when sharded)"
            )
        return True
    return config.name in FLAT_OPTIMIZERS and whole_params


def build_optimizer(
    config: OptimizerConfig,
    *,
    total_steps: int | None = None,
    schedule: optax.Schedule | None = None,
    axes: Any = None,
    whole_params: bool = True,
) -> optax.GradientTransformation:
    """The whole chain: loss scaling, clipping, non-finite skip, masked optimizer, schedule.

    Parameters
    ----------
    config
        A validated ``OptimizerConfig``.
    total_steps
        The run's steps, which ``config.schedule`` spans (`build_schedule`); a constant rate
        needs none. None with a schedule: deprecated (until 0.17), as `build_schedule`'s.
    schedule
        The learning rate's schedule, built already (`build_schedule` of ``config.schedule``
        over the run): an app that builds it once hands it to each optimizer it builds, which
        then needs no ``total_steps``. Not with ``total_steps``.
    axes
        The params' logical axis names: a pytree like the params whose leaves are name tuples
        or ``PartitionSpec``s (``nnx.get_partition_spec`` of the params, as a pure dict when the
        params are one). The default weight-decay mask and Muon's selection read them; a leaf
        without names (or ``axes=None``) falls back to the path rules of ``decay_mask`` and
        ``muon_dimension_numbers``. The config's regexes override either.
    whole_params
        Each parameter is whole on every device (one device, or data parallelism only): what
        ``flat_update="auto"`` needs to run the chain over flat buffers (`uses_flat_update`).

    Returns
    -------
    optax.GradientTransformation
        Use as any optax optimizer: ``tx.init(params)``, ``tx.update(grads, state, params)``
        (``params`` is required: weight decay and some optimizers read it). Pass the state to
        ``step_report`` for lr, norms, clipped/skipped flags and counters.
    """
    if schedule is not None and total_steps is not None:
        raise ValueError("build_optimizer: pass total_steps or a built schedule, not both")
    c = config.resolved()
    # Once: each flat group's chain shares it.
    rate = schedule if schedule is not None else learning_rate_schedule(c, total_steps)
    if uses_flat_update(c, whole_params=whole_params):
        # The same chain over {group: flat buffer}; its decay mask is one bool per group.
        return flat_groups(lambda mask: _chain(c, mask, axes, rate), _decays(c, axes))
    return _chain(c, _decays(c, axes), axes, rate)


def _chain(
    c: OptimizerConfig, mask: Any, axes: Any, rate: optax.ScalarOrSchedule
) -> optax.GradientTransformation:
    inner: optax.GradientTransformation = optax.chain(
        optimizer_core(c, axes=axes, mask=mask),
        scale_by_schedule_with_stats(rate),
    )
    if c.skip_nonfinite:
        inner = skip_nonfinite(inner)
    stages: list[optax.GradientTransformation] = []
    if c.loss_scale == "dynamic":
        stages.append(
            dynamic_loss_scale(
                init_scale=c.loss_scale_init,
                growth_interval=c.loss_scale_growth_interval,
                min_scale=c.loss_scale_min,
                max_scale=c.loss_scale_max,
            )
        )
    stages += [clip_by_global_norm_with_stats(c.clip_norm), inner]
    tx: optax.GradientTransformation = optax.chain(*stages)
    if c.accumulation_mode == "multi_steps" and c.accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=c.accumulation_steps).gradient_transformation()
    return tx


def relayout_state(
    config: OptimizerConfig,
    state: Any,
    params: Any,
    target: Any,
    *,
    axes: Any = None,
    trainable: Any = None,
) -> Any:
    """The state of `build_optimizer` run one way (flat buffers or per leaf) laid out the other.

    A checkpoint keeps the layout of the run that saved it; one saved flat resumes on a mesh
    that splits the parameters (which runs per leaf) after this, and the other way round. The
    values are the same numbers, cut or concatenated (`tjx.optim.flat`).

    Parameters
    ----------
    config
        The run's ``OptimizerConfig`` (its weight-decay mask makes the groups).
    state
        The restored state, in one layout.
    params
        The params ``state`` belongs to.
    target
        A state in the other layout (or its ``jax.eval_shape``): its structure is the result's.
    axes
        As `build_optimizer`'s.
    trainable
        The bool tree `only_trainable` was given, if the chain is wrapped in it (its chain sees
        the trainable leaves only).

    Returns
    -------
    Any
        ``state`` with ``target``'s structure.
    """
    seen = params
    if trainable is not None:  # optax.masked hands the wrapped chain these
        seen = jax.tree.map(lambda p, m: p if m else optax.MaskedNode(), params, trainable)
    layout = FlatLayout(seen, _decays(config.resolved(), axes)(seen))
    is_flat = any(
        isinstance(x, FlatState)
        for x in jax.tree.leaves(target, is_leaf=lambda x: isinstance(x, FlatState))
    )
    if is_flat:
        return to_flat_state(state, target, layout, seen)
    return to_per_leaf_state(state, layout)
