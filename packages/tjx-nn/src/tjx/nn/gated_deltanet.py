"""Gated DeltaNet: the linear-attention token mixer of Qwen3-Next and Qwen3.5.

Per token ``x`` (Qwen3.5's layout; Yang, Kautz and Hatamizadeh 2024):

1. ``q, k, v``: one projection (``in_proj_qkv``, ``2·H_k·d_k + H_v·d_v`` features), then a
   depthwise **causal convolution** over time (``conv_kernel`` taps, no bias) and SiLU;
2. the gates: ``β = sigmoid(x · W_b)`` (the writing strength, per value head) and the log-decay
   ``g = -exp(A_log) · softplus(x · W_a + dt_bias)`` (≤ 0);
3. ``q`` and ``k`` normalised to unit length (L2, eps 1e-6), each key head serving ``H_v / H_k``
   consecutive value heads, and the **gated delta rule** (tjx.kernels' `gated_delta_rule`,
   chunked; scale ``d_k ** -0.5``) reads the state;
4. the output gate: an RMSNorm over each head's ``d_v`` (weight, no ``1 +``) times
   ``SiLU(x · W_z)``, then ``out_proj``.

Generation keeps two states per layer (`DeltaState`): the convolution's last ``conv_kernel - 1``
inputs and the delta rule's ``[H_v, d_k, d_v]`` matrix; `GatedDeltaNet.step` is one token
(tjx.kernels' `gated_delta_step`), `GatedDeltaNet.__call__` with ``return_state`` the state a
prompt leaves. A packed batch (``segment_ids``) starts each document afresh: the convolution
reads no input of another document, and a document's first token decays the state before it by
``exp(RESET_LOG_DECAY)`` (≈ 1e-13, nothing in float32), which the chunked rule computes as any
other decay. The statistics (gates, norms, the rule) are float32 (float64 inputs stay float64).
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from tjx.core.config.values import choice, positive
from tjx.core.fields import setting
from tjx.kernels import GATED_DELTA_IMPLEMENTATIONS, gated_delta_rule, gated_delta_step
from tjx.nn.linear import Dense
from tjx.nn.params import make_param, normal, ones, zeros
from tjx.nn.precision import Precision

#: Who runs the gated delta rule across chunks (tjx.kernels' `gated_delta_auto` picks for auto:
#: XLA unless a GPU measured the kernels faster).
DELTA_IMPLS: tuple[str, ...] = GATED_DELTA_IMPLEMENTATIONS
#: The Gated DeltaNet sizes: a stack with delta layers needs them, one without refuses them.
DELTA_SIZES = ("key_heads", "value_heads", "key_dim", "value_dim")


@dataclass(frozen=True, kw_only=True)
class DeltaConfig:
    """The Gated DeltaNet layers of a stack (``model.delta``): only a model whose
    ``mixer_pattern`` has ``"delta"`` reads them (the model config checks that).

    Every bad value raises ``ValueError`` at construction naming ``DeltaConfig.<field>``.
    """

    key_heads: int | None = setting(None, help="delta layers: query and key heads")
    value_heads: int | None = setting(
        None, help="delta layers: value heads (a multiple of the key heads)"
    )
    key_dim: int | None = setting(None, help="delta layers: a query/key head's width")
    value_dim: int | None = setting(None, help="delta layers: a value head's width")
    conv_kernel: int = setting(4, help="delta layers: the causal convolution's taps")
    impl: str = setting(
        "auto",
        choices=DELTA_IMPLS,
        resumable=True,
        help="delta layers: who runs the rule across chunks: xla (a scan), pallas (kernels); "
        "auto: pallas where a GPU measured it faster (the launch table), else xla",
    )

    def __post_init__(self) -> None:
        cls = type(self).__name__
        choice(cls, "impl", self.impl, DELTA_IMPLS)
        for name in DELTA_SIZES:
            if getattr(self, name) is not None:
                positive(cls, name, getattr(self, name))
        positive(cls, "conv_kernel", self.conv_kernel)
        if self.key_heads and self.value_heads and self.value_heads % self.key_heads:
            raise ValueError(
                f"{cls}.value_heads ({self.value_heads}) must be a multiple of key_heads "
                f"({self.key_heads}): each key head serves value heads"
            )

    @property
    def conv_dim(self) -> int:
        """The causal convolution's width: the queries', keys' and values' projections side by
        side (``2 key_heads·key_dim + value_heads·value_dim``), of sizes the model config filled."""
        assert self.key_heads is not None and self.value_heads is not None
        assert self.key_dim is not None and self.value_dim is not None
        return 2 * self.key_heads * self.key_dim + self.value_heads * self.value_dim


#: The Gated DeltaNet settings' old flat keys in a model section → their key in ``delta``.
FLAT_DELTA_KEYS = {f"delta_{name}": name for name in (*DELTA_SIZES, "conv_kernel", "impl")}


Array = jax.Array
#: The L2 normalisation's epsilon (flash-linear-attention's and transformers').
L2_EPS = 1e-6
#: The log-decay added at a packed document's first token: the state before it is multiplied by
#: exp(-30) ≈ 9e-14. Finite, so the chunked rule's differences of cumulative decays stay exact
#: to float32's rounding of their size.
RESET_LOG_DECAY = -30.0


class DeltaState(NamedTuple):
    """One layer's generation state.

    Attributes
    ----------
    conv : Array
        ``[batch, conv_kernel - 1, conv_dim]``: the projections of the last tokens (zeros before
        the first).
    recurrent : Array
        ``[batch, H_v, d_k, d_v]`` float32: the delta rule's state.
    """

    conv: Array
    recurrent: Array


def _l2norm(x: Array) -> Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + L2_EPS)


def _work(x: Array) -> jnp.dtype:
    return jnp.promote_types(x.dtype, jnp.float32)


class GatedDeltaNet(nnx.Module):
    """The Gated DeltaNet mixer (module docstring): ``[batch, seq, d_model]`` in and out."""

    def __init__(
        self,
        d_model: int,
        *,
        num_k_heads: int,
        num_v_heads: int,
        head_k_dim: int,
        head_v_dim: int,
        rngs: nnx.Rngs,
        conv_kernel: int = 4,
        eps: float = 1e-6,
        chunk_size: int = 64,
        init_std: float = 0.02,
        precision: Precision | None = None,
        implementation: str = "auto",
    ) -> None:
        if num_v_heads % num_k_heads:
            raise ValueError(
                f"GatedDeltaNet: num_v_heads ({num_v_heads}) must be a multiple of num_k_heads "
                f"({num_k_heads}): each key head serves consecutive value heads"
            )
        if conv_kernel < 1:
            raise ValueError(f"GatedDeltaNet: conv_kernel must be >= 1; got {conv_kernel}")
        self.precision = precision or Precision()
        self.num_k_heads, self.num_v_heads = num_k_heads, num_v_heads
        self.head_k_dim, self.head_v_dim = head_k_dim, head_v_dim
        self.key_dim, self.value_dim = num_k_heads * head_k_dim, num_v_heads * head_v_dim
        self.conv_dim = 2 * self.key_dim + self.value_dim
        self.conv_kernel, self.eps, self.chunk_size = conv_kernel, eps, chunk_size
        # Who runs the rule across chunks (tjx.kernels' gated_delta_rule; a config's delta.impl).
        self.implementation = implementation

        def dense(n_in: int, n_out: int, names: tuple[str, str]) -> Dense:
            return Dense((n_in,), (n_out,), names[:1], names[1:], rngs=rngs, use_bias=False,
                         init=normal(init_std), precision=self.precision)  # fmt: skip

        self.in_proj_qkv = dense(d_model, self.conv_dim, ("embed", "mlp"))
        self.in_proj_z = dense(d_model, self.value_dim, ("embed", "mlp"))
        self.in_proj_b = dense(d_model, num_v_heads, ("embed", "heads"))
        self.in_proj_a = dense(d_model, num_v_heads, ("embed", "heads"))
        self.out_proj = dense(self.value_dim, d_model, ("mlp", "embed"))
        dtype = self.precision.param_dtype
        self.conv_weight = make_param(
            rngs, normal(conv_kernel**-0.5), (self.conv_dim, conv_kernel), ("mlp", None), dtype
        )
        self.dt_bias = make_param(rngs, ones(), (num_v_heads,), ("heads",), dtype)
        # log A = 0 and dt_bias = 1: g = -softplus(x·W_a + 1), about -1.3, a decay that starts
        # neither instant nor frozen (a checkpoint sets both).
        self.a_log = make_param(rngs, zeros(), (num_v_heads,), ("heads",), dtype)
        self.norm_scale = make_param(rngs, ones(), (head_v_dim,), ("norm",), dtype)

    # --- the pieces ---------------------------------------------------------------------------

    def _conv(self, window: Array, segment_ids: Array | None = None) -> Array:
        """The causal depthwise convolution's outputs for ``window`` ``[b, K - 1 + s, C]`` (the
        state's inputs first): ``[b, s, C]``, SiLU applied. With ``segment_ids`` ``[b, s]`` a
        tap reads only inputs of the output token's own document."""
        w = self.conv_weight[...].astype(window.dtype)  # [C, K]
        s = window.shape[1] - (self.conv_kernel - 1)
        taps = [window[:, j : j + s] * w[:, j] for j in range(self.conv_kernel)]
        if segment_ids is not None:
            before = jnp.full((segment_ids.shape[0], self.conv_kernel - 1), -1, segment_ids.dtype)
            source = jnp.concatenate([before, segment_ids], axis=1)  # tap j's input's document
            taps = [
                tap * (source[:, j : j + s] == segment_ids)[..., None].astype(tap.dtype)
                for j, tap in enumerate(taps)
            ]
        return jax.nn.silu(sum(taps[1:], taps[0]))

    def _heads(self, mixed: Array, x: Array) -> tuple[Array, ...]:
        """(q, k, v, g, beta) of the convolved projections ``mixed`` ``[b, s, C]`` and ``x``."""
        b, s, _ = mixed.shape
        work = _work(mixed)
        q, k, v = jnp.split(mixed, [self.key_dim, 2 * self.key_dim], axis=-1)
        q = _l2norm(q.reshape(b, s, self.num_k_heads, self.head_k_dim).astype(work))
        k = _l2norm(k.reshape(b, s, self.num_k_heads, self.head_k_dim).astype(work))
        reps = self.num_v_heads // self.num_k_heads
        q, k = jnp.repeat(q, reps, axis=2), jnp.repeat(k, reps, axis=2)
        v = v.reshape(b, s, self.num_v_heads, self.head_v_dim)
        beta = jax.nn.sigmoid(self.in_proj_b(x).astype(work))
        a = self.in_proj_a(x).astype(work) + self.dt_bias[...].astype(work)
        g = -jnp.exp(self.a_log[...].astype(work)) * jax.nn.softplus(a)
        return q, k, v, g, beta

    def _out(self, o: Array, x: Array) -> Array:
        """The gated RMSNorm of the rule's output ``o`` ``[b, s, H_v, d_v]``, then ``out_proj``."""
        b, s = o.shape[:2]
        work = _work(o)
        o = o.astype(work)
        o = o * jax.lax.rsqrt(jnp.mean(o * o, axis=-1, keepdims=True) + self.eps)
        z = self.in_proj_z(x).reshape(b, s, self.num_v_heads, self.head_v_dim)
        o = o * self.norm_scale[...].astype(work) * jax.nn.silu(z.astype(work))
        dt = self.precision.compute_dtype
        return self.out_proj(o.reshape(b, s, self.value_dim).astype(dt))

    # --- the calls ----------------------------------------------------------------------------

    def init_state(self, batch: int) -> DeltaState:
        """The state before any token (zeros)."""
        conv = jnp.zeros((batch, self.conv_kernel - 1, self.conv_dim), self.precision.compute_dtype)
        work = _work(conv)
        rec = jnp.zeros((batch, self.num_v_heads, self.head_k_dim, self.head_v_dim), work)
        return DeltaState(conv, rec)

    def __call__(
        self,
        x: Array,
        *,
        segment_ids: Array | None = None,
        return_state: bool = False,
        lengths: Array | None = None,
    ) -> Array | tuple[Array, DeltaState]:
        """Mix a whole sequence ``x`` ``[batch, seq, d_model]`` (every row from its first
        token); with ``return_state`` also the `DeltaState` after its last token, or, for a
        right-padded batch, after each row's ``lengths[r]`` real tokens (the padding's gates
        are zeroed, ``g = β = 0``, so it neither decays nor writes the state). ``segment_ids``
        ``[batch, seq]`` (packed documents): each document is mixed as if alone (module
        docstring)."""
        chex.assert_rank(x, 3)
        if segment_ids is not None:
            chex.assert_shape(segment_ids, x.shape[:2])
        mixed = self.in_proj_qkv(x)
        b, s = x.shape[:2]
        pad = jnp.zeros((b, self.conv_kernel - 1, self.conv_dim), mixed.dtype)
        window = jnp.concatenate([pad, mixed], axis=1)
        q, k, v, g, beta = self._heads(self._conv(window, segment_ids), x)
        if segment_ids is not None:  # a document's first token forgets the state before it
            first = jnp.concatenate(
                [jnp.ones((b, 1), bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
            )
            g = g + jnp.where(first, RESET_LOG_DECAY, 0.0)[..., None].astype(g.dtype)
        if lengths is not None:
            real = (jnp.arange(s)[None, :] < lengths[:, None])[..., None]  # [b, s, 1]
            g, beta = jnp.where(real, g, 0.0), jnp.where(real, beta, 0.0)
        o, final = gated_delta_rule(
            q, k, v, g, beta, chunk_size=self.chunk_size, implementation=self.implementation
        )
        y = self._out(o, x)
        if not return_state:
            return y
        # The convolution's state: the inputs of the row's last K - 1 real tokens, which sit at
        # window[length : length + K - 1] (the window starts with K - 1 zeros).
        ends = jnp.full((b,), s, jnp.int32) if lengths is None else lengths.astype(jnp.int32)
        index = ends[:, None] + jnp.arange(self.conv_kernel - 1, dtype=jnp.int32)[None, :]
        conv = jnp.take_along_axis(window, index[..., None], axis=1)
        return y, DeltaState(conv, final)

    def step(self, x: Array, state: DeltaState) -> tuple[Array, DeltaState]:
        """The tokens ``x`` ``[batch, s, d_model]`` after ``state`` (a decode step, ``s`` small:
        one token, or a speculative draft's few): their outputs and the new state. The rule
        steps through them one by one (`gated_delta_step`), as ``s`` one-token steps would."""
        chex.assert_rank(x, 3)
        s = x.shape[1]
        mixed = self.in_proj_qkv(x)
        window = jnp.concatenate([state.conv.astype(mixed.dtype), mixed], axis=1)
        q, k, v, g, beta = self._heads(self._conv(window), x)
        rec, outs = state.recurrent, []
        for i in range(s):
            o, rec = gated_delta_step(rec, q[:, i], k[:, i], v[:, i], g[:, i], beta[:, i])
            outs.append(o)
        y = self._out(jnp.stack(outs, axis=1), x)
        return y, DeltaState(window[:, s:], rec)
