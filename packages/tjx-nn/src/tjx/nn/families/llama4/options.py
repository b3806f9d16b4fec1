"""Llama 4's option section of a model config (`Llama4Options`, ``model.llama4``): its NoPE
global layers and their queries' temperature. What they do: :mod:`tjx.nn.family_config`.

It imports nothing of tjx.nn, so that the model config (:mod:`tjx.nn.configs`) holds it without
loading the family's layers; the model config calls `check_model` for what the section needs of
the rest of the model (RoPE, a global layer in ``attention.window_pattern``).
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tjx.core.fields import setting

#: The default temperature scale (Llama 4's ``attn_scale``), which only a floor makes act.
DEFAULT_SCALE = 0.1


@dataclass(frozen=True, kw_only=True)
class Llama4Options:
    """Llama 4's NoPE switches (``model.llama4``).

    Every bad value raises ``ValueError`` at construction naming ``Llama4Options.<field>``.
    """

    global_nope: bool = setting(
        False, help="global layers (attention.window_pattern) rotate no position: NoPE"
    )
    nope_temperature_floor: float | None = setting(
        None, help="NoPE layers: q x 1 + scale·log(1 + floor((p+1)/floor)); None: off"
    )
    nope_temperature_scale: float = setting(
        DEFAULT_SCALE, help="NoPE layers: the temperature's scale (Llama 4's attn_scale)"
    )

    def __post_init__(self) -> None:
        cls = type(self).__name__
        floor = self.nope_temperature_floor
        if floor is not None:
            ok = isinstance(floor, int | float) and not isinstance(floor, bool)
            if not ok or not 0.0 < float(floor) < math.inf:
                raise ValueError(
                    f"{cls}.nope_temperature_floor must be a positive number or None; got "
                    f"{floor!r}"
                )
            floor = float(floor)
            object.__setattr__(self, "nope_temperature_floor", floor)
        scale = self.nope_temperature_scale
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not math.isfinite(scale)
        ):
            raise ValueError(f"{cls}.nope_temperature_scale must be a number; got {scale!r}")
        object.__setattr__(self, "nope_temperature_scale", float(scale))
        if (floor is None and scale != DEFAULT_SCALE) or (
            floor is not None and not self.global_nope
        ):
            raise ValueError(
                f"{cls}.nope_temperature_floor/scale: only NoPE layers (global_nope) are "
                f"tempered; got floor {floor}, scale {scale}, global_nope {self.global_nope}"
            )

    def temperature(self) -> tuple[float, float] | None:
        """The NoPE layers' query temperature ``(floor, scale)``; None: untempered."""
        floor = self.nope_temperature_floor
        return None if floor is None else (floor, self.nope_temperature_scale)


def check_model(
    options: Llama4Options,
    cls: str,
    *,
    qk_l2_norm: bool,
    position: str | None,
    attention: Any,
    layer_locals: tuple[bool, ...],
) -> None:
    """What the section (``options``) and ``qk_l2_norm`` (Llama 4's weightless q/k norm) need of
    the rest of a model of class ``cls``: they act only on rotated (``position`` kind "rope",
    the ``attention`` section's type "mha") layers, and NoPE on a global layer (``layer_locals``:
    each layer's local switch, ``TransformerConfig.layer_locals``)."""
    rotated = position == "rope" and attention.type == "mha"
    if options.global_nope and (not rotated or False not in layer_locals):
        raise ValueError(
            f"{cls}.llama4.global_nope: needs position 'rope', attention.type 'mha' and a global "
            f"layer in attention.window_pattern (got {position!r}, {attention.type!r}, "
            f"{attention.window_pattern}); set llama4.global_nope to False"
        )
    if qk_l2_norm and not rotated:
        raise ValueError(
            f"{cls}.qk_l2_norm: only rotated (position 'rope', attention.type 'mha') layers have "
            f"it; got {position!r}, {attention.type!r}"
        )


#: Llama 4's old flat keys in a model section → their key in ``llama4`` (the same names).
FLAT_KEYS = {
    name: name for name in ("global_nope", "nope_temperature_floor", "nope_temperature_scale")
}
