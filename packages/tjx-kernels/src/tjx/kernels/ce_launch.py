"""Launch parameters of the fused cross-entropy kernels (no Pallas import: the choice and the
cost formulas need them without the kernels)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CELaunch:
    """Tiles and warps of the fused cross-entropy kernels (powers of two >= 16).

    ``block_t`` tokens and ``block_v`` vocabulary columns per logits tile, ``block_k`` columns
    of ``D`` per product step, ``block_d`` columns of ``dx``/``dw`` per backward program.
    """

    block_t: int = 64
    block_v: int = 128
    block_k: int = 64
    block_d: int = 128
    num_warps: int = 4
    num_warps_bwd: int = 8
    num_stages: int = 2

    def __post_init__(self) -> None:
        for name in ("block_t", "block_v", "block_k", "block_d"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"CELaunch.{name} must be a power of two >= 16; got {value}")
        for name in ("num_warps", "num_warps_bwd"):
            if getattr(self, name) not in (1, 2, 4, 8, 16):
                raise ValueError(f"CELaunch.{name} must be 1, 2, 4, 8 or 16")

    def fitted(self, d: int) -> CELaunch:
        """This launch with ``block_k``/``block_d`` no wider than the padded ``d``."""
        return dataclasses.replace(self, block_k=min(self.block_k, d), block_d=min(self.block_d, d))


def padded_dim(d: int, launch: CELaunch) -> int:
    """``d`` rounded up to a multiple of ``block_k`` and ``block_d`` (both powers of two)."""
    step = max(min(launch.block_k, 1 << max(4, (d - 1).bit_length())), 16)
    step = max(step, min(launch.block_d, 1 << max(4, (d - 1).bit_length())))
    return -(-d // step) * step


#: The launch the kernels take unless a call names one (no GPU has measured another yet): the
#: largest tiles whose three kernels compile to wgmma without register spills on sm_90
#: (``benchmarks/triton_compile_check.py --ce``, the kernels README).
DEFAULT_CE_LAUNCH = CELaunch()
