"""The configs of the models with an encoder (frozen dataclasses on `TransformerConfig`'s fields):
BERT (a masked-LM encoder), ViT (an image classifier) and the encoder-decoder. Each refuses the
decoder-only and MoE settings it would ignore (``unused_fields``).
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from tjx.core.config.values import choice, positive
from tjx.core.fields import setting
from tjx.nn.configs import TransformerConfig
from tjx.nn.family_config import DECODER_ONLY
from tjx.nn.moe.config import NO_MOE
from tjx.nn.position_config import POSITIONS


@dataclass(frozen=True, kw_only=True)
class _EncoderConfig(TransformerConfig):
    """An encoder alone (BERT, ViT): bidirectional self-attention only, exact GELU, residual
    projections initialised unscaled."""

    bidirectional: ClassVar[bool] = True
    attention_layers: ClassVar[tuple[str, ...]] = ("bidirectional",)
    part_defaults: ClassVar[Mapping[str, Any]] = {
        **TransformerConfig.part_defaults,
        "mlp.activation": "gelu_exact",
        "init.scaled_residual": False,
    }


@dataclass(frozen=True, kw_only=True)
class BertConfig(_EncoderConfig):
    """BERT encoder: post-LN, exact GELU, learned positions + token types, MLM head."""

    part_defaults: ClassVar[Mapping[str, Any]] = {
        **_EncoderConfig.part_defaults,
        "norm.eps": 1e-12,
        "norm.position": "post",
    }

    vocab_size: int = 30522
    max_seq_len: int = 512
    type_vocab_size: int = setting(2, help="BERT: token types (segments A/B)")
    num_labels: int | None = setting(
        None, help="BERT: classes of a sequence-classification head; None: none"
    )
    pad_id: int = setting(0, help="BERT: the padding token's id (not attended to)")
    unused_fields: ClassVar[Mapping[str, str]] = {
        "tie_embeddings": "BERT's MLM head always shares the token embedding",
        "attention.decode_topk": "only decoders decode (BERT does not)",
        "cross_entropy_impl": "BERT's MLM head scores its masked tokens from their logits",
        **DECODER_ONLY,
        **NO_MOE,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        # BERT always adds its learned position table; T5's bias is for models without one.
        kinds = tuple(p for p in POSITIONS if p != "t5")
        choice("BertConfig", "position.kind", self.position.kind, kinds)
        positive("BertConfig", "type_vocab_size", self.type_vocab_size)
        if self.num_labels is not None:
            positive("BertConfig", "num_labels", self.num_labels)


@dataclass(frozen=True, kw_only=True)
class ViTConfig(_EncoderConfig):
    """Vision Transformer on ``[b, h, w, c]`` images: patch embedding, class token, classifier."""

    part_defaults: ClassVar[Mapping[str, Any]] = {**_EncoderConfig.part_defaults, "norm.eps": 1e-6}

    vocab_size: int = 0
    image_size: int = setting(224, help="ViT: the images' side in pixels")
    patch_size: int = setting(16, help="ViT: a patch's side in pixels (divides image_size)")
    num_channels: int = setting(3, help="ViT: colour channels of the images")
    num_classes: int = setting(1000, help="ViT: classes of the head")
    max_seq_len: int = 0
    tie_embeddings: bool = False
    unused_fields: ClassVar[Mapping[str, str]] = {
        "vocab_size": "ViT reads images, not tokens",
        "tie_embeddings": "ViT has no token embedding to tie its classifier to",
        "attention.decode_topk": "only decoders decode (ViT does not)",
        "cross_entropy_impl": "ViT's head is a classifier, not a vocabulary",
        **DECODER_ONLY,
        **NO_MOE,
    }

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "num_channels", "num_classes"):
            positive("ViTConfig", name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig.patch_size: {self.patch_size} must divide ViTConfig.image_size "
                f"({self.image_size})"
            )
        object.__setattr__(self, "max_seq_len", self.num_patches + 1)
        super().__post_init__()
        choice("ViTConfig", "position.kind", self.position.kind, ("learned", "sinusoidal"))

    def _check_vocab(self, cls: str) -> None:
        positive(cls, "vocab_size", self.vocab_size, allow_zero=True)

    @property
    def num_patches(self) -> int:
        """Number of patches per image."""
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True, kw_only=True)
class EncoderDecoderConfig(TransformerConfig):
    """Encoder-decoder (Vaswani/T5 style) with shared embeddings; layer counts per side."""

    unused_fields: ClassVar[Mapping[str, str]] = {**DECODER_ONLY, **NO_MOE}

    bidirectional: ClassVar[bool] = True
    attention_layers: ClassVar[tuple[str, ...]] = ("bidirectional", "causal", "cross")
    part_defaults: ClassVar[Mapping[str, Any]] = {
        **TransformerConfig.part_defaults,
        "init.scaled_residual": False,
        "position.kind": "sinusoidal",
    }

    num_encoder_layers: int | None = setting(None, help="encoder blocks; None: num_layers")
    num_decoder_layers: int | None = setting(None, help="decoder blocks; None: num_layers")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_encoder_layers", "num_decoder_layers"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.num_layers)
            positive("EncoderDecoderConfig", name, getattr(self, name))
        choice(
            "EncoderDecoderConfig",
            "position.kind",
            self.position.kind,
            ("learned", "sinusoidal", "rope", "t5", "none"),
        )
