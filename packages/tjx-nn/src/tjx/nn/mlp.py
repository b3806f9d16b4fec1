"""Feed-forward blocks: plain MLP (GELU/ReLU/SiLU) and gated MLPs (SwiGLU, GeGLU, and gpt-oss's
clamped SwiGLU, ``swiglu_clamped``: `clamped_swiglu`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.activations import fused_activation, gated_activation
from tjx.nn.linear import Dense, split_key
from tjx.nn.params import normal
from tjx.nn.precision import Precision

Array = jax.Array

# gelu (tanh form) and silu differentiate in one fused kernel (tjx.nn.activations).
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": partial(fused_activation, "gelu"),  # GPT-2's "gelu_new"
    "gelu_exact": partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "silu": partial(fused_activation, "silu"),
    "swiglu": partial(fused_activation, "silu"),
    "geglu": partial(fused_activation, "gelu"),
    "swiglu_clamped": partial(fused_activation, "silu"),  # its gate: `clamped_swiglu`
}
#: The gated activations' inner function (for `gated_activation`).
_GATED = {"swiglu": "silu", "geglu": "gelu", "swiglu_clamped": "silu"}
#: gpt-oss's clamped SwiGLU (transformers' ``swiglu_alpha`` and ``swiglu_limit``, fixed there by
#: the released checkpoints): the sigmoid's gain and the clamp of the gate and the up projection.
CLAMPED_SWIGLU_ALPHA = 1.702
CLAMPED_SWIGLU_LIMIT = 7.0


def clamped_swiglu(gate: Array, up: Array) -> Array:
    """gpt-oss's gated unit: ``(up + 1) · g · sigmoid(1.702 g)`` with the gate clamped from
    above and ``up`` on both sides at 7 (``g = min(gate, 7)``, ``up`` in ``[-7, 7]``), computed
    in the inputs' dtype as transformers' ``GptOssExperts`` does."""
    g = jnp.minimum(gate, CLAMPED_SWIGLU_LIMIT)
    u = jnp.clip(up, -CLAMPED_SWIGLU_LIMIT, CLAMPED_SWIGLU_LIMIT)
    return (u + 1) * (g * jax.nn.sigmoid(g * CLAMPED_SWIGLU_ALPHA))


def gate_function(name: str) -> Callable[[Array, Array], Array] | None:
    """The two-input gated unit of activation ``name`` where it is not ``act(gate) · up``
    (``swiglu_clamped``), else None."""
    return clamped_swiglu if name == "swiglu_clamped" else None


def activation(name: str) -> Callable[[Array], Array]:
    """The activation function named ``name`` (see ``configs.ACTIVATIONS``)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"mlp_activation must be one of {tuple(_ACTIVATIONS)}; got {name!r}")
    return _ACTIVATIONS[name]


class MLP(nnx.Module):
    """``out(act(in(x)))``, or ``out(act(gate(x)) * up(x))`` for ``swiglu``/``geglu``.

    ``out_std`` lets GPT-2 scale the residual projection's init by ``1/√(2·layers)``.
    """

    def __init__(
        self,
        d_model: int,
        mlp_dim: int,
        *,
        rngs: nnx.Rngs,
        activation_name: str = "gelu",
        use_bias: bool = True,
        init_std: float = 0.02,
        out_std: float | None = None,
        precision: Precision | None = None,
    ) -> None:
        self.act = activation(activation_name)
        self.gate_act = _GATED.get(activation_name)
        self.gated = self.gate_act is not None
        self.glu = gate_function(activation_name)
        common: dict[str, Any] = dict(rngs=rngs, use_bias=use_bias, precision=precision)
        self.fc_in = Dense(
            (d_model,), (mlp_dim,), ("embed",), ("mlp",), init=normal(init_std), **common
        )
        self.fc_gate = (
            Dense((d_model,), (mlp_dim,), ("embed",), ("mlp",), init=normal(init_std), **common)
            if self.gated
            else None
        )
        self.fc_out = Dense(
            (mlp_dim,),
            (d_model,),
            ("mlp",),
            ("embed",),
            init=normal(out_std if out_std is not None else init_std),
            **common,
        )

    def __call__(self, x: Array, lora_rng: Array | None = None) -> Array:
        """Apply the MLP to ``x`` [..., d_model] (``lora_rng``: adapters' dropout key)."""
        k_gate, k_in, k_out = split_key(lora_rng, 3)
        if self.fc_gate is not None and self.glu is not None:
            h = self.glu(self.fc_gate(x, k_gate), self.fc_in(x, k_in))
        elif self.fc_gate is not None and self.gate_act is not None:
            h = gated_activation(self.gate_act, self.fc_gate(x, k_gate), self.fc_in(x, k_in))
        else:
            h = self.act(self.fc_in(x, k_in))
        return self.fc_out(h, k_out)
