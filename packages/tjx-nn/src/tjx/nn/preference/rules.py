"""What a run training on preference pairs (`preference_loss`: DPO, IPO) cannot apply.

An app checks these while reading its config, so a setting the loss would silently drop is one
line before anything is built. As in `tjx.nn.split_rules`, the messages name the settings as an
app's config tree does (``model.*``, ``mesh.*``, ``train.*``, ``data.format=preference``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_preference_run"]


def check_preference_run(config: Any, *, pipeline: int, context: int, z_loss: float) -> None:
    """Raise ``ValueError`` for the first setting a preference run of ``config`` cannot apply.

    Parameters
    ----------
    config : TransformerConfig
        The model: no MoE layers (the router's balancing losses are no part of the DPO loss).
    pipeline, context : int
        Pipeline stages and devices per sequence (``mesh.*``): both must be 1 (the pipeline runs
        the SFT loss only; a pair's rows are scored whole).
    z_loss : float
        The weight of the log-partition penalty: 0 (the DPO loss has no z-loss term).
    """
    refused = [
        ("mesh.pipeline", pipeline > 1, "the pipeline runs the SFT loss only; set it to 1"),
        ("mesh.context", context > 1, "a pair's rows are scored whole; set it to 1"),
        (
            "model.moe.num_experts",
            config.moe.num_experts > 0,
            "the router's balancing losses are not part of the DPO loss; train a dense model",
        ),
        ("train.z_loss", z_loss != 0, "the DPO loss has no z-loss term; set it to 0"),
    ]
    for key, bad, why in refused:
        if bad:
            raise ValueError(f"{key}: cannot apply with data.format=preference (DPO): {why}")
