"""The norm section of a model config (`NormConfig`): which normalisation layer
(:mod:`tjx.nn.norms`), its epsilon, where the blocks put it, Gemma's ``1 + scale`` and who runs
it (``impl``: tjx's XLA layers or tokamax's kernel, :mod:`tjx.kernels.layer_kernels`). The model
config fills a setting left None with its family's and checks what the section needs of the rest
of the model (``norm.position``'s decoder-only choices).
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from tjx.core.config.values import choice
from tjx.core.fields import setting
from tjx.kernels.layer_kernels import LAYER_IMPLEMENTATIONS
from tjx.nn.layer_impl import layer_impl_setting

T = TypeVar("T")

NORMS = ("layernorm", "rmsnorm")
# x + f(n(x)); n(x + f(x)) (BERT); x + n(f(n(x))) (Gemma); x + n(f(x)) (OLMo 2): decoders only.
NORM_POSITIONS = ("pre", "post", "sandwich", "output")


@dataclass(frozen=True, kw_only=True)
class NormConfig:
    """A model's normalisation layers (``model.norm``).

    A setting left None is the family's (``kind`` layernorm, LLaMA's rmsnorm; ``eps`` 1e-5,
    LLaMA's and ViT's 1e-6, BERT's 1e-12; ``position`` pre, BERT's post). A bad value raises
    ``ValueError`` at construction naming ``NormConfig.<field>``.
    """

    kind: str | None = setting(
        None, choices=NORMS, help="normalisation layer; None: the family's (LLaMA: rmsnorm)"
    )
    eps: float | None = setting(None, help="the norm's epsilon; None: the family's (1e-5, ...)")
    position: str | None = setting(
        None,
        choices=NORM_POSITIONS,
        help="pre: x+f(n(x)); post: n(x+f(x)); sandwich: x+n(f(n(x))); output: x+n(f(x))",
    )
    plus_one: bool = setting(False, help="norms scale by 1 + weight, weight from 0 (Gemma)")
    impl: str = layer_impl_setting("the model-wide norms", "Triton")

    def __post_init__(self) -> None:
        choice("NormConfig", "impl", self.impl, LAYER_IMPLEMENTATIONS)
        if self.kind is not None:
            choice("NormConfig", "kind", self.kind, NORMS)
        if self.position is not None:
            choice("NormConfig", "position", self.position, NORM_POSITIONS)
        if self.eps is not None and not self.eps > 0:
            raise ValueError(f"NormConfig.eps must be > 0; got {self.eps!r}")


def filled(value: T | None, name: str) -> T:
    """``value``, a section's setting the model config filled with its family's (``name``: its
    key in the message); None there is a ``ValueError`` (a section used without its config)."""
    if value is None:
        raise ValueError(f"{name} is None: a model config fills it with its family's")
    return value


#: The section's old flat keys in a model section → their key in ``norm`` (``norm`` itself, a
#: name then, is ``norm.kind``).
FLAT_NORM_KEYS = {
    "norm": "kind",
    "norm_eps": "eps",
    "norm_position": "position",
    "norm_plus_one": "plus_one",
}
