"""Mixed-precision policy shared by every tjx model.

One object says which dtype parameters are stored in and which dtype matmuls run in. Norm
statistics, softmax and the loss always run in float32 regardless of the policy (see
``norms.py``, ``tjx.kernels.attention`` and the models' output heads); ``logits_dtype`` says only
which dtype the chunked loss stores the LM head's product in between the matmul and the float32
softmax (float32 by default; bfloat16 as PyTorch's autocast, half the bytes).

``matmul="fp8"`` runs the linear layers' products (every `tjx.nn.linear.Dense`: the
attention and MLP projections) in float8 with ``fp8_scaling`` and ``fp8_recipe`` (see
`tjx.nn.fp8`; ``delayed`` gives each such `Dense` a `tjx.nn.fp8.Fp8Meta` of
``fp8_amax_history`` steps); the LM head,
the embeddings, the norms, attention's own products, LoRA adapters' products, the weights, the
optimizer and the loss keep the dtypes above. ``fp8_lm_head`` (off by default, as torchtitan's
float8 converter leaves ``output`` out unless asked) adds the untied LM head's three products
in the chunked loss (`tjx.nn.fp8.Fp8HeadProducts`), with current scaling only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from tjx.nn.fp8 import RECIPES, SCALINGS

_PRESETS = ("fp32", "bf16", "pure_bf16", "fp16")
#: The dtypes tjx trains in, by name (a config file's values; Python code may pass any floating
#: dtype).
DTYPE_NAMES = ("float32", "bfloat16", "float16")
#: What the linear layers' products run in: ``default`` (the compute dtype) or ``fp8``.
MATMULS = ("default", "fp8")
FP8_SCALINGS, FP8_RECIPES = SCALINGS, RECIPES  # tjx.nn.fp8's, by the names a config reads
#: The settings only float8 products read: with ``matmul="default"`` each would do nothing.
FP8_SETTINGS = ("fp8_scaling", "fp8_recipe", "fp8_amax_history", "fp8_lm_head")
#: ``fp8_amax_history``'s most steps. Delayed scaling keeps three histories of this many float32
#: per float8 `Dense` (input, kernel, gradient), and the step reduces each of them: torchao's
#: delayed scaling defaults to 16 steps and TransformerEngine's to 1024, the longest in common
#: use; a longer history only makes the scale slower to follow the tensors (a billion steps took
#: 22 GB of host memory before the first step and met the kernel's OOM killer).
MAX_AMAX_HISTORY = 1024


@dataclass(frozen=True)
class Precision:
    """Parameter and compute dtypes.

    Parameters
    ----------
    param_dtype : dtype
        Dtype parameters are created and stored in (optimizer sees this dtype).
    compute_dtype : dtype
        Dtype activations and matmul inputs are cast to.
    """

    param_dtype: Any = field(
        default=jnp.float32,
        metadata={"choices": DTYPE_NAMES, "help": "dtype the weights are stored and updated in"},
    )
    compute_dtype: Any = field(
        default=jnp.float32,
        metadata={
            "choices": DTYPE_NAMES,
            "resumable": True,
            "help": "dtype of the forward and backward matmuls",
        },
    )
    logits_dtype: Any = field(
        default=jnp.float32,
        metadata={
            "choices": DTYPE_NAMES,
            "resumable": True,
            "help": "dtype the chunked loss stores the head's logits in before its float32 "
            "softmax (bfloat16: half the bytes, PyTorch autocast's rounding)",
        },
    )

    matmul: str = field(
        default="default",
        metadata={
            "choices": MATMULS,
            # Current scaling keeps no state: a resumed run may switch float8 on or off (the
            # trainer refuses it for delayed scaling, whose checkpoints hold its Fp8Meta).
            "resumable": True,
            "help": "the linear layers' products: default (compute_dtype) or fp8 (e4m3 "
            "operands, e5m2 gradients; Hopper or CPU emulation)",
        },
    )
    fp8_scaling: str = field(
        default="tensorwise",
        metadata={
            "choices": FP8_SCALINGS,
            "resumable": True,
            "help": "matmul=fp8: one scale per tensor, or per row of the activation and per "
            "output column of the weight",
        },
    )
    fp8_recipe: str = field(
        default="current",
        metadata={
            "choices": FP8_RECIPES,
            "help": "matmul=fp8: scales from the tensor being cast (current) or from an amax "
            "history (delayed)",
        },
    )
    fp8_amax_history: int = field(
        default=16,
        metadata={
            "min": 1,
            "max": MAX_AMAX_HISTORY,
            "help": "fp8_recipe=delayed: steps of amax history (torchao's default 16, "
            "TransformerEngine's 1024)",
        },
    )
    fp8_lm_head: bool = field(
        default=False,
        metadata={
            # Current scaling only: no state, so a resume may switch it as it may switch matmul.
            "resumable": True,
            "help": "matmul=fp8, fp8_recipe=current: the untied LM head's products (logits, "
            "both gradients) in float8 too, in the chunked loss (off: the compute dtype)",
        },
    )

    def __post_init__(self) -> None:
        for name, allowed in (
            ("matmul", MATMULS),
            ("fp8_scaling", FP8_SCALINGS),
            ("fp8_recipe", FP8_RECIPES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"Precision.{name} must be one of {allowed}; got {getattr(self, name)!r}"
                )
        n = self.fp8_amax_history
        if int(n) < 1:
            raise ValueError(f"Precision.fp8_amax_history must be >= 1; got {n!r}")
        if int(n) > MAX_AMAX_HISTORY:
            raise ValueError(
                f"Precision.fp8_amax_history must be <= {MAX_AMAX_HISTORY} (TransformerEngine's "
                f"default, the longest history in common use); got {n!r}"
            )
        if self.fp8_lm_head and not self.fp8:
            raise ValueError(
                "Precision.fp8_lm_head=True needs matmul='fp8' (the head follows the linear "
                f"layers into float8); got matmul={self.matmul!r}: set matmul='fp8' or "
                "fp8_lm_head=False"
            )
        if self.fp8_lm_head and self.fp8_recipe != "current":
            raise ValueError(
                "Precision.fp8_lm_head=True scales with current scaling only (delayed scaling's "
                "amax history lives in each float8 Dense's Fp8Meta, and the head's products are "
                "the chunked loss's, which keeps no state); set fp8_recipe='current' or "
                "fp8_lm_head=False"
            )
        check_idle_fp8(self)
        for name in ("param_dtype", "compute_dtype", "logits_dtype"):
            value = jnp.dtype(getattr(self, name))
            if not jnp.issubdtype(value, jnp.floating):
                raise ValueError(f"Precision.{name} must be a floating dtype; got {value}")
            object.__setattr__(self, name, value)

    @classmethod
    def fp32(cls) -> Precision:
        """Float32 parameters and compute."""
        return cls(jnp.float32, jnp.float32)

    @classmethod
    def bf16(cls) -> Precision:
        """Float32 parameters, bfloat16 compute (the usual mixed-precision setting)."""
        return cls(jnp.float32, jnp.bfloat16)

    @classmethod
    def pure_bf16(cls) -> Precision:
        """Bfloat16 parameters and compute."""
        return cls(jnp.bfloat16, jnp.bfloat16)

    @classmethod
    def fp16(cls) -> Precision:
        """Float32 parameters, float16 compute (pair with loss scaling in tjx-optim)."""
        return cls(jnp.float32, jnp.float16)

    @classmethod
    def from_name(cls, name: str) -> Precision:
        """Build a preset by name: one of ``fp32``, ``bf16``, ``pure_bf16``, ``fp16``."""
        if name not in _PRESETS:
            raise ValueError(f"precision must be one of {_PRESETS}; got {name!r}")
        return getattr(cls, name)()

    def without_fp8(self) -> Precision:
        """The policy with float8 products off: ``matmul="default"`` and every float8 setting
        (`FP8_SETTINGS`) at its default, the dtypes kept."""
        defaults: dict[str, Any] = {
            f.name: f.default for f in dataclasses.fields(self) if f.name in FP8_SETTINGS
        }
        return dataclasses.replace(self, matmul="default", **defaults)

    @property
    def fp8(self) -> bool:
        """Whether the linear layers' products run in float8."""
        return self.matmul == "fp8"

    def cast(self, x: jax.Array) -> jax.Array:
        """Cast a floating array to the compute dtype (integers pass through)."""
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(self.compute_dtype)
        return x


def idle_fp8_settings(matmul: str, fp8_recipe: str) -> tuple[str, ...]:
    """The float8 settings (`FP8_SETTINGS`) a policy with ``matmul`` and ``fp8_recipe`` never
    reads: all of them without float8 products, the amax history without delayed scaling."""
    if matmul != "fp8":
        return FP8_SETTINGS
    return () if fp8_recipe == "delayed" else ("fp8_amax_history",)


def check_idle_fp8(precision: Precision) -> None:
    """Refuse a float8 setting changed from its default where ``precision`` never reads it: it
    would do nothing, silently (`idle_fp8_settings`).

    Parameters
    ----------
    precision : Precision
        The policy.

    Raises
    ------
    ValueError
        ``Precision.<setting>=<value> has no effect ...``, naming how to make it apply and the
        default to leave it at.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(Precision)}
    for name in idle_fp8_settings(precision.matmul, precision.fp8_recipe):
        value = getattr(precision, name)
        if value == defaults[name]:
            continue
        if precision.fp8:  # the history of delayed scaling under current scaling
            why, fix = "fp8_recipe is 'current' (scales from each tensor itself)", (
                "fp8_recipe='delayed'"
            )
        else:
            why, fix = f"matmul is {precision.matmul!r} (no float8 products)", "matmul='fp8'"
        raise ValueError(
            f"Precision.{name}={value!r} has no effect: {why}; set {fix} to use it, or leave "
            f"{name} at its default {defaults[name]!r}"
        )


def as_precision(value: Precision | str | None) -> Precision:
    """Normalise a ``Precision``, a preset name or ``None`` (float32) to a ``Precision``."""
    if value is None:
        return Precision()
    if isinstance(value, Precision):
        return value
    if isinstance(value, str):
        return Precision.from_name(value)
    raise ValueError(f"precision must be a Precision or one of {_PRESETS}; got {value!r}")
