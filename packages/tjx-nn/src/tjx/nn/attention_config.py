"""The attention section of a model config (`AttentionConfig`): what a self-attention layer does
besides its heads (:mod:`tjx.nn.attention` builds the layer from it): its form (multi-head or
latent), biases, dropout, sliding window or chunks and which layers have them, the q/k norm, the
logits' scale and soft cap, sinks, the output gate and top-k decoding.

The head counts (``num_heads``, ``num_kv_heads``, ``head_dim``) and the kernel a run picks
(``attention_impl``) stay fields of the model config; so do the checks that need the rest of the
model (a window and the position encoding, sinks and the kernel ...).
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass

from tjx.core.config.values import choice, positive, positive_float, rate
from tjx.core.fields import setting
from tjx.nn.family_config import QK_NORM_SCOPES

ATTENTION_TYPES = ("mha", "mla")
#: What each entry of ``window_pattern`` says about a layer: sliding window or full attention.
LAYER_KINDS = ("local", "global")


@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    """Self-attention's settings (``model.attention``) but its heads and its kernel.

    ``sliding_window`` (keys a query sees, itself included) makes self-attention local;
    ``window_pattern`` says which layers: its entries (``"local"``/``"global"``) repeat over the
    layers, e.g. ``["local", "global"]`` (Gemma 2) or five ``"local"`` and a ``"global"``
    (Gemma 3); None with a window: every layer is local. ``chunk`` is the alternative to a
    window: the local layers attend within chunks of this many positions. What the family
    switches do: :mod:`tjx.nn.family_config`.

    Every bad value raises ``ValueError`` at construction naming ``AttentionConfig.<field>``.
    """

    type: str = setting(
        "mha", choices=ATTENTION_TYPES, help="mla: keys/values from one low-rank latent per token"
    )
    qkv_bias: bool = setting(False, help="query/key/value biases even without use_bias (Qwen2)")
    dropout: float = setting(
        0.0, resumable=True, help="dropout rate of the attention weights (XLA path)"
    )
    sliding_window: int | None = setting(
        None, help="self-attention window (keys a query sees, itself included); None: full"
    )
    window_pattern: list[str] | None = setting(
        None,
        each_choices=LAYER_KINDS,
        help="layers' kinds, repeated over the stack (local: windowed); None: all local",
    )
    chunk: int | None = setting(
        None, help="local layers attend within chunks of this many positions"
    )
    decode_topk: int | None = setting(
        None, resumable=True, help="decoding attends to the top-k cached keys only; None: all"
    )
    qk_norm: bool = setting(False, help="RMSNorm of queries and keys (Qwen3, Gemma 3, OLMo 2)")
    qk_norm_scope: str = setting(
        "head", choices=QK_NORM_SCOPES, help="qk_norm per head, or over all heads (OLMo 2)"
    )
    query_pre_attn_scalar: float | None = setting(None, help="attention scale 1/sqrt(it) (Gemma)")
    logit_softcap: float | None = setting(None, help="attention logits c·tanh(x/c) (Gemma 2)")
    sinks: bool = setting(
        False, help="a learned logit per head in each softmax's denominator (gpt-oss)"
    )
    output_gate: bool = setting(
        False, help="attention output times a sigmoid gate per head from x (Qwen3-Next, Qwen3.5)"
    )

    def __post_init__(self) -> None:
        cls = type(self).__name__
        choice(cls, "type", self.type, ATTENTION_TYPES)
        rate(cls, "dropout", self.dropout)
        for name in ("sliding_window", "chunk", "decode_topk"):
            if getattr(self, name) is not None:
                positive(cls, name, getattr(self, name))
        if self.chunk is not None and self.sliding_window is not None:
            raise ValueError(
                f"{cls}.chunk: a local layer has a chunk or a sliding_window, not both (got "
                f"sliding_window {self.sliding_window}); set chunk to None"
            )
        if self.window_pattern is not None:
            if self.sliding_window is None and self.chunk is None:
                raise ValueError(
                    f"{cls}.window_pattern: it says which layers use sliding_window (or chunk), "
                    "which is None; set one or set window_pattern to None"
                )
            pattern = self.window_pattern
            if isinstance(pattern, str) or not isinstance(pattern, list | tuple) or not pattern:
                raise ValueError(
                    f"{cls}.window_pattern must be a non-empty list of {LAYER_KINDS}; got "
                    f"{pattern!r}"
                )
            for kind in pattern:
                choice(cls, "window_pattern", kind, LAYER_KINDS)
            # A tuple: the config is hashable (a jit's static argument).
            object.__setattr__(self, "window_pattern", tuple(pattern))
        choice(cls, "qk_norm_scope", self.qk_norm_scope, QK_NORM_SCOPES)
        if self.qk_norm_scope != "head" and not self.qk_norm:
            raise ValueError(
                f"{cls}.qk_norm_scope: only qk_norm uses it (qk_norm is False); set qk_norm=True "
                "or leave qk_norm_scope 'head'"
            )
        for name in ("query_pre_attn_scalar", "logit_softcap"):
            object.__setattr__(self, name, positive_float(cls, name, getattr(self, name)))
        if self.sinks and (self.decode_topk is not None or self.type != "mha"):
            raise ValueError(
                f"{cls}.sinks: attention sinks need full decoding and multi-head attention "
                f"(got decode_topk {self.decode_topk!r}, type {self.type!r}); set decode_topk to "
                "None and type to 'mha', or sinks to False"
            )


#: The attention settings' old flat keys in a model section → their key in ``attention``.
FLAT_ATTENTION_KEYS = {
    "attention_type": "type",
    "qkv_bias": "qkv_bias",
    "attention_dropout": "dropout",
    "sliding_window": "sliding_window",
    "window_pattern": "window_pattern",
    "attention_chunk": "chunk",
    "decode_topk": "decode_topk",
    "qk_norm": "qk_norm",
    "qk_norm_scope": "qk_norm_scope",
    "query_pre_attn_scalar": "query_pre_attn_scalar",
    "attn_logit_softcap": "logit_softcap",
    "attention_sinks": "sinks",
    "attention_output_gate": "output_gate",
}
