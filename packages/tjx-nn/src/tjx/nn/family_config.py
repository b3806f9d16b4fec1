"""The architecture switches of the 2024-25 decoder families and their checks (``check_family``).

Each is one ``TransformerConfig`` field (``configs.py``), off by default:

* ``qk_norm`` (Qwen3, Gemma 3, OLMo 2): an RMSNorm of the queries and of the keys after their
  projections, before RoPE. ``qk_norm_scope``: ``"head"`` normalises each head alone with one
  ``head_dim`` scale shared by the heads (Qwen3, Gemma 3); ``"projection"`` normalises all heads
  of a token together, with a scale per ``heads × head_dim`` column (OLMo 2).
* ``norm_position`` ``"sandwich"`` (Gemma 2/3): ``x + norm₂(f(norm₁(x)))`` around attention and the
  MLP; ``"output"`` (OLMo 2): ``x + norm(f(x))``. Both keep the final norm. Decoders only.
* ``norm_plus_one`` (Gemma): every norm multiplies by ``1 + weight``, the weight starting at 0
  (its stored value is the checkpoint's, so weight decay pulls the scale towards 1).
* ``scale_embeddings`` (Gemma): token embeddings times ``sqrt(d_model)``, the factor rounded to
  float32 and then to the compute dtype as transformers does (``sqrt(3072)`` is 55.43 in float32,
  55.5 in bfloat16). The tied output head reads the unscaled table.
* ``query_pre_attn_scalar`` (Gemma): attention logits scale ``1/sqrt(query_pre_attn_scalar)``
  instead of ``1/sqrt(head_dim)``.
* ``attn_logit_softcap`` (Gemma 2): scaled attention logits become ``c·tanh(x/c)`` before the
  mask, in every kernel that serves them (XLA, Pallas); cuDNN cannot, so ``attention_impl:
  cudnn`` is refused with it and ``auto`` leaves cuDNN out (``tjx.kernels.auto_order``).
* ``final_logit_softcap`` (Gemma 2): output logits become ``c·tanh(x/c)``, in ``logits``, the
  chunked loss and generation alike.

* ``rope_local_theta`` (Gemma 3): the RoPE base of the layers whose ``sliding_window`` applies
  (``window_pattern``'s ``"local"`` ones), without ``rope_scaling`` (transformers rotates Gemma 3's
  local layers with the default RoPE at ``rope_local_base_freq``); the global layers keep
  ``rope_theta`` and ``rope_scaling``. None: every layer rotates alike. Needs a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tjx.nn.fields import choice

#: What ``qk_norm`` normalises over: each head alone, or all heads of a token together.
QK_NORM_SCOPES = ("head", "projection")
#: Norm positions only decoder blocks implement.
DECODER_NORM_POSITIONS = ("sandwich", "output")
#: Fields only decoders (GPT2, Llama) read: the other families refuse them (``unused_fields``).
DECODER_ONLY: Mapping[str, str] = {
    name: "only decoders (gpt2, llama) implement it"
    for name in ("norm_plus_one", "scale_embeddings", "final_logit_softcap")
}
_POSITIVE = (
    "query_pre_attn_scalar",
    "attn_logit_softcap",
    "final_logit_softcap",
    "rope_local_theta",
)


def _positive_float(cls: str, name: str, value: Any) -> float | None:
    """None, or ``value`` as a positive finite float (else a ValueError naming the field)."""
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not 0.0 < float(value) < math.inf:
        raise ValueError(f"{cls}.{name} must be a positive number or None; got {value!r}")
    return float(value)


def check_family(config: Any, cls: str) -> None:
    """Check (and normalise: numbers become floats) a config's family switches."""
    choice(cls, "qk_norm_scope", config.qk_norm_scope, QK_NORM_SCOPES)
    if config.qk_norm_scope != "head" and not config.qk_norm:
        raise ValueError(
            f"{cls}.qk_norm_scope: only qk_norm uses it (qk_norm is False); set qk_norm=True "
            "or leave qk_norm_scope 'head'"
        )
    for name in _POSITIVE:
        object.__setattr__(config, name, _positive_float(cls, name, getattr(config, name)))
    decoder = "scale_embeddings" not in type(config).unused_fields
    if not decoder and config.norm_position in DECODER_NORM_POSITIONS:
        raise ValueError(
            f"{cls}.norm_position {config.norm_position!r} is implemented by decoders only; "
            "choose 'pre' or 'post'"
        )
    if config.rope_local_theta is not None and (
        config.sliding_window is None or config.position != "rope"
    ):
        raise ValueError(
            f"{cls}.rope_local_theta: only windowed RoPE layers use it (sliding_window "
            f"{config.sliding_window}, position {config.position!r}); set sliding_window (and "
            "position 'rope') or leave rope_local_theta None"
        )
    if config.attn_logit_softcap is not None and config.attention_impl == "cudnn":
        raise ValueError(
            f"{cls}.attention_impl 'cudnn' cannot soft-cap attention logits "
            f"(attn_logit_softcap {config.attn_logit_softcap}): jax's cuDNN attention has no "
            "soft cap; use 'auto' (which then leaves cuDNN out), 'xla' or 'pallas'"
        )
    if config.final_logit_softcap is not None and config.cross_entropy_impl == "pallas":
        raise ValueError(
            f"{cls}.cross_entropy_impl 'pallas' cannot soft-cap the output logits "
            f"(final_logit_softcap {config.final_logit_softcap}): the fused kernel has no soft "
            "cap; use 'auto' (which then takes the chunked XLA loss) or 'xla'"
        )
