"""RoPE scalings of published long-context checkpoints: one typed setting and its frequencies.

``RopeScaling(type=...)`` is the ``rope_scaling`` model setting. Each type changes RoPE's inverse
frequencies (and yarn/longrope scale the rotated queries and keys by an ``attention_factor``),
exactly as transformers' ``modeling_rope_utils`` computes them for the same config:

=========== ============================================================== =====================
type        inverse frequencies                                            fields
=========== ============================================================== =====================
linear      ``inv / factor`` (positions interpolated)                      factor
dynamic     NTK: base ``θ·(factor·L/orig − factor + 1)^(d/(d−2))`` for a   factor, original
            call whose longest position ``L`` passes ``orig``
yarn        blend of ``inv`` and ``inv / factor`` over a ramp of dims      factor, original,
            between ``beta_fast`` and ``beta_slow`` rotations in ``orig``;  beta_*, mscale*,
            attention factor ``0.1·ln(factor) + 1`` unless given            attention_factor,
                                                                           truncate
longrope    ``inv / long_factor`` past ``orig`` tokens, else               short/long_factor,
            ``/ short_factor``; attention factor                           original, factor
            ``sqrt(1 + ln(factor)/ln(orig))`` unless given                 (attention_factor)
llama3      low frequencies / factor, high kept, blended between           factor, low/high
                                                                           _freq_factor, orig
=========== ============================================================== =====================

(``orig`` is ``original_max_position_embeddings``: the context the model was pretrained at.) The
``dynamic`` and ``longrope`` choices depend on the call's longest position (``max(positions) +
1``, over the whole batch, as transformers does per forward); the others are fixed numbers,
computed once in float64. Saved configs from before the typed form hold Llama 3's four numbers
``[factor, low_freq_factor, high_freq_factor, original]``: :meth:`RopeScaling.parse` still reads
them.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tjx.core.fields import setting

Array = jax.Array

#: The RoPE scaling types tjx computes (transformers' ``rope_type`` names).
ROPE_SCALINGS: tuple[str, ...] = ("linear", "dynamic", "yarn", "longrope", "llama3")
#: The fields each type reads (besides ``type``); any other set field is refused.
_FIELDS: dict[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "dynamic": ("factor", "original_max_position_embeddings"),
    "yarn": (
        "factor",
        "original_max_position_embeddings",
        "beta_fast",
        "beta_slow",
        "mscale",
        "mscale_all_dim",
        "attention_factor",
        "truncate",
    ),
    "longrope": (
        "factor",
        "original_max_position_embeddings",
        "attention_factor",
        "short_factor",
        "long_factor",
    ),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "dynamic": ("factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
    "longrope": ("factor", "original_max_position_embeddings", "short_factor", "long_factor"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}
_LEGACY = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """How RoPE's frequencies are scaled for a context longer than pretraining's.

    Only the fields of ``type`` may be set (see the module's table); the others stay None.
    ``short_factor``/``long_factor`` (longrope) hold ``head_dim // 2`` numbers each. ``type``
    None with every field None is "no scaling" (what an app writes for an unset section):
    :meth:`parse` reads it as None.
    """

    type: str | None = setting(
        None, choices=ROPE_SCALINGS, help="scaling type (transformers' names); null: none"
    )
    factor: float | None = setting(None, help="context extension factor (> 0; >= 1 usually)")
    original_max_position_embeddings: int | None = setting(
        None, help="context the model was pretrained at (dynamic, yarn, longrope, llama3)"
    )
    low_freq_factor: float | None = setting(None, help="llama3: low-frequency wavelength factor")
    high_freq_factor: float | None = setting(None, help="llama3: high-frequency wavelength factor")
    beta_fast: float | None = setting(None, help="yarn: fast rotation bound (None: 32)")
    beta_slow: float | None = setting(None, help="yarn: slow rotation bound (None: 1)")
    mscale: float | None = setting(None, help="yarn: attention-factor numerator scale")
    mscale_all_dim: float | None = setting(None, help="yarn: attention-factor denominator scale")
    attention_factor: float | None = setting(
        None, help="yarn/longrope: scale of the rotated queries and keys (None: derived)"
    )
    truncate: bool | None = setting(None, help="yarn: round the ramp's ends (None: true)")
    short_factor: list[float] | None = setting(None, help="longrope: per-frequency short factors")
    long_factor: list[float] | None = setting(None, help="longrope: per-frequency long factors")

    def __post_init__(self) -> None:
        name = "RopeScaling"
        if self.type is None:
            set_ = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]
            if set_:
                raise ValueError(
                    f"{name}.type: None (no scaling) with {', '.join(set_)} set; choose one of "
                    f"{', '.join(ROPE_SCALINGS)}"
                )
            return
        if self.type not in ROPE_SCALINGS:
            raise ValueError(f"{name}.type must be one of {ROPE_SCALINGS}; got {self.type!r}")
        used = _FIELDS[self.type]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "type" or value is None:
                continue
            if f.name not in used:
                raise ValueError(
                    f"{name}.{f.name}: type {self.type!r} does not use it (it reads "
                    f"{', '.join(used)}); set it to None"
                )
        for field in _REQUIRED[self.type]:
            if getattr(self, field) is None:
                raise ValueError(f"{name}.{field}: type {self.type!r} needs it; got None")
        for field in ("factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow",
                      "mscale", "mscale_all_dim", "attention_factor"):  # fmt: skip
            value = getattr(self, field)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise ValueError(f"{name}.{field} must be a number > 0; got {value!r}")
                object.__setattr__(self, field, float(value))
        original = self.original_max_position_embeddings
        if original is not None and (
            isinstance(original, bool) or not isinstance(original, int | float)
            or int(original) != original or original < 1
        ):  # fmt: skip
            raise ValueError(
                f"{name}.original_max_position_embeddings must be a positive int; got {original!r}"
            )
        if original is not None:
            object.__setattr__(self, "original_max_position_embeddings", int(original))
        if self.type == "llama3":
            assert self.low_freq_factor is not None and self.high_freq_factor is not None
            if not self.low_freq_factor < self.high_freq_factor:
                raise ValueError(
                    f"{name}.high_freq_factor must exceed low_freq_factor "
                    f"({self.low_freq_factor}); got {self.high_freq_factor}"
                )
        if self.truncate is not None and not isinstance(self.truncate, bool):
            raise ValueError(f"{name}.truncate must be true or false; got {self.truncate!r}")
        for field in ("short_factor", "long_factor"):
            value = getattr(self, field)
            if value is None:
                continue
            ok = isinstance(value, list | tuple) and len(value) > 0
            ok = ok and all(
                isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value
            )
            if not ok:
                raise ValueError(f"{name}.{field} must be a list of numbers > 0; got {value!r}")
            # A tuple: the setting is hashable (a model holds it as a static attribute).
            object.__setattr__(self, field, tuple(float(v) for v in value))

    @classmethod
    def parse(cls, value: Any, where: str = "rope_scaling") -> RopeScaling | None:
        """A `RopeScaling` from None, itself, a mapping (``type`` or transformers'
        ``rope_type``) or Llama 3's legacy four numbers; ``ValueError`` naming ``where``. An
        unset one (``type`` and every field None, e.g. a section an app expanded) is None.
        """
        if value is None:
            return None
        if isinstance(value, RopeScaling):
            return None if value.type is None else value
        if isinstance(value, Mapping):
            data = dict(value)
            kind = data.pop("type", None)
            alias = data.pop("rope_type", None)
            kind = kind if kind is not None else alias
            if kind is None and all(v is None for v in data.values()):
                return None
            if kind not in ROPE_SCALINGS:
                raise ValueError(
                    f"{where}.type: {kind!r} is not a RoPE scaling tjx computes; choose one of "
                    f"{', '.join(ROPE_SCALINGS)}"
                )
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
            try:
                return cls(type=kind, **data)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        if isinstance(value, list | tuple) and len(value) == 4:
            try:
                return cls(type="llama3", **dict(zip(_LEGACY, value, strict=True)))
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        raise ValueError(
            f"{where} must be a mapping with a type ({', '.join(ROPE_SCALINGS)}), Llama 3's "
            f"[factor, low_freq_factor, high_freq_factor, original_max_position_embeddings], or "
            f"None; got {value!r}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The set fields as plain data (``type`` first; lists for the factor tuples)."""
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "type" and value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def depends_on_length(self) -> bool:
        """Whether the frequencies depend on the call's longest position (dynamic, longrope)."""
        return self.type in ("dynamic", "longrope")


def _base(head_dim: int, theta: float) -> np.ndarray:
    half = head_dim // 2
    return 1.0 / (theta ** (np.arange(half, dtype=np.float64) * 2 / head_dim))


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(head_dim: int, theta: float, s: RopeScaling) -> tuple[np.ndarray, float]:
    factor, original = s.factor, s.original_max_position_embeddings
    assert factor is not None and original is not None
    if s.attention_factor is not None:
        attention = s.attention_factor
    elif s.mscale and s.mscale_all_dim:
        attention = _yarn_mscale(factor, s.mscale) / _yarn_mscale(factor, s.mscale_all_dim)
    else:
        attention = _yarn_mscale(factor)
    fast, slow = s.beta_fast or 32.0, s.beta_slow or 1.0

    def dim_of(rotations: float) -> float:  # the dimension that turns `rotations` times
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_of(fast), dim_of(slow)
    if s.truncate is not False:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    keep = 1.0 - ramp  # 1: extrapolate (the original frequency), 0: interpolate (/ factor)
    inv = _base(head_dim, theta)
    return inv / factor * (1.0 - keep) + inv * keep, attention


def _llama3(head_dim: int, theta: float, s: RopeScaling) -> np.ndarray:
    factor, low, high = s.factor, s.low_freq_factor, s.high_freq_factor
    original = s.original_max_position_embeddings
    assert factor is not None and low is not None and high is not None and original is not None
    inv = _base(head_dim, theta)
    wavelen = 2 * math.pi / inv
    low_wavelen, high_wavelen = original / low, original / high
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled)


def _longrope_attention(s: RopeScaling) -> float:
    original = s.original_max_position_embeddings
    assert original is not None and s.factor is not None
    if s.attention_factor is not None:
        return s.attention_factor
    if s.factor <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(s.factor) / math.log(original))


def rope_parameters(
    head_dim: int, theta: float, scaling: RopeScaling | None, seq_len: int | None = None
) -> tuple[np.ndarray, float]:
    """RoPE's inverse frequencies ``[head_dim // 2]`` (float64) and attention factor.

    Parameters
    ----------
    head_dim : int
        Even head width.
    theta : float
        RoPE base.
    scaling : RopeScaling, optional
        None: plain RoPE (factor 1).
    seq_len : int, optional
        The call's longest position + 1, for ``dynamic`` and ``longrope`` (None: at most the
        original context, i.e. their unscaled / short frequencies, as transformers at init).

    Returns
    -------
    (numpy.ndarray, float)
    """
    inv = _base(head_dim, theta)
    if scaling is None:
        return inv, 1.0
    s = scaling
    if s.type == "linear":
        assert s.factor is not None
        return inv / s.factor, 1.0
    if s.type == "llama3":
        return _llama3(head_dim, theta, s), 1.0
    if s.type == "yarn":
        return _yarn(head_dim, theta, s)
    original = s.original_max_position_embeddings
    assert original is not None
    if s.type == "dynamic":
        assert s.factor is not None
        length = original if seq_len is None else max(seq_len, original)
        power = head_dim / (head_dim - 2)
        base = theta * ((s.factor * length / original) - (s.factor - 1)) ** power
        return _base(head_dim, base), 1.0
    assert s.short_factor is not None and s.long_factor is not None
    factors = s.long_factor if seq_len is not None and seq_len > original else s.short_factor
    if len(factors) != head_dim // 2:
        raise ValueError(
            f"rope_scaling short_factor/long_factor need head_dim // 2 = {head_dim // 2} "
            f"numbers each; got {len(factors)}"
        )
    return inv / np.asarray(factors, np.float64), _longrope_attention(s)


def rope_frequencies(
    positions: Array,
    head_dim: int,
    theta: float,
    scaling: RopeScaling | None,
    dtype: Any,
    *,
    length: Array | None = None,
) -> tuple[Array, Any]:
    """``(inv_freq [head_dim // 2], attention factor)`` for a call at ``positions`` (traced).

    Fixed scalings are float64 constants cast to ``dtype``; ``dynamic`` computes its base from
    the call's ``length`` (default: its longest position + 1) in ``dtype``, ``longrope`` picks
    its long or short factors by it.
    """
    if scaling is None:  # computed in `dtype`, as before scalings were typed (and transformers)
        half = head_dim // 2
        return 1.0 / (theta ** (jnp.arange(half, dtype=dtype) / half)), 1.0
    if not scaling.depends_on_length:
        inv, attention = rope_parameters(head_dim, theta, scaling)
        return jnp.asarray(inv, dtype), attention
    if length is None:
        length = jnp.max(positions).astype(jnp.int32) + 1
    original = scaling.original_max_position_embeddings
    assert original is not None
    if scaling.type == "longrope":
        short, attention = rope_parameters(head_dim, theta, scaling, None)
        long, _ = rope_parameters(head_dim, theta, scaling, original + 1)
        chosen = jnp.where(length > original, jnp.asarray(long, dtype), jnp.asarray(short, dtype))
        return chosen, attention
    assert scaling.factor is not None
    longest = jnp.maximum(length, original).astype(dtype)
    power = head_dim / (head_dim - 2)
    base = theta * ((scaling.factor * longest / original) - (scaling.factor - 1)) ** power
    steps = jnp.arange(head_dim // 2, dtype=dtype) * 2 / head_dim
    return 1.0 / (base**steps), 1.0
