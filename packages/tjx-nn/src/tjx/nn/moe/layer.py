"""The mixture-of-experts feed-forward block: a router, ``E`` routed experts, shared experts.

``MoE(x)`` routes each token of ``x`` ``[b, s, d]`` to ``experts_per_token`` of ``num_experts``
experts (``routers.py``), runs them (``dispatch``: dropless grouped matmuls, or the
capacity path; each weighs its expert's output, or with ``router_scales_input`` its input),
adds the shared experts (one MLP every token goes through, optionally scaled by
``sigmoid(x · shared_gate)``, Qwen2-MoE) and returns the block's output with its `MoEStats`.

Parameters (logical axes in brackets): ``router.kernel`` ``[embed, None]``, the sigmoid
router's balancing ``router.bias`` ``[None]``, with ``router_logit_bias`` a learned
``router.logit_bias`` ``[None]`` added to the logits (gpt-oss; the router is small and
replicated);
``experts.fc_in``/``fc_gate`` ``[experts, embed, mlp]`` and ``fc_out`` ``[experts, mlp,
embed]`` (``.kernel``, and ``.bias`` with ``use_bias``: a stack of matrices, split over the
``expert`` mesh axis by expert parallelism); ``shared`` (an ``MLP``) and ``shared_gate.kernel``
``[embed, None]``.

Statistics and losses (per layer; `MoEStats` holds sums, so micro-batches and devices add up):
the tokens each expert was chosen by, the dropped assignments, the Switch load-balancing loss
``E · Σ_e f_e · P_e`` (``f_e``: expert ``e``'s share of the ``t·k`` assignments, ``P_e``: its mean
router probability; 1 when perfectly balanced, whatever ``k``: HF Mixtral's value is ``k`` times
this) and the router z-loss ``mean_t logsumexp(logits_t)²`` (ST-MoE).

Expert parallelism: inside ``parallel.expert_parallel_scope(ep)`` (tjx-parallel's
``expert_parallel(mesh, rules)`` gives ``ep``) the experts run on the devices that hold them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.configs import TransformerConfig
from tjx.nn.linear import Dense
from tjx.nn.mlp import activation, gate_function, model_mlp
from tjx.nn.moe.config import expert_capacity, expert_mlp_dim, shared_mlp_dim
from tjx.nn.moe.dispatch import FFN, ExpertWeights, capacity, dropless
from tjx.nn.moe.parallel import current_expert_parallel
from tjx.nn.norms import rms_norm
from tjx.nn.params import make_param, normal, ones, zeros
from tjx.nn.routers import ROUTERS

Array = jax.Array


#: The logical axes of `ExpertWeights`' fields (what tjx-parallel shards them by).
WEIGHT_NAMES = ExpertWeights(
    ("experts", "embed", "mlp"),
    ("experts", "embed", "mlp"),
    ("experts", "mlp", "embed"),
    ("experts", "mlp"),
    ("experts", "mlp"),
    ("experts", "embed"),
)


class MoEStats(NamedTuple):
    """One MoE layer's router statistics for one call, as sums (stacked: one row per layer).

    ``tjx.metrics.moe_metrics`` turns the sums of a step (or of many) into the logged values.
    """

    #: int32 ``[E]``: assignments each expert was chosen for (before any dropping).
    expert_tokens: Array
    #: int32: assignments the capacity path dropped (0 when dropless).
    dropped_tokens: Array
    #: int32: tokens routed.
    tokens: Array
    #: float32 (float64 for float64 inputs): the load-balancing loss times ``tokens`` (divide
    #: by the summed ``tokens``).
    balance_loss_sum: Array
    #: float32 (float64 likewise): ``Σ_t logsumexp(logits_t)²`` (divide by the summed
    #: ``tokens``).
    z_loss_sum: Array
    #: float32: the layer's sparse-attention indexer loss summed over its queries
    #: (``mla.index_loss_weight`` > 0; the block adds it from its attention), else None. Its
    #: rows are the layers with that loss, dense ones too (`index_stats`), not the MoE layers.
    index_loss_sum: Array | None = None
    #: float32: the queries ``index_loss_sum`` covers (divide by the summed count), else None.
    index_queries: Array | None = None


def index_stats(loss_sum: Array, queries: Array) -> MoEStats:
    """A dense layer's row: its attention's indexer loss sums, its MoE fields None (`join_stats`
    joins each field over the rows that hold it)."""
    return MoEStats._make([None] * 5 + [loss_sum, queries])


def join_stats(rows: Sequence[MoEStats], join: Callable[[Sequence[Array]], Array]) -> MoEStats:
    """Layers' statistics joined field by field in layer order (``join``: ``jnp.stack`` of
    layer rows, ``jnp.concatenate`` of stacked ones); a field joins the rows that hold it, so the
    MoE fields' rows are the MoE layers and the indexer loss's those that report one."""
    fields = []
    for name in MoEStats._fields:
        held = [getattr(row, name) for row in rows if getattr(row, name) is not None]
        fields.append(join(held) if held else None)
    return MoEStats._make(fields)


class Router(nnx.Module):
    """The router's ``[embed, experts]`` projection (with ``router_logit_bias`` a learned
    ``logit_bias`` ``[experts]`` too: gpt-oss's ``nn.Linear`` with a bias), and the balancing
    ``bias`` ``[experts]`` of a router that has one (DeepSeek-V3's; it steers the choice only, see
    ``update_router_bias``)."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs) -> None:
        c = config
        dtype = c.precision.param_dtype
        # The expert dimension is left unnamed (replicated): the router is small, and its logits
        # go with tokens split over the batch axes, expert included.
        self.kernel = make_param(
            rngs, normal(c.init.std), (c.d_model, c.moe.num_experts), ("embed", None), dtype
        )
        self.bias = (
            make_param(rngs, zeros(), (c.moe.num_experts,), (None,), jnp.float32)
            if ROUTERS[c.moe.router].bias
            else None
        )
        self.logit_bias = (
            make_param(rngs, zeros(), (c.moe.num_experts,), (None,), dtype)
            if c.moe.router_logit_bias
            else None
        )
        self.dtype = jnp.dtype(c.moe.router_dtype)
        # router_input_norm: the router's own unscaled RMSNorm of its input, times
        # ``input_scale`` and 1/sqrt(d); each routed weight times its expert's ``expert_scale``.
        self.input_scale = (
            make_param(rngs, ones(), (c.d_model,), ("norm",), dtype)
            if c.moe.router_input_norm
            else None
        )
        self.expert_scale = (
            make_param(rngs, ones(), (c.moe.num_experts,), (None,), dtype)
            if c.moe.router_expert_scale
            else None
        )
        self.eps = c.norm.eps

    def __call__(self, x: Array) -> Array:
        """Logits ``[..., E]`` in the router's dtype (or wider, for float64 inputs)."""
        if self.input_scale is not None:
            d = x.shape[-1]
            x = rms_norm(x, jnp.ones((d,), x.dtype), self.eps, x.dtype)
            x = x * self.input_scale[...].astype(x.dtype) * jnp.asarray(d**-0.5, x.dtype)
        dt = jnp.promote_types(self.dtype, x.dtype)
        logits = jnp.einsum("...d,de->...e", x.astype(dt), self.kernel[...].astype(dt))
        return logits if self.logit_bias is None else logits + self.logit_bias[...].astype(dt)


class ExpertDense(nnx.Module):
    """``E`` stacked projections: ``kernel`` ``[experts, in, out]``, ``bias`` ``[experts, out]``."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        names: tuple[str, str, str],
        *,
        rngs: nnx.Rngs,
        std: float,
        use_bias: bool,
        dtype: Any,
    ) -> None:
        self.kernel = make_param(rngs, normal(std), shape, names, dtype)
        self.bias = (
            make_param(rngs, zeros(), (shape[0], shape[2]), (names[0], names[2]), dtype)
            if use_bias
            else None
        )


class Experts(nnx.Module):
    """The routed experts' MLPs, stacked on a leading ``experts`` axis."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs, out_std: float) -> None:
        c = config
        e, d, f = c.moe.num_experts, c.d_model, expert_mlp_dim(c)
        kw: dict[str, Any] = dict(rngs=rngs, use_bias=c.use_bias, dtype=c.precision.param_dtype)
        names_in = ("experts", "embed", "mlp")
        self.fc_in = ExpertDense((e, d, f), names_in, std=c.init.std, **kw)
        self.fc_gate = ExpertDense((e, d, f), names_in, std=c.init.std, **kw) if c.gated else None
        self.fc_out = ExpertDense((e, f, d), ("experts", "mlp", "embed"), std=out_std, **kw)

    def weights(self) -> ExpertWeights:
        """The raw arrays, for ``dispatch``."""

        def get(m: ExpertDense | None, part: str) -> Array | None:
            if m is None:
                return None
            p = getattr(m, part)
            return None if p is None else p[...]

        kernel_in, kernel_out = get(self.fc_in, "kernel"), get(self.fc_out, "kernel")
        assert kernel_in is not None and kernel_out is not None
        return ExpertWeights(
            kernel_in,
            get(self.fc_gate, "kernel"),
            kernel_out,
            get(self.fc_in, "bias"),
            get(self.fc_gate, "bias"),
            get(self.fc_out, "bias"),
        )


class MoE(nnx.Module):
    """The MoE feed-forward block of one layer (see the module's docstring)."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs, out_std: float) -> None:
        c = self.config = config
        self.router = Router(c, rngs=rngs)
        self.experts = Experts(c, rngs=rngs, out_std=out_std)
        shared = shared_mlp_dim(c)
        self.shared = model_mlp(c, shared, rngs=rngs, out_std=out_std) if shared else None
        self.shared_gate = (
            Dense(
                (c.d_model,),
                (1,),
                ("embed",),
                (None,),
                rngs=rngs,
                use_bias=False,
                init=normal(c.init.std),
                precision=c.precision,
            )
            if c.moe.shared_expert_gate
            else None
        )

    def __call__(
        self, x: Array, router_input: Array | None = None, *, no_capacity: bool = False
    ) -> tuple[Array, MoEStats]:
        """``[b, s, d]`` → (``[b, s, d]`` in the compute dtype, this call's `MoEStats`);
        ``router_input`` (``router_input_norm``): what the router reads instead of ``x``.
        ``no_capacity``: route every token whatever ``capacity_factor`` says (a decode step: its
        tokens are those of one-token steps, none of which a capacity drops)."""
        c = self.config
        b, s, d = x.shape
        dt = jnp.promote_types(c.precision.compute_dtype, x.dtype)
        logits = self.router(x if router_input is None else router_input)  # [b, s, E]
        bias = None if self.router.bias is None else self.router.bias[...]
        routing = ROUTERS[c.moe.router].fn(logits.reshape(b * s, -1), bias, c)
        experts = routing.experts.reshape(b, s, -1)
        weights = routing.weights.reshape(b, s, -1)
        if self.router.expert_scale is not None:
            scale = self.router.expert_scale[...]
            weights = weights * jnp.take(scale, experts).astype(weights.dtype)
        act = c.mlp.activation
        assert act is not None  # the config filled it (its family's)
        ffn = FFN(activation(act), c.gated, dt, gate_function(act))
        w = self.experts.weights()
        slots = (
            None
            if c.moe.capacity_factor is None or no_capacity
            else expert_capacity(
                c.moe.capacity_factor, s, c.moe.experts_per_token, c.moe.num_experts
            )
        )

        def run(x: Array, experts: Array, weights: Array, w: Any, comm: Any) -> tuple[Array, Array]:
            """One device's share (all of it without expert parallelism)."""
            on_input = c.moe.router_scales_input
            if slots is not None:
                return capacity(x, experts, weights, w, ffn, slots, comm, on_input)
            shape = x.shape
            flat = (x.reshape(-1, shape[-1]), experts.reshape(-1, experts.shape[-1]))
            y = dropless(*flat, weights.reshape(flat[1].shape), w, ffn, comm, on_input)
            return y.reshape(shape), jnp.zeros((), jnp.int32)

        ep = current_expert_parallel()
        if ep is None:
            y, dropped = run(x, experts, weights, w, None)
        else:
            pairs = zip(w, WEIGHT_NAMES, strict=True)
            names = ExpertWeights(*(None if a is None else n for a, n in pairs))
            y, dropped = ep.run(run, x, experts, weights, w, names)
        if self.shared is not None:
            h = self.shared(x).astype(dt)
            if self.shared_gate is not None:
                gate = self.shared_gate(x).astype(jnp.promote_types(jnp.float32, dt))
                h = (jax.nn.sigmoid(gate) * h).astype(dt)
            y = y.astype(dt) + h
        return y.astype(dt), _stats(
            logits.reshape(b * s, -1), routing.experts, routing.probs, dropped, c.moe.num_experts
        )


def _stats(logits: Array, experts: Array, probs: Array, dropped: Array, num: int) -> MoEStats:
    """The layer's `MoEStats` from its router's logits ``[t, E]``, choices and probabilities."""
    t, k = experts.shape
    counts = jnp.bincount(experts.reshape(-1), length=num).astype(jnp.int32)
    f32 = jnp.promote_types(jnp.float32, logits.dtype)
    share = counts.astype(f32) / jnp.maximum(t * k, 1)
    mean_prob = jnp.mean(probs.astype(f32), axis=0) if t else jnp.zeros((num,), f32)
    balance = num * jnp.sum(share * mean_prob)
    lse = jax.nn.logsumexp(logits.astype(f32), axis=-1)
    return MoEStats(
        expert_tokens=counts,
        dropped_tokens=jnp.asarray(dropped, jnp.int32),
        tokens=jnp.asarray(t, jnp.int32),
        balance_loss_sum=balance * t,
        z_loss_sum=jnp.sum(jnp.square(lse)),
    )


def router_penalty(stats: MoEStats, config: TransformerConfig) -> Array:
    """The router's losses as they enter the training loss: ``router_aux_loss`` times each MoE
    layer's load-balancing loss plus ``router_z_loss`` times its z-loss, summed over layers;
    with the sparse attention's indexer loss in the statistics, ``mla.index_loss_weight`` times
    each layer's mean over its queries, summed over layers, too.

    Parameters
    ----------
    stats : MoEStats
        A model call's (rows: its MoE layers).
    config : TransformerConfig
        The coefficients.

    Returns
    -------
    Array
        A float32 scalar (0 for a call without tokens).
    """
    tokens = jnp.maximum(stats.tokens, 1).astype(stats.balance_loss_sum.dtype)
    per_layer = (
        config.moe.router_aux_loss * stats.balance_loss_sum
        + config.moe.router_z_loss * stats.z_loss_sum
    ) / tokens
    penalty = jnp.sum(per_layer)
    if stats.index_loss_sum is not None and stats.index_queries is not None:
        index = stats.index_loss_sum / jnp.maximum(stats.index_queries, 1.0)
        penalty = penalty + config.mla.index_loss_weight * jnp.sum(index).astype(penalty.dtype)
    return penalty
