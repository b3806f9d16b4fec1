"""The mixture-of-experts section of a model config (`MoEConfig`) and which layers it touches.

A decoder config whose ``moe.num_experts > 0`` replaces the dense MLP of some layers by an MoE
block (``moe.MoE``). Which layers: layer ``i`` (from 0) is MoE when ``i >= first_dense``
(DeepSeek's ``first_k_dense_replace``) and ``(i + 1) % layer_step == 0`` (Qwen2-MoE's
``decoder_sparse_step``: every k-th layer, counted from 1). Mixtral is ``layer_step=1``,
``first_dense=0``: every layer.

With ``num_experts == 0`` (a dense model) every other MoE field must keep its default: a value
there would be ignored without a word, so it is refused, naming the field.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from tjx.core.config.values import choice, positive
from tjx.core.fields import setting
from tjx.nn.routers import ROUTERS

#: The routers' names (``routers.ROUTERS``), a config's choices.
ROUTER_NAMES = tuple(ROUTERS)
ROUTER_DTYPES = ("float32", "bfloat16", "float64")


@dataclass(frozen=True, kw_only=True)
class MoEConfig:
    """A decoder's mixture-of-experts layers (``model.moe``): how many experts, which layers,
    and the router. The default (``num_experts=0``) is a dense model.

    Every bad value raises ``ValueError`` at construction naming ``MoEConfig.<field>``; the one
    check that needs the stack's depth is `check_layers`, which the model config calls.
    """

    num_experts: int = setting(0, help="routed experts per MoE layer; 0: dense MLPs")
    experts_per_token: int = setting(2, help="experts each token is routed to (top-k)")
    expert_mlp_dim: int | None = setting(None, help="a routed expert's width; None: mlp.dim")
    num_shared_experts: int = setting(0, help="experts every token goes through (DeepSeek)")
    shared_expert_mlp_dim: int | None = setting(None, help="all shared experts' width")
    shared_expert_gate: bool = setting(False, help="a sigmoid gate on the shared output")
    layer_step: int = setting(1, help="layer i is MoE when (i + 1) % layer_step == 0")
    first_dense: int = setting(0, help="the first k layers keep a dense MLP")
    router: str = setting("softmax", choices=ROUTER_NAMES, help="the router (see ROUTERS)")
    router_norm_topk: bool = setting(True, help="the top-k weights sum to 1")
    router_aux_loss: float = setting(0.01, help="load-balancing loss coefficient (Switch)")
    router_z_loss: float = setting(0.0, help="router z-loss coefficient (ST-MoE)")
    router_dtype: str = setting("float32", choices=ROUTER_DTYPES, help="the router's dtype")
    router_bias_rate: float = setting(1e-3, resumable=True, help="sigmoid router's bias step")
    router_scale: float = setting(1.0, help="routed weights times this (DeepSeek)")
    router_groups: int = setting(1, help="expert groups (DeepSeek's n_group)")
    router_topk_groups: int = setting(1, help="groups a token's experts come from")
    capacity_factor: float | None = setting(None, help="slots / fair share; None: dropless")
    router_logit_bias: bool = setting(False, help="a learned bias on the router's logits")
    router_scales_input: bool = setting(
        False, help="routed weights scale each expert's input, not its output"
    )
    beside_mlp: bool = setting(
        False, help="MoE layers keep their dense MLP, the MoE block beside it"
    )
    router_input_norm: bool = setting(
        False, help="the router reads the unnormed input, RMS-normed × a scale / sqrt(d)"
    )
    router_expert_scale: bool = setting(
        False, help="routed weights times a learned scale per expert"
    )

    def __post_init__(self) -> None:
        cls = type(self).__name__
        positive(cls, "num_experts", self.num_experts, allow_zero=True)
        if self.num_experts == 0:
            for f in dataclasses.fields(self):
                if getattr(self, f.name) != f.default:
                    raise ValueError(
                        f"{cls}.{f.name}: only MoE models use it (num_experts > 0); got "
                        f"{getattr(self, f.name)!r}, set {cls}.num_experts or leave it at "
                        f"{f.default!r}"
                    )
            return
        positive(cls, "experts_per_token", self.experts_per_token)
        if self.experts_per_token > self.num_experts:
            raise ValueError(
                f"{cls}.experts_per_token: {self.experts_per_token} is more than the "
                f"{self.num_experts} experts ({cls}.num_experts); allowed: 1..{self.num_experts}"
            )
        for name in ("expert_mlp_dim", "shared_expert_mlp_dim"):
            if getattr(self, name) is not None:
                positive(cls, name, getattr(self, name))
        positive(cls, "num_shared_experts", self.num_shared_experts, allow_zero=True)
        if self.num_shared_experts == 0:
            for name, default in (("shared_expert_mlp_dim", None), ("shared_expert_gate", False)):
                if getattr(self, name) != default:
                    raise ValueError(
                        f"{cls}.{name}: only shared experts use it ({cls}.num_shared_experts is "
                        f"0); got {getattr(self, name)!r}, set it to {default!r}"
                    )
        positive(cls, "layer_step", self.layer_step)
        positive(cls, "first_dense", self.first_dense, allow_zero=True)
        choice(cls, "router", self.router, ROUTER_NAMES)
        choice(cls, "router_dtype", self.router_dtype, ROUTER_DTYPES)
        for name in ("router_aux_loss", "router_z_loss", "router_bias_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{cls}.{name} must be a float >= 0; got {value!r}")
        if not ROUTERS[self.router].bias and self.router_bias_rate != 1e-3:
            raise ValueError(
                f"{cls}.router_bias_rate: only a router with a balancing bias uses it (router "
                f"{self.router!r} has none); got {self.router_bias_rate!r}, set it to 0.001"
            )
        self._check_groups(cls)
        cf = self.capacity_factor
        if cf is not None and (
            isinstance(cf, bool) or not isinstance(cf, int | float) or not cf > 0
        ):
            raise ValueError(f"{cls}.capacity_factor must be > 0 (or None: dropless); got {cf!r}")

    def _check_groups(self, cls: str) -> None:
        """DeepSeek's routed scale and grouped top-k: groups dividing the experts, enough experts
        in the chosen groups for the top-k (and two per group for the sigmoid router's group
        score)."""
        scale = self.router_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise ValueError(f"{cls}.router_scale must be a float > 0; got {scale!r}")
        positive(cls, "router_groups", self.router_groups)
        positive(cls, "router_topk_groups", self.router_topk_groups)
        groups, chosen, k = self.router_groups, self.router_topk_groups, self.experts_per_token
        if self.num_experts % groups:
            raise ValueError(
                f"{cls}.router_groups: {groups} must divide num_experts ({self.num_experts})"
            )
        per = self.num_experts // groups
        if chosen > groups or k > chosen * per:
            raise ValueError(
                f"{cls}.router_topk_groups: {chosen} of {groups} groups of {per} experts cannot "
                f"hold experts_per_token={k}; allowed: {-(-k // per)}..{groups}"
            )
        if groups > 1 and self.router.startswith("sigmoid") and per < 2:
            raise ValueError(
                f"{cls}.router_groups: the sigmoid router scores a group by its two best "
                f"experts; {groups} groups of {self.num_experts} experts leave {per}"
            )

    def check_layers(self, num_layers: int, cls: str) -> None:
        """A first MoE layer among a stack's ``num_layers`` layers (``cls``: the section's path
        in the message, e.g. ``LlamaConfig.moe``).

        Raises
        ------
        ValueError
            No layer of the stack is MoE although ``num_experts > 0``.
        """
        if self.num_experts and not any(self.layers(num_layers)):
            raise ValueError(
                f"{cls}.first_dense: with first_dense={self.first_dense} and "
                f"layer_step={self.layer_step} none of the {num_layers} layers is MoE; "
                "allowed: a first MoE layer below num_layers"
            )

    def layers(self, num_layers: int) -> tuple[bool, ...]:
        """Per layer of a stack of ``num_layers``: True where its MLP is an MoE block."""
        if not self.num_experts:
            return (False,) * num_layers
        return tuple(
            i >= self.first_dense and (i + 1) % self.layer_step == 0 for i in range(num_layers)
        )


#: The MoE settings' old flat keys in a model section (tjx-nn before the ``moe`` section) →
#: their key in it: `tjx.nn.old_layout` migrates files and ``--set`` keys by this table.
FLAT_MOE_KEYS = {
    **{
        name: name
        for name in (f.name for f in dataclasses.fields(MoEConfig))
        if name not in ("layer_step", "first_dense", "beside_mlp")
    },
    "moe_layer_step": "layer_step",
    "moe_first_dense": "first_dense",
    "moe_beside_mlp": "beside_mlp",
}
#: The families whose blocks have no MoE layer refuse the MoE section (``unused_fields``).
NO_MOE = {"moe": "only decoders (gpt2, llama) have MoE layers"}


def moe_layers(config: Any, num_layers: int | None = None) -> tuple[bool, ...]:
    """Per layer of the decoder stack: True where the layer's MLP is an MoE block.

    Parameters
    ----------
    config : TransformerConfig
        ``num_layers`` and the ``moe`` section.
    num_layers : int, optional
        Layers to say it of (default ``config.num_layers``; more: the multi-token-prediction
        blocks after the stack, :mod:`tjx.nn.mtp`).

    Returns
    -------
    tuple of bool
        ``num_layers`` entries (all False for a dense model).
    """
    return config.moe.layers(config.num_layers if num_layers is None else num_layers)


def expert_mlp_dim(config: Any) -> int:
    """One routed expert's hidden width: ``moe.expert_mlp_dim``, else the config's ``mlp_dim``."""
    return int(config.moe.expert_mlp_dim or config.mlp.dim)


def shared_mlp_dim(config: Any) -> int:
    """The shared experts' hidden width in all (one MLP): ``moe.shared_expert_mlp_dim``, else
    ``num_shared_experts × expert_mlp_dim`` (DeepSeek); 0 without shared experts."""
    moe = config.moe
    if not moe.num_shared_experts:
        return 0
    return int(moe.shared_expert_mlp_dim or moe.num_shared_experts * expert_mlp_dim(config))


def expert_capacity(capacity_factor: float, tokens: int, k: int, num_experts: int) -> int:
    """Slots per expert for one group of ``tokens`` tokens: ``ceil(factor · tokens · k / E)``,
    at least 1 and at most ``tokens`` (a token sends an expert one assignment at most)."""
    return max(1, min(tokens, math.ceil(capacity_factor * tokens * k / num_experts)))
