"""The checks of ``TransformerConfig`` (its ``__post_init__`` calls them), each a ``ValueError``
naming ``Class.field``: one field's (``choice``, ``positive``, ``rate``, which every tjx-nn config
class uses), then across fields: sizes, RoPE and its scaling, sliding windows, MLA, T5's relative
bias, the decoder families' switches (``check_family``, :mod:`tjx.nn.family_config` says what they
are) and the fields a family never reads (``check_unused``). A config and its checks are one idea:
validating one reads this module and ``configs``; the MoE settings' checks
(:mod:`tjx.nn.moe.config`) take the MoE values alone."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tjx.nn.family_config import DECODER_NORM_POSITIONS, QK_NORM_SCOPES
from tjx.nn.rope_scaling import RopeScaling

#: What each entry of ``window_pattern`` says about a layer: sliding window or full attention.
LAYER_KINDS = ("local", "global")


def choice(cls: str, field: str, value: Any, allowed: tuple[str, ...]) -> None:
    """``cls.field`` is one of ``allowed``, else a ValueError naming both."""
    if value not in allowed:
        raise ValueError(f"{cls}.{field} must be one of {allowed}; got {value!r}")


def positive(cls: str, field: str, value: Any, *, allow_zero: bool = False) -> None:
    """``cls.field`` is a positive int (``allow_zero``: non-negative), else a ValueError."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{cls}.{field} must be {kind} int; got {value!r}")


def rate(cls: str, field: str, value: Any) -> None:
    """``cls.field`` is a rate in [0, 1), else a ValueError."""
    if not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{cls}.{field} must be a float in [0, 1); got {value!r}")


def check_sizes(config: Any, cls: str) -> None:
    """``head_dim`` (default ``d_model // num_heads``), ``num_kv_heads`` dividing ``num_heads``
    and ``mlp_dim`` (default ``4 * d_model``), filled in and checked."""
    if config.head_dim is None:
        if config.d_model % config.num_heads:
            raise ValueError(
                f"{cls}.d_model: {config.d_model} must be divisible by {cls}.num_heads "
                f"({config.num_heads}) when head_dim is None (it is then d_model // num_heads)"
            )
        object.__setattr__(config, "head_dim", config.d_model // config.num_heads)
    positive(cls, "head_dim", config.head_dim)
    assert config.num_kv_heads is not None and config.head_dim is not None
    if config.num_heads % config.num_kv_heads:
        raise ValueError(
            f"{cls}.num_kv_heads: {config.num_kv_heads} must divide {cls}.num_heads "
            f"({config.num_heads}); allowed: divisors of {config.num_heads}"
        )
    if config.mlp_dim is None:
        object.__setattr__(config, "mlp_dim", 4 * config.d_model)
    positive(cls, "mlp_dim", config.mlp_dim)


def check_rope(config: Any, cls: str) -> None:
    """With position ``rope``: an even ``head_dim`` and a positive ``rope_theta``."""
    if config.position == "rope":
        if config.head_dim % 2:
            raise ValueError(
                f"{cls}.head_dim: rope needs an even head_dim; got {config.head_dim} "
                f"({cls}.d_model // {cls}.num_heads unless head_dim is given)"
            )
        if not config.rope_theta > 0:
            raise ValueError(f"{cls}.rope_theta must be > 0; got {config.rope_theta!r}")


def check_rope_scaling(config: Any, cls: str) -> None:
    """A `RopeScaling` (read from a mapping or Llama 3's legacy four numbers), with rope."""
    value = RopeScaling.parse(config.rope_scaling, f"{cls}.rope_scaling")
    object.__setattr__(config, "rope_scaling", value)  # an unset section (all null) is None
    if value is None:
        return
    if config.position != "rope":
        raise ValueError(
            f"{cls}.rope_scaling: only position 'rope' uses it (got position "
            f"{config.position!r}); set it to None"
        )
    assert config.head_dim is not None
    half = config.head_dim // 2
    for name in ("short_factor", "long_factor"):
        factors = getattr(value, name)
        if factors is not None and len(factors) != half:
            raise ValueError(
                f"{cls}.rope_scaling.{name} needs head_dim // 2 = {half} numbers; got "
                f"{len(factors)}"
            )
    object.__setattr__(config, "rope_scaling", value)


def check_window(config: Any, cls: str) -> None:
    """A positive window, and a pattern only with one (a tuple: the config is hashable)."""
    window, pattern = config.sliding_window, config.window_pattern
    if window is not None:
        positive(cls, "sliding_window", window)
        if config.bidirectional and config.attention_impl == "cudnn":
            raise ValueError(
                f"{cls}.attention_impl: 'cudnn' cannot apply a bidirectional sliding_window "
                "(cuDNN's window looks back only); use 'auto', 'xla' or 'pallas'"
            )
        if config.position == "t5":
            raise ValueError(
                f"{cls}.sliding_window: position 't5' is not supported with a window (its "
                "relative bias reads the cache by slot); set it to None"
            )
    if pattern is None:
        return
    if window is None:
        raise ValueError(
            f"{cls}.window_pattern: it says which layers use sliding_window, which is None; "
            "set sliding_window or set window_pattern to None"
        )
    if isinstance(pattern, str) or not isinstance(pattern, list | tuple) or not pattern:
        raise ValueError(
            f"{cls}.window_pattern must be a non-empty list of {LAYER_KINDS}; got {pattern!r}"
        )
    for kind in pattern:
        choice(cls, "window_pattern", kind, LAYER_KINDS)
    object.__setattr__(config, "window_pattern", tuple(pattern))


#: DeepSeek's MLA settings (:mod:`tjx.nn.mla`): only ``attention_type="mla"`` reads them.
DEEPSEEK_MLA = ("q_lora_rank", "qk_rope_head_dim", "v_head_dim")


def check_deepseek_mla(config: Any, cls: str) -> None:
    """DeepSeek's MLA fields: with MLA only; ``q_lora_rank``/``v_head_dim`` with the shared rope
    key (``qk_rope_head_dim``), which needs RoPE, an even width within ``head_dim``, a key and a
    value per query head, and no q/k norm (DeepSeek has none)."""
    c = config
    for name in DEEPSEEK_MLA:
        value = getattr(c, name)
        if value is None:
            continue
        if c.attention_type != "mla":
            raise ValueError(
                f"{cls}.{name}: only attention_type 'mla' uses it (got attention_type "
                f"{c.attention_type!r}); set it to None"
            )
        positive(cls, name, value)
        if name != "qk_rope_head_dim" and c.qk_rope_head_dim is None:
            raise ValueError(
                f"{cls}.{name}: only DeepSeek's MLA (qk_rope_head_dim set) uses it; set "
                f"qk_rope_head_dim or set {name} to None"
            )
    rope = c.qk_rope_head_dim
    if rope is None:
        return
    if rope % 2 or rope > c.head_dim:
        raise ValueError(
            f"{cls}.qk_rope_head_dim must be even and at most head_dim ({c.head_dim}); got {rope}"
        )
    needs = {"position": "rope", "num_kv_heads": c.num_heads, "qk_norm": False}
    for name, want in needs.items():
        if getattr(c, name) != want:
            raise ValueError(
                f"{cls}.{name}: DeepSeek's MLA (qk_rope_head_dim set) needs {name}={want!r}; "
                f"got {getattr(c, name)!r}"
            )


def check_mla(config: Any, cls: str) -> None:
    """The latent's size goes with MLA, and only with it (other attention ignores it)."""
    check_deepseek_mla(config, cls)
    if config.attention_type == "mla":
        if config.kv_latent_dim is None:
            raise ValueError(
                f"{cls}.kv_latent_dim: attention_type 'mla' needs the latent's size, a "
                "positive int; got None"
            )
        positive(cls, "kv_latent_dim", config.kv_latent_dim)
    elif config.kv_latent_dim is not None:
        raise ValueError(
            f"{cls}.kv_latent_dim: only attention_type 'mla' uses it (got attention_type "
            f"{config.attention_type!r}); set it to None"
        )


def check_relative(config: Any, cls: str) -> None:
    """T5 bias sizes (checked whatever ``position`` is, so a typo fails early)."""
    nb, md = config.relative_buckets, config.relative_max_distance
    if isinstance(nb, bool) or not isinstance(nb, int) or nb < 4 or nb % 2:
        # Even: the encoder splits the buckets in half per direction (T5's layout).
        raise ValueError(f"{cls}.relative_buckets must be an even int >= 4; got {nb!r}")
    # The causal decoder's exact range is nb // 2 distances; log-spaced buckets start there.
    if isinstance(md, bool) or not isinstance(md, int) or md <= nb // 2:
        raise ValueError(
            f"{cls}.relative_max_distance must be an int > relative_buckets // 2 = {nb // 2}; "
            f"got {md!r}"
        )


#: The family switches that are a positive number or None (``check_family``).
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


def check_unused(config: Any, cls: str) -> None:
    """A field this family's model never reads keeps its default (else it would be ignored)."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, why in type(config).unused_fields.items():
        value = getattr(config, name)
        if value != defaults[name]:
            raise ValueError(f"{cls}.{name}: {why}; got {value!r}, set it to {defaults[name]!r}")
