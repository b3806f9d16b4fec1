"""The position section of a model config (`PositionConfig`): which position encoding
(:mod:`tjx.nn.positions`, :mod:`tjx.nn.relative_bias`) and its settings: RoPE's base, share,
scaling (:mod:`tjx.nn.rope_scaling`) and Gemma 3's local base; T5's relative buckets. The
section checks its own values; what it needs of the rest of the model (an even ``head_dim``,
multi-head attention for a partial RoPE, a window for the local base) the model config checks.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass

from tjx.core.config.values import choice, positive_float
from tjx.core.fields import setting
from tjx.nn.rope_scaling import ROPE_SCALINGS, RopeScaling

POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "t5", "none")


@dataclass(frozen=True, kw_only=True)
class PositionConfig:
    """A model's position encoding (``model.position``).

    ``kind`` None is the family's (learned; LLaMA's rope; the encoder-decoder's sinusoidal).
    ``kind="t5"`` adds T5's bucketed relative position bias (``relative_buckets`` buckets,
    log-spaced up to ``relative_max_distance``) to the self-attention logits instead of any
    absolute position embedding. ``rope_scaling`` is a `RopeScaling` (a mapping with a ``type``,
    or Llama 3's four legacy numbers, is read into one). A bad value raises ``ValueError`` at
    construction naming ``PositionConfig.<field>``.
    """

    kind: str | None = setting(
        None,
        choices=POSITIONS,
        help="position encoding (t5: bucketed relative bias); None: the family's (LLaMA: rope)",
    )
    rope_theta: float = setting(10000.0, help="rope's base wavelength (Llama 3: 500000)")
    rope_fraction: float = setting(
        1.0, help="share of each q/k head RoPE rotates, its first dims (GLM-4.5: 0.5)"
    )
    rope_scaling: RopeScaling | None = setting(
        None,
        help=f"rope frequency scaling (type: {', '.join(ROPE_SCALINGS)}); None: plain rope",
    )
    rope_local_theta: float | None = setting(
        None, help="RoPE base of windowed layers, unscaled (Gemma 3); None: as the others"
    )
    relative_buckets: int = setting(32, help="kind t5: buckets (even, >= 4)")
    relative_max_distance: int = setting(128, help="kind t5: longest bucketed distance")

    def __post_init__(self) -> None:
        cls = "PositionConfig"
        if self.kind is not None:
            choice(cls, "kind", self.kind, POSITIONS)
        scaling = RopeScaling.parse(self.rope_scaling, f"{cls}.rope_scaling")
        object.__setattr__(self, "rope_scaling", scaling)  # an unset section (all null): None
        f = self.rope_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0.0 < f <= 1.0:
            raise ValueError(f"{cls}.rope_fraction must be a number in (0, 1]; got {f!r}")
        object.__setattr__(self, "rope_fraction", float(f))
        local = positive_float(cls, "rope_local_theta", self.rope_local_theta)
        object.__setattr__(self, "rope_local_theta", local)
        nb, md = self.relative_buckets, self.relative_max_distance
        if isinstance(nb, bool) or not isinstance(nb, int) or nb < 4 or nb % 2:
            # Even: the encoder splits the buckets in half per direction (T5's layout).
            raise ValueError(f"{cls}.relative_buckets must be an even int >= 4; got {nb!r}")
        # The causal decoder's exact range is nb // 2 distances; log-spaced buckets start there.
        if isinstance(md, bool) or not isinstance(md, int) or md <= nb // 2:
            raise ValueError(
                f"{cls}.relative_max_distance must be an int > relative_buckets // 2 = "
                f"{nb // 2}; got {md!r}"
            )


#: The section's old flat keys in a model section → their key in ``position`` (``position``
#: itself, a name then, is ``position.kind``).
FLAT_POSITION_KEYS = {
    "position": "kind",
    **{
        name: name
        for name in (
            "rope_theta",
            "rope_fraction",
            "rope_scaling",
            "rope_local_theta",
            "relative_buckets",
            "relative_max_distance",
        )
    },
}
