"""The multi-token prediction section of a model config (`MTPConfig`): how many modules predict
further tokens after the decoder (DeepSeek-V3's, GLM-4.5's; :mod:`tjx.nn.mtp` builds them) and
the weight of their loss. What it needs of the rest of the model (a full-attention decoder) the
model config checks (``tjx.nn.family_config.check_mtp``).
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass

from tjx.core.config.values import positive
from tjx.core.fields import setting


@dataclass(frozen=True, kw_only=True)
class MTPConfig:
    """Multi-token prediction (``model.mtp``): ``depths`` modules after the decoder, depth k
    predicting token t+k+1; the training loss adds ``loss_weight`` times their mean loss.

    A bad value raises ``ValueError`` at construction naming ``MTPConfig.<field>``.
    """

    depths: int = setting(
        0, help="multi-token prediction modules (DeepSeek-V3): depth k predicts token t+k+1"
    )
    loss_weight: float = setting(
        0.3,
        resumable=True,
        help="multi-token prediction: weight of its mean loss (DeepSeek-V3: 0.3)",
    )

    def __post_init__(self) -> None:
        positive("MTPConfig", "depths", self.depths, allow_zero=True)
        if not self.loss_weight >= 0:
            raise ValueError(f"MTPConfig.loss_weight must be >= 0; got {self.loss_weight!r}")


#: The section's old flat keys in a model section → their key in ``mtp``.
FLAT_MTP_KEYS = {"mtp_depths": "depths", "mtp_loss_weight": "loss_weight"}
