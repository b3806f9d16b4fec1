"""Feed-forward blocks: plain MLP (GELU/ReLU/SiLU) and gated MLPs (SwiGLU, GeGLU, and gpt-oss's
clamped SwiGLU, ``swiglu_clamped``: `clamped_swiglu`), and a model layer's MLP as its config makes
it (`model_mlp`). The config's section is :mod:`tjx.nn.mlp_config`'s `MLPConfig` (also served
here)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx.kernels import tokamax_ops
from tjx.kernels.layer_kernels import resolve_glu
from tjx.nn.activations import fused_activation, gated_activation, with_derivative
from tjx.nn.configs import TransformerConfig
from tjx.nn.linear import Dense, split_key
from tjx.nn.mlp_config import ACTIVATIONS as ACTIVATIONS
from tjx.nn.mlp_config import FLAT_MLP_KEYS as FLAT_MLP_KEYS
from tjx.nn.mlp_config import GATED_ACTIVATIONS as GATED_ACTIVATIONS
from tjx.nn.mlp_config import MLPConfig as MLPConfig
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
    """The activation function named ``name`` (see `ACTIVATIONS`)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"mlp.activation must be one of {tuple(_ACTIVATIONS)}; got {name!r}")
    return _ACTIVATIONS[name]


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def gated_projection(
    name: str, x: Array, kernels: tuple[Array, Array], biases: tuple[Array, ...]
) -> Array:
    """``act(x · W_gate + b_gate) · (x · W_up + b_up)`` with one backward for both projections.

    The forward is the two products and one elementwise pass computing the unit in float32,
    rounded once to the compute dtype (the pre-activations are the residuals). The backward
    computes both pre-activation gradients in one elementwise pass (float32 math, written
    stacked in the compute dtype: no float32 tensor reaches memory), then the input's gradient
    is one product over both (accumulated in float32 across the ``2f`` columns, where autodiff
    adds two compute-dtype products) and the kernels' gradients one product. What autodiff of
    two `Dense` calls and `gated_activation` spends instead: two elementwise passes that read
    the three ``[..., f]`` tensors five times, two products for each gradient, and the two
    input gradients added in the compute dtype by their consumer (BENCHMARKS.md).

    Parameters
    ----------
    name : str
        The inner activation: ``"silu"`` (SwiGLU) or ``"gelu"`` (GeGLU, tanh form).
    x : Array
        ``[..., d]`` in the compute dtype.
    kernels : (Array, Array)
        The gate's and the up projection's ``[d, f]`` kernels, in the compute dtype.
    biases : tuple of Array
        ``()``, or the gate's and the up projection's ``[f]`` biases in the compute dtype.

    Returns
    -------
    Array
        ``[..., f]`` in the compute dtype.
    """
    return _gated_projection_fwd(name, x, kernels, biases)[0]


def _gated_projection_fwd(
    name: str, x: Array, kernels: tuple[Array, Array], biases: tuple[Array, ...]
) -> tuple[Array, tuple[Array, tuple[Array, Array], tuple[Array, Array], tuple[Array, ...]]]:
    # Two products, not one over stacked kernels: the stack would be a kernel of its own per
    # layer reading the cast of the flat parameter buffer (the cast kernels are made together).
    gate, up = (jnp.tensordot(x, w, axes=1) for w in kernels)
    if biases:
        gate, up = gate + biases[0], up + biases[1]
    act, _ = with_derivative(name)
    h = (act(_wide(gate)) * _wide(up)).astype(gate.dtype)
    return h, (x, (gate, up), kernels, biases)


def _gated_projection_bwd(
    name: str,
    res: tuple[Array, tuple[Array, Array], tuple[Array, Array], tuple[Array, ...]],
    dh: Array,
) -> tuple[Array, tuple[Array, Array], tuple[Array, ...]]:
    x, pre, kernels, biases = res
    # As `stacked_projection`: the kernels' stack waits for the gradient (not built early and
    # held for every layer at the step's peak); and the pre-activations pass the barrier too,
    # so that XLA does not share the forward's float32 sigmoid with this pass (it would write
    # it to memory between the two).
    dh, pre, kernels = jax.lax.optimization_barrier((dh, pre, kernels))
    act, derivative = with_derivative(name)
    # Both halves of the stacked gradient [..., 2, f] from one expression over the stacked
    # shape (a select on the half): each element evaluates the activation once. Stacking two
    # expressions instead makes XLA write the shared float32 sigmoid (or tanh) to memory and
    # read it back, as it will not evaluate it in both halves.
    wide = (*dh.shape[:-1], 2, dh.shape[-1])
    g, gate, up = (jnp.broadcast_to(_wide(a)[..., None, :], wide) for a in (dh, *pre))
    first = np.array([True, False])[:, None]  # a constant: no kernel of its own
    d = jnp.where(first, g * up * derivative(gate), g * act(gate)).astype(pre[0].dtype)
    lead = x.ndim - 1
    rows = tuple(range(lead))
    dx = jnp.tensordot(d, jnp.stack(kernels, axis=1), axes=((lead, lead + 1), (1, 2)))
    dw = jnp.tensordot(x, d, axes=(rows, rows))  # [d, 2, f]
    db = tuple(s.astype(b.dtype) for s, b in zip(jnp.sum(d, axis=rows), biases, strict=False))
    return (
        dx.astype(x.dtype),
        (dw[:, 0].astype(kernels[0].dtype), dw[:, 1].astype(kernels[1].dtype)),
        db,
    )


gated_projection.defvjp(_gated_projection_fwd, _gated_projection_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def tokamax_gated_projection(name: str, x: Array, kernels: tuple[Array, Array]) -> Array:
    """`gated_projection` (no biases) with its forward tokamax's gated linear unit
    (``mlp.impl: tokamax``, `tjx.kernels.tokamax_ops.tokamax_glu`) and tjx's backward.

    tokamax 0.0.12 runs its Mosaic GPU kernel only where its op is not differentiated (a
    differentiated call computes its forward with XLA, for the pre-activations it keeps); here
    the forward keeps only ``x`` and the kernels, so the kernel runs in training too, and the
    backward recomputes the two products (XLA) before `gated_projection`'s own backward: the
    price of the kernel is one more pair of products per step, which the GPU suite's
    measurement weighs.
    """
    return tokamax_ops.tokamax_glu(x, kernels, activation=name)


def _tokamax_fwd(
    name: str, x: Array, kernels: tuple[Array, Array]
) -> tuple[Array, tuple[Array, tuple[Array, Array]]]:
    return tokamax_gated_projection(name, x, kernels), (x, kernels)


def _tokamax_bwd(
    name: str, res: tuple[Array, tuple[Array, Array]], dh: Array
) -> tuple[Array, tuple[Array, Array]]:
    x, kernels = res
    _, again = _gated_projection_fwd(name, x, kernels, ())
    dx, dw, _ = _gated_projection_bwd(name, again, dh)
    return dx, dw


tokamax_gated_projection.defvjp(_tokamax_fwd, _tokamax_bwd)


def _wide(x: Array) -> Array:
    """``x`` in float32 (float64 stays)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


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
        impl: str = "xla",
    ) -> None:
        self.act = activation(activation_name)
        self.gate_act = _GATED.get(activation_name)
        self.gated = self.gate_act is not None
        self.glu = gate_function(activation_name)
        # Who runs the gated unit (``mlp.impl``), resolved once: tokamax serves act(gate)·up
        # without biases (its rule: tjx.kernels.layer_kernels); an ungated MLP has no unit.
        unit = self.gate_act if self.glu is None else None
        compute = (precision or Precision()).compute_dtype
        self.impl = resolve_glu(
            impl, compute, activation=unit, bias=use_bias, d_model=d_model, mlp_dim=mlp_dim
        )
        if impl == "tokamax" and precision is not None and precision.fp8:
            raise ValueError(
                "mlp.impl 'tokamax': tokamax's gated linear unit has no float8 products "
                "(precision fp8); use 'auto' or 'xla'"
            )
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

    def __call__(self, x: Array, lora_rng: Array | None = None, *, out_bias: bool = True) -> Array:
        """Apply the MLP to ``x`` [..., d_model] (``lora_rng``: adapters' dropout key;
        ``out_bias=False``: without ``fc_out``'s bias, which the caller adds)."""
        k_gate, k_in, k_out = split_key(lora_rng, 3)
        fused = self._fused_gate(x)
        if fused is not None:
            h = fused
        elif self.fc_gate is not None and self.glu is not None:
            h = self.glu(self.fc_gate(x, k_gate), self.fc_in(x, k_in))
        elif self.fc_gate is not None and self.gate_act is not None:
            h = gated_activation(self.gate_act, self.fc_gate(x, k_gate), self.fc_in(x, k_in))
        else:
            h = self.act(self.fc_in(x, k_in))
        return self.fc_out(h, k_out, add_bias=out_bias)

    def _fused_gate(self, x: Array) -> Array | None:
        """The gated unit through `gated_projection` (one backward for both projections), or
        None where it is not ``act(gate) · up`` of two plain projections alike: no gate, gpt-oss's
        clamped unit, a LoRA adapter, float8 products, a bias on one only."""
        gate, up = self.fc_gate, self.fc_in
        if gate is None or self.gate_act is None or self.glu is not None:
            return None
        parts = (gate, up)
        if any(p.lora is not None or p.n_in != 1 or p.precision.fp8 for p in parts):
            return None
        if gate.precision != up.precision or (gate.bias is None) != (up.bias is None):
            return None
        dt = gate.precision.compute_dtype
        kernels = (gate.kernel[...].astype(dt), up.kernel[...].astype(dt))
        if self.impl == "tokamax":  # no biases, no adapter, no float8: resolve_glu checked
            return tokamax_gated_projection(self.gate_act, x.astype(dt), kernels)
        biases = tuple(p.bias[...].astype(dt) for p in parts if p.bias is not None)
        return gated_projection(self.gate_act, x.astype(dt), kernels, biases)


def model_mlp(config: TransformerConfig, mlp_dim: int, *, rngs: nnx.Rngs, out_std: float) -> MLP:
    """The `MLP` of a model's layer, ``mlp_dim`` wide, with the config's activation, biases, init,
    precision and implementation (``mlp.impl``; a dense layer's MLP and an MoE layer's shared
    experts alike).

    Parameters
    ----------
    config : TransformerConfig
        The model's config, its ``mlp.activation`` filled.
    mlp_dim : int
        The hidden width.
    rngs : nnx.Rngs
        The parameters' keys.
    out_std : float
        The output projection's init std (GPT-2 scales the residual branches').

    Returns
    -------
    MLP
    """
    assert config.mlp.activation is not None  # the config filled it (its family's)
    return MLP(
        config.d_model,
        mlp_dim,
        rngs=rngs,
        activation_name=config.mlp.activation,
        use_bias=config.use_bias,
        init_std=config.init.std,
        out_std=out_std,
        precision=config.precision,
        impl=config.mlp.impl,
    )
