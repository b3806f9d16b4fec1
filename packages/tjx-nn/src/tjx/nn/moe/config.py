"""The mixture-of-experts settings of a model config: their checks and which layers they touch.

A decoder config with ``num_experts > 0`` replaces the dense MLP of some layers by an MoE block
(``moe.MoE``). Which layers: layer ``i`` (from 0) is MoE when ``i >= moe_first_dense`` (DeepSeek's
``first_k_dense_replace``) and ``(i + 1) % moe_layer_step == 0`` (Qwen2-MoE's
``decoder_sparse_step``: every k-th layer, counted from 1). Mixtral is ``moe_layer_step=1``,
``moe_first_dense=0``: every layer.

With ``num_experts == 0`` (a dense model) every other MoE field must keep its default: a value
there would be ignored without a word, so it is refused, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from tjx.core.config.values import positive
from tjx.nn.routers import ROUTERS

#: The MoE fields beside ``num_experts`` (a dense model keeps them at their defaults).
MOE_FIELDS = (
    "experts_per_token",
    "expert_mlp_dim",
    "num_shared_experts",
    "shared_expert_mlp_dim",
    "shared_expert_gate",
    "moe_layer_step",
    "moe_first_dense",
    "router",
    "router_norm_topk",
    "router_aux_loss",
    "router_z_loss",
    "router_dtype",
    "router_bias_rate",
    "capacity_factor",
    "router_scale",
    "router_groups",
    "router_topk_groups",
    "router_logit_bias",
    "router_scales_input",
)
#: Every field an MoE model reads (``num_experts`` first): what a family without MoE refuses.
ALL_MOE_FIELDS = ("num_experts", *MOE_FIELDS)
#: The routers' names (``routers.ROUTERS``), a config's choices.
ROUTER_NAMES = tuple(ROUTERS)
#: The families whose blocks have no MoE layer refuse the MoE settings (``unused_fields``).
NO_MOE = {name: "only decoders (gpt2, llama) have MoE layers" for name in ALL_MOE_FIELDS}
ROUTER_DTYPES = ("float32", "bfloat16", "float64")


def check_moe(
    moe: Mapping[str, Any], cls: str, *, num_layers: int, defaults: Mapping[str, Any]
) -> None:
    """Validate a config's MoE fields (a ValueError naming ``cls.field`` for the first bad one).

    Parameters
    ----------
    moe : Mapping[str, Any]
        Each of `ALL_MOE_FIELDS` → the config's value (the checks read nothing else).
    cls : str
        The config's class name, for the messages.
    num_layers : int
        The layers of its stack (a first MoE layer must be one of them).
    defaults : Mapping[str, Any]
        Each of `MOE_FIELDS` → its default in the config's class (what a dense model keeps).
    """
    c = SimpleNamespace(**moe, num_layers=num_layers)
    positive(cls, "num_experts", c.num_experts, allow_zero=True)
    if c.num_experts == 0:
        for name in MOE_FIELDS:
            if getattr(c, name) != defaults[name]:
                raise ValueError(
                    f"{cls}.{name}: only MoE models use it (num_experts > 0); got "
                    f"{getattr(c, name)!r}, set {cls}.num_experts or leave it at "
                    f"{defaults[name]!r}"
                )
        return
    positive(cls, "experts_per_token", c.experts_per_token)
    if c.experts_per_token > c.num_experts:
        raise ValueError(
            f"{cls}.experts_per_token: {c.experts_per_token} is more than the "
            f"{c.num_experts} experts ({cls}.num_experts); allowed: 1..{c.num_experts}"
        )
    for name in ("expert_mlp_dim", "shared_expert_mlp_dim"):
        if getattr(c, name) is not None:
            positive(cls, name, getattr(c, name))
    positive(cls, "num_shared_experts", c.num_shared_experts, allow_zero=True)
    if c.num_shared_experts == 0:
        for name, default in (("shared_expert_mlp_dim", None), ("shared_expert_gate", False)):
            if getattr(c, name) != default:
                raise ValueError(
                    f"{cls}.{name}: only shared experts use it ({cls}.num_shared_experts is 0); "
                    f"got {getattr(c, name)!r}, set it to {default!r}"
                )
    positive(cls, "moe_layer_step", c.moe_layer_step)
    positive(cls, "moe_first_dense", c.moe_first_dense, allow_zero=True)
    if not any(moe_layers(c)):
        raise ValueError(
            f"{cls}.moe_first_dense: with moe_first_dense={c.moe_first_dense} and "
            f"moe_layer_step={c.moe_layer_step} none of the {c.num_layers} layers is MoE; "
            "allowed: a first MoE layer below num_layers"
        )
    if c.router not in ROUTERS:
        raise ValueError(f"{cls}.router must be one of {tuple(ROUTERS)}; got {c.router!r}")
    if c.router_dtype not in ROUTER_DTYPES:
        raise ValueError(
            f"{cls}.router_dtype must be one of {ROUTER_DTYPES}; got {c.router_dtype!r}"
        )
    for name in ("router_aux_loss", "router_z_loss", "router_bias_rate"):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ValueError(f"{cls}.{name} must be a float >= 0; got {value!r}")
    if not ROUTERS[c.router].bias and c.router_bias_rate != 1e-3:
        raise ValueError(
            f"{cls}.router_bias_rate: only a router with a balancing bias uses it (router "
            f"{c.router!r} has none); got {c.router_bias_rate!r}, set it to 0.001"
        )
    _check_groups(c, cls)
    cf = c.capacity_factor
    if cf is not None and (isinstance(cf, bool) or not isinstance(cf, int | float) or not cf > 0):
        raise ValueError(f"{cls}.capacity_factor must be > 0 (or None: dropless); got {cf!r}")


def _check_groups(c: Any, cls: str) -> None:
    """DeepSeek's routed scale and grouped top-k: groups dividing the experts, enough experts in
    the chosen groups for the top-k (and two per group for the sigmoid router's group score)."""
    scale = c.router_scale
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"{cls}.router_scale must be a float > 0; got {scale!r}")
    positive(cls, "router_groups", c.router_groups)
    positive(cls, "router_topk_groups", c.router_topk_groups)
    groups, chosen = c.router_groups, c.router_topk_groups
    if c.num_experts % groups:
        raise ValueError(f"{cls}.router_groups: {groups} must divide num_experts ({c.num_experts})")
    per = c.num_experts // groups
    if chosen > groups or c.experts_per_token > chosen * per:
        raise ValueError(
            f"{cls}.router_topk_groups: {chosen} of {groups} groups of {per} experts cannot "
            f"hold experts_per_token={c.experts_per_token}; allowed: "
            f"{-(-c.experts_per_token // per)}..{groups}"
        )
    if groups > 1 and c.router.startswith("sigmoid") and per < 2:
        raise ValueError(
            f"{cls}.router_groups: the sigmoid router scores a group by its two best experts; "
            f"{groups} groups of {c.num_experts} experts leave {per}"
        )


def moe_layers(config: Any, num_layers: int | None = None) -> tuple[bool, ...]:
    """Per layer of the decoder stack: True where the layer's MLP is an MoE block.

    Parameters
    ----------
    config : TransformerConfig
        ``num_layers``, ``num_experts``, ``moe_first_dense``, ``moe_layer_step``.
    num_layers : int, optional
        Layers to say it of (default ``config.num_layers``; more: the multi-token-prediction
        blocks after the stack, :mod:`tjx.nn.mtp`).

    Returns
    -------
    tuple of bool
        ``num_layers`` entries (all False for a dense model).
    """
    c = config
    n = c.num_layers if num_layers is None else num_layers
    if not c.num_experts:
        return (False,) * n
    return tuple(i >= c.moe_first_dense and (i + 1) % c.moe_layer_step == 0 for i in range(n))


def expert_mlp_dim(config: Any) -> int:
    """One routed expert's hidden width: ``expert_mlp_dim``, else the config's ``mlp_dim``."""
    return int(config.expert_mlp_dim or config.mlp_dim)


def shared_mlp_dim(config: Any) -> int:
    """The shared experts' hidden width in all (one MLP): ``shared_expert_mlp_dim``, else
    ``num_shared_experts × expert_mlp_dim`` (DeepSeek); 0 without shared experts."""
    if not config.num_shared_experts:
        return 0
    return int(config.shared_expert_mlp_dim or config.num_shared_experts * expert_mlp_dim(config))


def expert_capacity(capacity_factor: float, tokens: int, k: int, num_experts: int) -> int:
    """Slots per expert for one group of ``tokens`` tokens: ``ceil(factor · tokens · k / E)``,
    at least 1 and at most ``tokens`` (a token sends an expert one assignment at most)."""
    import math

    return max(1, min(tokens, math.ceil(capacity_factor * tokens * k / num_experts)))
