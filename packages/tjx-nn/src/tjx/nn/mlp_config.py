"""The MLP section of a model config (`MLPConfig`, ``model.mlp``): the feed-forward blocks'
hidden width, activation and who runs a gated unit (``impl``, :mod:`tjx.kernels.layer_kernels`).
A module of its own, as the other sections' (``norm_config``, ``attention_config``): the model
config imports it, and the layers (:mod:`tjx.nn.mlp`) import the model config."""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass

from tjx.core.config.values import choice, positive
from tjx.core.fields import setting
from tjx.kernels.layer_kernels import LAYER_IMPLEMENTATIONS
from tjx.nn.layer_impl import layer_impl_setting

#: The activations ``mlp.activation`` may name.
ACTIVATIONS = ("gelu", "gelu_exact", "relu", "silu", "swiglu", "geglu", "swiglu_clamped")
#: The gated activations (two input projections; ``swiglu_clamped``: gpt-oss's).
GATED_ACTIVATIONS = ("swiglu", "geglu", "swiglu_clamped")


@dataclass(frozen=True, kw_only=True)
class MLPConfig:
    """A model's feed-forward blocks (``model.mlp``): their hidden width and activation. The
    model config fills a None with its family's (width ``4 d_model``, LLaMA's ``8/3 d_model``
    rounded up to 64; activation ``gelu``, LLaMA's ``swiglu``, BERT's and ViT's ``gelu_exact``).

    A bad value raises ``ValueError`` at construction naming ``MLPConfig.<field>``.
    """

    dim: int | None = setting(
        None, help="MLP hidden width; None: the family's (4 d_model; LLaMA 8/3 d_model to 64)"
    )
    activation: str | None = setting(
        None,
        choices=ACTIVATIONS,
        help="MLP activation (swiglu, geglu, swiglu_clamped: gated); None: the family's",
    )

    impl: str = layer_impl_setting("a gated MLP's unit", "Mosaic GPU")

    def __post_init__(self) -> None:
        choice("MLPConfig", "impl", self.impl, LAYER_IMPLEMENTATIONS)
        if self.activation is not None:
            choice("MLPConfig", "activation", self.activation, ACTIVATIONS)
        if self.dim is not None:
            positive("MLPConfig", "dim", self.dim)

    @property
    def gated(self) -> bool:
        """Whether the MLP is gated (SwiGLU/GeGLU): two input projections."""
        return self.activation in GATED_ACTIVATIONS


#: The section's old flat keys in a model section → their key in ``mlp``.
FLAT_MLP_KEYS = {"mlp_dim": "dim", "mlp_activation": "activation"}
