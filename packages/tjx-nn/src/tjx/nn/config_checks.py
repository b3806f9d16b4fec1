"""The cross-field checks of ``TransformerConfig`` (its ``__post_init__`` calls them), each a
``ValueError`` naming ``Class.field``: sizes, RoPE and its scaling, sliding windows, MLA, T5's
relative bias."""

from __future__ import annotations

from typing import Any

from tjx.nn.fields import choice, positive
from tjx.nn.rope_scaling import RopeScaling

#: What each entry of ``window_pattern`` says about a layer: sliding window or full attention.
LAYER_KINDS = ("local", "global")


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
