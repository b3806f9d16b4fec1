"""What a config may ask of float8 (`check_fp8`, `check_fp8_lm_head`): each refusal one line
naming the setting and the fix."""

from __future__ import annotations

from typing import Any

from tjx.kernels.ce_choice import CE_KERNEL_NAMES


def check_fp8(config: Any, cls: str) -> None:
    """``precision.matmul="fp8"`` only where every linear product can take it: a `Dense`
    (attention and MLP projections, MLA's included). The MoE experts' einsums have no float8
    path, and delayed scaling keeps one amax history per tensor, not per row (`tjx.nn.fp8`):
    each is refused with one line naming it and the fix."""
    p = config.precision
    if not p.fp8:
        return
    if p.fp8_recipe == "delayed" and p.fp8_scaling != "tensorwise":
        raise ValueError(
            f"{cls}.precision.fp8_recipe='delayed' scales tensorwise only (an activation row's "
            f"amax history would describe other tokens every step); got fp8_scaling="
            f"{p.fp8_scaling!r}: use fp8_scaling='tensorwise' or fp8_recipe='current'"
        )
    if config.moe.num_experts > 0:
        raise ValueError(
            f"{cls}.precision.matmul='fp8' cannot run the MoE experts' products (moe.num_experts="
            f"{config.moe.num_experts}) in float8; use matmul='default' for a MoE model"
        )
    if p.fp8_lm_head:
        check_fp8_lm_head(config, cls)


def check_fp8_lm_head(config: Any, cls: str) -> None:
    """``precision.fp8_lm_head`` only where the untied LM head's products are the chunked
    XLA loss's (`tjx.nn.fp8.Fp8HeadProducts`): one line naming the fault and the fix."""
    key = f"{cls}.precision.fp8_lm_head=True"
    if "cross_entropy_impl" in type(config).unused_fields:
        raise ValueError(f"{key}: {cls} has no vocabulary loss head; set fp8_lm_head=False")
    if config.tie_embeddings:
        raise ValueError(
            f"{key}: the head is the token embedding table (tie_embeddings=True), which stays in "
            "the compute dtype; set tie_embeddings=False or fp8_lm_head=False"
        )
    if config.cross_entropy_impl in CE_KERNEL_NAMES:
        raise ValueError(
            f"{key}: the {CE_KERNEL_NAMES[config.cross_entropy_impl]} cross-entropy has no "
            "float8 path; set cross_entropy_impl='xla' (or 'auto') or fp8_lm_head=False"
        )
