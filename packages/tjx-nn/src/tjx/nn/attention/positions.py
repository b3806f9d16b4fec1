"""How an attention layer applies positions to its queries and keys: RoPE at the layer's base and
scaling (a windowed layer's own local base, Gemma 3), over each head's first dims only (GLM's
partial RoPE) or a share of its pairs (proportional RoPE of global layers); the weightless RMS of
rotated q/k (``qk_l2_norm``); NoPE layers (`tjx.nn.family_config.nope_layers`), unrotated, their
queries tempered by position.

`LayerPositions` holds one layer's settings (`tjx.nn.attention.Attention` builds it from the
config) and applies them; it holds no parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from tjx.nn.positions import apply_rope, proportional_rope

Array = jax.Array
#: A layer's window switch: None (the layer's own setting), a bool, or a traced bool (scanned
#: layers of a mixed ``attention.window_pattern``).
Local = bool | Array | None


@dataclasses.dataclass(frozen=True)
class LayerPositions:
    """One attention layer's positional settings.

    Parameters
    ----------
    rotated : int
        The dims of each q/k head RoPE rotates (``rope_fraction``); the rest pass through.
    rope_proportion : float
        The share of RoPE pairs a global layer turns (1: all, plain RoPE).
    rope_theta : float
        RoPE's base.
    rope_scaling : RopeScaling or None
        RoPE's scaling (``tjx.nn.rope_scaling``).
    rope_local_theta : float, optional
        The windowed layers' own base (Gemma 3), unscaled; None: ``rope_theta``.
    window : int, optional
        The layer's sliding window (whether a local base can apply).
    global_nope : bool
        The global layers rotate nothing (NoPE).
    qk_l2 : bool
        Rotated queries and keys over their RMS (no weight).
    l2_eps : float
        That RMS's epsilon.
    temperature : (float, float), optional
        A NoPE layer's query temperature ``(floor, scale)``; None: untempered.
    """

    rotated: int
    rope_proportion: float
    rope_theta: float
    rope_scaling: Any
    rope_local_theta: float | None
    window: int | None
    global_nope: bool
    qk_l2: bool
    l2_eps: float
    temperature: tuple[float, float] | None

    def rope(
        self, x: Array, positions: Array, length: Array | None = None, local: Local = None
    ) -> Array:
        """``x`` rotated as this layer's kind says: a windowed layer (``local``, as in
        `Attention._windowed`) of a config with ``rope_local_theta`` at that base, unscaled;
        else at ``rope_theta`` with ``rope_scaling``. A traced ``local`` (scanned layers of a mixed
        pattern) picks between both rotations. With ``rope_fraction`` below 1 only each head's
        first ``rotated`` dims turn (the rest pass through, as in GLM-4.5).

        Parameters
        ----------
        x : Array
            Queries or keys ``[b, s, heads, head_dim]``.
        positions : Array
            int ``[b, s]`` absolute positions.
        length : Array, optional
            The call's length, for a scaling that turns with it (dynamic, longrope).
        local : bool or Array, optional
            Whether the layer's window applies (`Local`).

        Returns
        -------
        Array
            ``x`` rotated, in its shape and dtype.
        """
        if self.rotated < x.shape[-1]:
            turned = self.rope(x[..., : self.rotated], positions, length, local)
            return jnp.concatenate([turned, x[..., self.rotated :]], axis=-1)

        def wide() -> Array:
            if self.rope_proportion < 1.0:  # proportional RoPE of global layers
                return proportional_rope(
                    x, positions, theta=self.rope_theta, proportion=self.rope_proportion
                )
            return apply_rope(
                x, positions, theta=self.rope_theta, scaling=self.rope_scaling, length=length
            )

        if self.rope_local_theta is None or self.window is None or local is False:
            return wide()
        near = apply_rope(x, positions, theta=self.rope_local_theta)
        if local is None or local is True:
            return near
        return jnp.where(local, near, wide())

    def apply(
        self, x: Array, positions: Array, local: Local = None, length: Array | None = None
    ) -> Array:
        """``x`` [..., heads, head_dim] with this layer's positions: rotated (`rope`) and, with
        ``qk_l2_norm``, over its RMS; a NoPE layer's (with ``global_nope``: a global one)
        unchanged.

        Parameters
        ----------
        x, positions, local, length
            As for `rope`.

        Returns
        -------
        Array
            ``x`` with its positions, in its shape and dtype.
        """

        def rotated() -> Array:
            y = self.rope(x, positions, length, local)
            if not self.qk_l2:
                return y
            f32 = y.astype(jnp.promote_types(y.dtype, jnp.float32))
            normed = f32 * jax.lax.rsqrt(jnp.mean(f32 * f32, -1, keepdims=True) + self.l2_eps)
            return normed.astype(y.dtype)

        if not self.global_nope or local is None or local is True:
            return rotated()
        if local is False:
            return x
        return jnp.where(local, rotated(), x)

    def temper(self, q: Array, positions: Array, local: Local) -> Array:
        """The queries of a NoPE layer times ``1 + scale · log(1 + floor((p + 1) /
        floor))`` at position ``p`` (transformers' ``attn_temperature_tuning``); others unchanged.

        Parameters
        ----------
        q : Array
            Queries ``[b, s, heads, head_dim]``.
        positions : Array
            int ``[b, s]`` absolute positions.
        local : bool or Array, optional
            Whether the layer's window applies: a local layer is not tempered.

        Returns
        -------
        Array
            ``q`` tempered, in its shape and dtype.
        """
        if self.temperature is None or local is None or local is True:
            return q
        floor, scale = self.temperature
        f32 = jnp.promote_types(q.dtype, jnp.float32)
        p = positions.astype(f32)
        factor = jnp.log1p(jnp.floor((p + 1.0) / floor)) * scale + 1.0  # [b, s]
        tempered = (q.astype(f32) * factor[..., None, None]).astype(q.dtype)
        return tempered if local is False else jnp.where(local, q, tempered)
