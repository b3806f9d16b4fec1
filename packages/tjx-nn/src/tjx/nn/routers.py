"""MoE routers: which experts each token goes to, with which weights, from the router's logits.

A router is a pure function of the float32 (``router_dtype``) logits ``[t, E]``, the layer's
balancing bias (``None`` for a router without one) and the model config; it returns a `Routing`.
``ROUTERS`` holds them by name (the config's ``router`` field); a new router (DeepSeek-V3's grouped
top-k) is one more entry made with `register_router`, reading its own config fields.

- ``softmax`` (Mixtral, Qwen-MoE): probabilities ``softmax(logits)``; the ``k`` largest are
  chosen; with ``router_norm_topk`` their weights are renormalised to sum to 1 (Mixtral, Qwen3),
  else they keep their probabilities (Qwen1.5/2-MoE's ``norm_topk_prob=False``).
- ``sigmoid`` (DeepSeek-V3's auxiliary-loss-free balancing): scores ``sigmoid(logits)``; the
  ``k`` largest of ``scores + bias`` are chosen, but the weights are the scores themselves
  (renormalised with ``router_norm_topk``). The bias only steers the choice: it gets no gradient
  and is moved by ``moe.update_router_bias`` after each step instead.
- ``sigmoid_plain``: ``sigmoid`` without the bias: the ``k`` best scores weigh their experts
  (with the config's ``router_scales_input`` each expert's input is scaled by it instead).

Both take DeepSeek's grouped top-k (``router_groups`` > 1): the experts are split into equal
groups, each token keeps its ``router_topk_groups`` best groups and chooses its ``k`` experts
among theirs; a group's score is its best probability (softmax, DeepSeek-V2's
``group_limited_greedy``) or the sum of its two best ``scores + bias`` (sigmoid, DeepSeek-V3).
The chosen weights are multiplied by ``router_scale`` (DeepSeek's ``routed_scaling_factor``)
after any renormalisation.

``probs`` ``[t, E]`` (each row summing to 1) is what the load-balancing loss reads as the router's
intent (Switch's ``P_e``): the softmax itself, or the sigmoid scores normalised per token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Routing(NamedTuple):
    """What a router decided for ``t`` tokens choosing ``k`` of ``E`` experts."""

    #: ``[t, k]`` float (the router's dtype): each choice's weight in the token's output.
    weights: Array
    #: ``[t, k]`` int32: the chosen experts, in decreasing order of preference.
    experts: Array
    #: ``[t, E]`` float: the router's distribution over experts (rows sum to 1), for the
    #: load-balancing loss.
    probs: Array


RouterFn = Callable[[Array, "Array | None", Any], Routing]


class Router(NamedTuple):
    """A registered router: its function and whether its layers hold a balancing bias ``[E]``."""

    fn: RouterFn
    bias: bool


def _normalise(weights: Array, on: bool) -> Array:
    if not on:
        return weights
    # DeepSeek's 1e-20 keeps an all-zero row (sigmoid underflow) finite.
    return weights / (jnp.sum(weights, axis=-1, keepdims=True) + 1e-20)


def _weights(weights: Array, config: Any) -> Array:
    """The chosen weights as the token's output takes them: renormalised if asked, scaled."""
    weights = _normalise(weights, config.moe.router_norm_topk)
    scale = config.moe.router_scale
    return weights if scale == 1.0 else weights * jnp.asarray(scale, weights.dtype)


def _in_best_groups(steer: Array, config: Any, group_score: Callable[[Array], Array]) -> Array:
    """``steer`` ``[t, E]`` with the experts outside each token's ``router_topk_groups`` best
    groups (by ``group_score`` of ``[t, G, E/G]``) at -inf; unchanged with one group."""
    groups = config.moe.router_groups
    if groups == 1:
        return steer
    t, e = steer.shape
    _, best = jax.lax.top_k(
        group_score(steer.reshape(t, groups, e // groups)), config.moe.router_topk_groups
    )
    keep = jnp.zeros((t, groups), bool).at[jnp.arange(t)[:, None], best].set(True)
    return jnp.where(jnp.repeat(keep, e // groups, axis=1), steer, -jnp.inf)


def softmax_topk(logits: Array, bias: Array | None, config: Any) -> Routing:
    """Mixtral's router: softmax over all experts, the top ``k``, optionally renormalised
    (DeepSeek-V2: from the best groups, scaled)."""
    del bias
    probs = jax.nn.softmax(logits, axis=-1)
    steer = _in_best_groups(probs, config, lambda g: jnp.max(g, axis=-1))
    _, experts = jax.lax.top_k(steer, config.moe.experts_per_token)
    weights = jnp.take_along_axis(probs, experts, axis=-1)
    return Routing(_weights(weights, config), experts.astype(jnp.int32), probs)


def sigmoid_bias_topk(logits: Array, bias: Array | None, config: Any) -> Routing:
    """DeepSeek-V3's router: sigmoid scores; the top ``k`` of ``scores + bias`` are chosen, the
    scores (not the bias) weigh them."""
    scores = jax.nn.sigmoid(logits)
    steer = scores if bias is None else scores + jax.lax.stop_gradient(bias).astype(scores.dtype)
    steer = _in_best_groups(steer, config, lambda g: jnp.sum(jax.lax.top_k(g, 2)[0], axis=-1))
    _, experts = jax.lax.top_k(steer, config.moe.experts_per_token)
    weights = jnp.take_along_axis(scores, experts, axis=-1)
    probs = scores / (jnp.sum(scores, axis=-1, keepdims=True) + 1e-20)
    return Routing(_weights(weights, config), experts.astype(jnp.int32), probs)


#: Routers by the name the config's ``router`` field takes: ``sigmoid_plain`` is the sigmoid
#: router without a balancing bias (the top ``k`` logits, each weighed by its sigmoid).
ROUTERS: dict[str, Router] = {
    "softmax": Router(softmax_topk, bias=False),
    "sigmoid": Router(sigmoid_bias_topk, bias=True),
    "sigmoid_plain": Router(sigmoid_bias_topk, bias=False),
}


def register_router(name: str, fn: RouterFn, *, bias: bool = False) -> None:
    """Add a router under ``name`` (a config may then say ``router=name``).

    Parameters
    ----------
    name : str
        The config's value.
    fn : callable
        ``fn(logits [t, E], bias [E] or None, config) -> Routing``.
    bias : bool
        Whether its MoE layers hold a balancing bias (moved by ``moe.update_router_bias``).
    """
    if name in ROUTERS:
        raise ValueError(f"router {name!r} is already registered")
    ROUTERS[name] = Router(fn, bias)
