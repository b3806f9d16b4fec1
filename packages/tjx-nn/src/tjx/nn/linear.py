"""Dense (general) projections, their low-rank adapters (LoRA), and dropout with explicit keys.

Keys in tjx.nn: a model draws one dropout key per call from its own ``nnx.Rngs`` stream (or the
caller's ``rngs=``) and splits it (``split_key``) into one key per use: embedding dropout, every
layer, and inside a layer the attention-probability, residual and MLP dropouts. No key is used
for two draws, so two layers never share a dropout mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.fp8 import Fp8Meta, Fp8Policy, delayed_dot, fp8_dot, init_meta
from tjx.nn.params import Initializer, make_param, normal, zeros
from tjx.nn.precision import Precision

Array = jax.Array


class LoRAAdapter(nnx.Module):
    """A low-rank update ``scale · dropout(x) · A · B`` beside a `Dense` (Hu et al., 2021).

    ``A`` is ``[*in_shape, rank]`` and ``B`` ``[rank, *out_shape]``, both ``nnx.LoRAParam`` (a
    kind of ``nnx.Param``, so a filter can tell adapters from the frozen weights), with a leading
    ``layers`` axis when the `Dense` sits in a scanned stack. ``tjx.nn.add_lora`` makes them: ``B``
    starts at zero, so the adapted model starts as the base model exactly.
    """

    def __init__(self, a: nnx.LoRAParam, b: nnx.LoRAParam, *, scale: float, rate: float) -> None:
        self.lora_a, self.lora_b = a, b
        self.scale, self.rate = float(scale), float(rate)

    def __call__(self, x: Array, n_in: int, rng: Array | None, dtype: jnp.dtype) -> Array:
        """The update for ``x`` (dropout only with a key: a training call)."""
        x = dropout(x, self.rate, rng, deterministic=rng is None)
        h = jnp.tensordot(x.astype(dtype), self.lora_a[...].astype(dtype), axes=n_in)
        return self.scale * jnp.tensordot(h, self.lora_b[...].astype(dtype), axes=1)


class Dense(nnx.Module):
    """``y = x · W + b`` contracting the last ``len(in_shape)`` dims of ``x``.

    The kernel has shape ``in_shape + out_shape`` (e.g. ``[embed, heads, head_dim]`` for a query
    projection) with logical names ``in_names + out_names``; the bias has ``out_shape``. ``lora``
    holds an adapter once ``tjx.nn.add_lora`` has put one here. With ``precision.matmul="fp8"``
    the product is `tjx.nn.fp8.fp8_dot` (float8 operands forward and backward); the bias and an
    adapter's update stay in the compute dtype. With ``fp8_recipe="delayed"`` it is
    `tjx.nn.fp8.delayed_dot`, whose scales and amax history are ``fp8_meta`` (a
    `tjx.nn.fp8.Fp8Meta`, not a parameter; None otherwise).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        in_names: Sequence[str | None],
        out_names: Sequence[str | None],
        *,
        rngs: nnx.Rngs,
        use_bias: bool = True,
        init: Initializer | None = None,
        precision: Precision | None = None,
    ) -> None:
        self.precision = precision or Precision()
        self.n_in = len(in_shape)
        dtype = self.precision.param_dtype
        self.kernel = make_param(
            rngs,
            init or normal(0.02),
            (*in_shape, *out_shape),
            (*in_names, *out_names),
            dtype,
        )
        self.bias = (
            make_param(rngs, zeros(), tuple(out_shape), tuple(out_names), dtype)
            if use_bias
            else None
        )
        # Data (a sub-module once set), not a static attribute: `add_lora` assigns it later.
        self.lora: LoRAAdapter | None = nnx.data(None)
        p = self.precision
        self.fp8_meta = (
            Fp8Meta(init_meta(p.fp8_amax_history))
            if p.fp8 and p.fp8_recipe == "delayed"
            else nnx.data(None)
        )

    def __call__(self, x: Array, rng: Array | None = None, *, add_bias: bool = True) -> Array:
        """Project ``x`` in the compute dtype (``rng``: the adapter's dropout key, if any).

        ``add_bias=False`` leaves the bias to the caller, which adds it where its gradient is
        summed with others (`tjx.nn.norms.residual_layer_norm`); no adapter may be attached.
        """
        dt = self.precision.compute_dtype
        kernel = self.kernel[...].astype(dt)
        if self.fp8_meta is not None:
            y = delayed_dot(x.astype(dt), kernel, self.fp8_meta[...], self.n_in)
        elif self.precision.fp8:
            policy = Fp8Policy(self.precision.fp8_scaling)
            y = fp8_dot(x.astype(dt), kernel, self.n_in, policy)
        else:
            y = jnp.tensordot(x.astype(dt), kernel, axes=self.n_in)
        if self.bias is not None and add_bias:
            y = y + self.bias[...].astype(dt)
        elif self.bias is not None and self.lora is not None:
            raise ValueError(
                "Dense(add_bias=False) with a LoRA adapter: the adapter's update "
                "goes after the bias; call it with add_bias=True"
            )
        if self.lora is not None:
            y = y + self.lora(x, self.n_in, rng, dt)
        return y


@jax.custom_vjp
def stacked_projection(
    x: Array, kernels: tuple[Array, ...], biases: tuple[Array, ...]
) -> tuple[Array, ...]:
    """``x · W + b`` for each kernel ``W`` (``[d, *out]``, all alike) and bias ``b`` (``out``),
    whose backward takes the kernels as one: ``[..., d] → n × [..., *out]``.

    The forward is each projection's own product and sum (XLA merges the products itself).
    Autodiff's backward gives ``x`` one gradient product per kernel and adds them in the compute
    dtype, and each bias one sum (two kernels on a GPU); here the output gradients are stacked
    (``[..., n, *out]``) and the input's gradient is one product over all of them (accumulated
    in float32 across the kernels: not bitwise autodiff's, closer to exact), the kernels'
    gradients one product and the biases' one sum: seven launches fewer a layer in the
    deviceless H100 compile of gpt2_small's step. Stacking (not concatenating a head
    axis) keeps each kernel's sharding.

    Parameters
    ----------
    x : Array
        ``[..., d]`` in the compute dtype.
    kernels : tuple of Array
        ``[d, *out]`` each, in the compute dtype.
    biases : tuple of Array
        ``out`` each, in the compute dtype.

    Returns
    -------
    tuple of Array
        ``[..., *out]`` per kernel.
    """
    return _projections(x, kernels, biases)


def _projections(
    x: Array, kernels: tuple[Array, ...], biases: tuple[Array, ...]
) -> tuple[Array, ...]:
    """Each projection's own product and sum (the forward of both custom VJPs here)."""
    return tuple(jnp.tensordot(x, w, axes=1) + b for w, b in zip(kernels, biases, strict=True))


def _stacked_fwd(
    x: Array, kernels: tuple[Array, ...], biases: tuple[Array, ...]
) -> tuple[tuple[Array, ...], tuple[Array, tuple[Array, ...], tuple[Array, ...]]]:
    return stacked_projection(x, kernels, biases), (x, kernels, biases)


def _stacked_bwd(
    res: tuple[Array, tuple[Array, ...], tuple[Array, ...]], dys: tuple[Array, ...]
) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]]:
    x, kernels, biases = res
    # One barrier over the output gradients and the kernels: the kernels' stack waits for the
    # gradients (else XLA computes every layer's stack early and holds them all at the step's
    # peak), and XLA cannot fuse the kernels' producers (a cast of a slice of the flat parameter
    # buffer) into it: it reads the cast kernels the forward made.
    dys, kernels = jax.lax.optimization_barrier((dys, kernels))
    g = jnp.stack(dys, axis=x.ndim - 1)  # [..., n, *out]
    return _stacked_grads(x, kernels, biases, g)


def _stacked_grads(
    x: Array, kernels: tuple[Array, ...], biases: tuple[Array, ...], g: Array
) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]]:
    """The gradients of ``x``, the kernels and the biases (none: ``()``) from the stacked
    output gradient ``g`` ``[..., n, *out]``: one product for ``x``, one for the kernels, one
    sum."""
    out = kernels[0].ndim - 1
    lead = x.ndim - 1
    w = jnp.stack(kernels, axis=1)  # [d, n, *out]
    tail = tuple(range(lead, lead + 1 + out))
    dx = jnp.tensordot(g, w, axes=(tail, tuple(range(1, 2 + out))))
    rows = tuple(range(lead))
    dw = jnp.tensordot(x, g, axes=(rows, rows))  # [d, n, *out]
    db = jnp.sum(g, axis=rows) if biases else None  # [n, *out]
    return (
        dx.astype(x.dtype),
        tuple(dw[:, i].astype(k.dtype) for i, k in enumerate(kernels)),
        () if db is None else tuple(db[i].astype(b.dtype) for i, b in enumerate(biases)),
    )


stacked_projection.defvjp(_stacked_fwd, _stacked_bwd)


@jax.custom_vjp
def joint_projection(x: Array, kernels: tuple[Array, ...], biases: tuple[Array, ...]) -> Array:
    """`stacked_projection` as ONE array: ``[..., d] → [..., n, *out]``, projection ``i`` in
    slot ``i`` of the new axis, and a backward that takes that array's gradient as it comes.

    Without biases (``()``: a consumer that adds them as it reads the output takes them, as
    `tjx.kernels.flash_attention_qkv` does) the forward is one product with the kernels side
    by side, ``[d, n·out]``: XLA's GPU compiler reads them into its GEMM in place and the GEMM's
    ``[..., n·out]`` output is the result, nothing written after it (deviceless H100 compile of
    gpt2_small: a product with the kernels stacked ``[d, n, *out]`` wrote each layer's stack
    from the float32 parameters, and the stack of three products copied the GEMM's output).
    With biases it is `stacked_projection`'s products and sums, stacked (one loop over the
    GEMM's output adds them). The backward is `stacked_projection`'s without its stack of the
    output gradients: a consumer that writes the gradient in this layout (the same kernels'
    backward) hands it over with no concatenation.

    Parameters
    ----------
    x, kernels : Array, tuple of Array
        As `stacked_projection`'s.
    biases : tuple of Array
        As `stacked_projection`'s, or ``()``: none (the consumer adds them).

    Returns
    -------
    Array
        ``[..., n, *out]``.
    """
    if biases:
        return jnp.stack(_projections(x, kernels, biases), axis=x.ndim - 1)
    # The kernels side by side as one [d, n·out] matrix: the operand XLA's GPU compiler reads
    # into its GEMM in place, whose [..., n·out] output is the result (a reshape: no copy).
    out = kernels[0].shape[1:]
    w = jnp.concatenate([k.reshape(k.shape[0], -1) for k in kernels], axis=1)
    return jnp.dot(x, w).reshape(*x.shape[:-1], len(kernels), *out)


def _joint_fwd(
    x: Array, kernels: tuple[Array, ...], biases: tuple[Array, ...]
) -> tuple[Array, tuple[Array, tuple[Array, ...], tuple[Array, ...]]]:
    return joint_projection(x, kernels, biases), (x, kernels, biases)


def _joint_bwd(
    res: tuple[Array, tuple[Array, ...], tuple[Array, ...]], g: Array
) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]]:
    x, kernels, biases = res
    # The barrier of `_stacked_bwd`: the kernels' stack waits for the gradient.
    g, kernels = jax.lax.optimization_barrier((g, kernels))
    return _stacked_grads(x, kernels, biases, g)


joint_projection.defvjp(_joint_fwd, _joint_bwd)


def column_sums(arrays: tuple[Array, ...], axes: tuple[int, ...]) -> tuple[Array, ...]:
    """``jnp.sum(a, axes)`` of each of ``arrays`` (one shape and dtype) as one variadic reduce.

    Each sum adds the same elements as its own ``jnp.sum`` would, in its dtype; the point is the
    launches: XLA's GPU compiler gives each reduce of many rows two kernels and leaves sibling
    reduces apart, so ``n`` sums cost ``2n`` kernels one by one and 2 together.

    Parameters
    ----------
    arrays : tuple of Array
        The summands, all of one shape and dtype.
    axes : tuple of int
        The axes summed over (non-negative).

    Returns
    -------
    tuple of Array
        One sum per array, in order.
    """
    zero = jnp.zeros((), arrays[0].dtype)

    def add(a: tuple[Array, ...], b: tuple[Array, ...]) -> tuple[Array, ...]:
        return tuple(x + y for x, y in zip(a, b, strict=True))

    return tuple(jax.lax.reduce(arrays, (zero,) * len(arrays), add, axes))


def dropout(x: Array, rate: float, rng: Array | None, *, deterministic: bool) -> Array:
    """Inverted dropout with an explicit key; identity when deterministic or ``rate == 0``.

    Parameters
    ----------
    x : Array
        Input.
    rate : float
        Drop probability in ``[0, 1)``; kept values are scaled by ``1 / (1 - rate)``.
    rng : Array, optional
        PRNG key (required when active).
    deterministic : bool
        Disable dropout.

    Returns
    -------
    Array
        Same shape and dtype as ``x``.

    Raises
    ------
    ValueError
        If dropout is active but no key was given.
    """
    if deterministic or rate == 0.0:
        return x
    if rng is None:
        raise ValueError("dropout with rate > 0 and deterministic=False needs a PRNG key")
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def split_key(rng: Array | None, num: int) -> list[Array | None]:
    """Split ``rng`` into ``num`` independent keys, or ``num`` Nones when there is no key.

    Give each random draw its own key from here; ``rng`` itself should not be drawn from after
    it has been split.
    """
    if rng is None:
        return [None] * num
    return list(jax.random.split(rng, num))


def dropout_stream(rngs: nnx.Rngs, active: bool) -> nnx.Rngs | None:
    """A model's own dropout key stream, taken from the construction ``rngs`` (None if inactive).

    The stream's counter advances on every draw, so eager calls and ``nnx.jit`` steps get new
    keys. A plain ``jax.jit`` over ``nnx.split``/``nnx.merge`` that does not return the updated
    state replays the same count, hence the same dropout masks, at every step: thread the state
    back, or pass ``rngs=nnx.Rngs(dropout=jax.random.fold_in(key, step))`` per step.

    Parameters
    ----------
    rngs : nnx.Rngs
        The model's construction keys; the ``dropout`` stream is used, else ``default``.
    active : bool
        Whether the model has any dropout.

    Returns
    -------
    nnx.Rngs or None

    Raises
    ------
    ValueError
        ``rngs`` has neither a ``dropout`` nor a ``default`` stream.
    """
    if not active:
        return None
    try:
        key = rngs.dropout()
    except AttributeError as err:
        raise ValueError(
            "a model with dropout > 0 needs a `dropout` (or default) stream in rngs: build it "
            "with nnx.Rngs(seed) or nnx.Rngs(params=..., dropout=...)"
        ) from err
    return nnx.Rngs(dropout=key)


def dropout_key(
    stream: nnx.Rngs | None, deterministic: bool, rngs: nnx.Rngs | None = None
) -> Array | None:
    """One new dropout key for a model's forward pass.

    Parameters
    ----------
    stream : nnx.Rngs or None
        The model's own stream (`dropout_stream`); None: the model has no dropout.
    deterministic : bool
        Dropout off.
    rngs : nnx.Rngs, optional
        Keys to draw from instead of ``stream`` (``nnx.Rngs(dropout=k)``).

    Returns
    -------
    Array or None
        None when ``deterministic`` or without dropout; else a key drawn anew on every call.
    """
    if deterministic or stream is None:
        return None
    return (rngs or stream).dropout()
