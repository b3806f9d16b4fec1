"""The checks of a model config across its fields and sections (`TransformerConfig.__post_init__`
calls them), each a ``ValueError`` naming ``Class.field``: sizes, RoPE and its scaling, sliding
windows and T5's relative bias, the token mixers, MLA, the decoder families' switches
(``check_family``; :mod:`tjx.nn.family_config` says what they are) and the fields a family never
reads (``check_unused``); as a model is built, that it was given its own config class
(``model_config``) and what the indexer's loss needs (``check_index_loss``). A section checks its
own values when built; these check what one needs of the rest of the model. Multi-token
prediction's, float8's and a family folder's option section's live with them
(:mod:`tjx.nn.family_config`, :mod:`tjx.nn.fp8`, the folder's ``options.check_model``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from tjx.core.config.values import choice, positive, positive_float
from tjx.kernels.ce_choice import CE_KERNEL_NAMES
from tjx.nn.config_keys import setting_default, setting_value
from tjx.nn.family_config import DECODER_NORM_POSITIONS
from tjx.nn.gated_deltanet import DELTA_SIZES
from tjx.nn.mla_config import DEEPSEEK_MLA

#: A model's config class (`model_config`).
M = TypeVar("M")

#: What each entry of ``mixer_pattern`` says about a layer: its token mixer, attention or Gated
#: DeltaNet linear attention (:mod:`tjx.nn.gated_deltanet`, Qwen3-Next and Qwen3.5).
MIXERS = ("attention", "delta")


def check_sizes(config: Any, cls: str) -> None:
    """``head_dim`` (default ``d_model // num_heads``), ``num_kv_heads`` dividing ``num_heads``
    and ``mlp.dim`` (default ``4 * d_model``), filled in and checked."""
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
    if config.mlp.dim is None:
        object.__setattr__(config, "mlp", dataclasses.replace(config.mlp, dim=4 * config.d_model))


def check_rope(config: Any, cls: str) -> None:
    """With position ``rope``: an even ``head_dim`` and a positive ``position.rope_theta``."""
    if config.position.kind == "rope":
        if config.head_dim % 2:
            raise ValueError(
                f"{cls}.head_dim: rope needs an even head_dim; got {config.head_dim} "
                f"({cls}.d_model // {cls}.num_heads unless head_dim is given)"
            )
        theta = config.position.rope_theta
        if not theta > 0:
            raise ValueError(f"{cls}.position.rope_theta must be > 0; got {theta!r}")


def check_rope_scaling(config: Any, cls: str) -> None:
    """A `RopeScaling` (``position.rope_scaling``, read by its section) only with rope, with
    factors for ``head_dim // 2`` frequencies."""
    value = config.position.rope_scaling
    if value is None:
        return
    if config.position.kind != "rope":
        raise ValueError(
            f"{cls}.position.rope_scaling: only position.kind 'rope' uses it (got "
            f"{config.position.kind!r}); set it to None"
        )
    assert config.head_dim is not None
    half = config.head_dim // 2
    for name in ("short_factor", "long_factor"):
        factors = getattr(value, name)
        if factors is not None and len(factors) != half:
            raise ValueError(
                f"{cls}.position.rope_scaling.{name} needs head_dim // 2 = {half} numbers; got "
                f"{len(factors)}"
            )


def check_window(config: Any, cls: str) -> None:
    """A window (``attention.sliding_window``, or ``attention.chunk``) where the model can apply
    it: not a bidirectional cuDNN window, not with T5's relative bias."""
    window, chunk = config.attention.sliding_window, config.attention.chunk
    if window is not None:
        if config.bidirectional and config.attention_impl == "cudnn":
            raise ValueError(
                f"{cls}.attention_impl: 'cudnn' cannot apply a bidirectional "
                "attention.sliding_window (cuDNN's window looks back only); use 'auto', 'xla' or "
                "'pallas'"
            )
        if config.position.kind == "t5":
            raise ValueError(
                f"{cls}.attention.sliding_window: position 't5' is not supported with a window "
                "(its relative bias reads the cache by slot); set it to None"
            )
    if chunk is not None and config.position.kind == "t5":
        raise ValueError(
            f"{cls}.attention.chunk: position 't5' has no local layers (got chunk {chunk}); set "
            "attention.chunk to None"
        )


def set_pattern(config: Any, cls: str, name: str, kinds: tuple[str, ...]) -> None:
    """Field ``name``, a per-layer pattern, checked as a non-empty list of ``kinds`` and stored
    as a tuple (the config is hashable)."""
    pattern = getattr(config, name)
    if isinstance(pattern, str) or not isinstance(pattern, list | tuple) or not pattern:
        raise ValueError(f"{cls}.{name} must be a non-empty list of {kinds}; got {pattern!r}")
    for kind in pattern:
        choice(cls, name, kind, kinds)
    object.__setattr__(config, name, tuple(pattern))


def check_mixers(config: Any, cls: str) -> None:
    """A ``mixer_pattern`` of ``MIXERS`` (a tuple: the config is hashable); with delta layers,
    the ``delta`` section's sizes, and what a stack of them does not run yet refused by name."""
    pattern, delta = config.mixer_pattern, config.delta
    if pattern is not None:
        set_pattern(config, cls, "mixer_pattern", MIXERS)
    if pattern is None or "delta" not in pattern:
        if delta.impl != "auto":
            raise ValueError(
                f"{cls}.delta.impl: only delta layers read it, and mixer_pattern has none; set "
                f"it to 'auto' (got {delta.impl!r})"
            )
        for name in DELTA_SIZES:
            if getattr(delta, name) is not None:
                raise ValueError(
                    f"{cls}.delta.{name}: only delta layers read it, and mixer_pattern has none; "
                    "add 'delta' to mixer_pattern or set it to None"
                )
        return
    for name in DELTA_SIZES:
        if getattr(delta, name) is None:
            raise ValueError(
                f"{cls}.delta.{name}: delta layers need it (mixer_pattern has 'delta')"
            )
    if tuple(config.attention_layers) != ("causal",):
        raise ValueError(
            f"{cls}.mixer_pattern: delta layers are a causal decoder's; {cls} builds "
            f"{', '.join(config.attention_layers)} attention layers"
        )


def check_deepseek_mla(config: Any, cls: str) -> None:
    """DeepSeek's MLA sizes (``mla.q_lora_rank`` ...): with MLA only; the shared rope key
    (``mla.qk_rope_head_dim``) needs RoPE, an even width within ``head_dim``, a key and a value
    per query head, and no q/k norm (DeepSeek has none)."""
    c, mla = config, config.mla
    for name in DEEPSEEK_MLA:
        if getattr(mla, name) is not None and c.attention.type != "mla":
            raise ValueError(
                f"{cls}.mla.{name}: only attention.type 'mla' uses it (got attention.type "
                f"{c.attention.type!r}); set it to None"
            )
    rope = mla.qk_rope_head_dim
    if rope is None:
        return
    if rope % 2 or rope > c.head_dim:
        raise ValueError(
            f"{cls}.mla.qk_rope_head_dim must be even and at most head_dim ({c.head_dim}); got "
            f"{rope}"
        )
    needs = {"position.kind": "rope", "num_kv_heads": c.num_heads, "attention.qk_norm": False}
    for name, want in needs.items():
        if setting_value(c, name) != want:
            raise ValueError(
                f"{cls}.{name}: DeepSeek's MLA (mla.qk_rope_head_dim set) needs {name}={want!r}; "
                f"got {setting_value(c, name)!r}"
            )


def check_mla(config: Any, cls: str) -> None:
    """The latent's size goes with MLA, and only with it (other attention ignores it)."""
    check_deepseek_mla(config, cls)
    latent = config.mla.kv_latent_dim
    if config.attention.type == "mla":
        if latent is None:
            raise ValueError(
                f"{cls}.mla.kv_latent_dim: attention.type 'mla' needs the latent's size, a "
                "positive int; got None"
            )
    elif latent is not None:
        raise ValueError(
            f"{cls}.mla.kv_latent_dim: only attention.type 'mla' uses it (got attention.type "
            f"{config.attention.type!r}); set it to None"
        )


def check_family(config: Any, cls: str) -> None:
    """Check (and normalise: numbers become floats) a config's family switches (the attention
    section's check themselves)."""
    name = "final_logit_softcap"
    object.__setattr__(config, name, positive_float(cls, name, getattr(config, name)))
    decoder = "scale_embeddings" not in type(config).unused_fields
    if not decoder and config.norm.position in DECODER_NORM_POSITIONS:
        raise ValueError(
            f"{cls}.norm.position {config.norm.position!r} is implemented by decoders only; "
            "choose 'pre' or 'post'"
        )
    if config.position.rope_local_theta is not None and (
        config.attention.sliding_window is None or config.position.kind != "rope"
    ):
        raise ValueError(
            f"{cls}.position.rope_local_theta: only windowed RoPE layers use it "
            f"(attention.sliding_window {config.attention.sliding_window}, position.kind "
            f"{config.position.kind!r}); set attention.sliding_window (and position.kind 'rope') "
            "or leave position.rope_local_theta None"
        )
    if config.attention.logit_softcap is not None and config.attention_impl == "cudnn":
        raise ValueError(
            f"{cls}.attention_impl 'cudnn' cannot soft-cap attention logits "
            f"(attention.logit_softcap {config.attention.logit_softcap}): jax's cuDNN attention "
            "has no soft cap; use 'auto' (which then leaves cuDNN out), 'xla' or 'pallas'"
        )
    check_sinks(config, cls)
    check_rope_fraction(config, cls)
    impl = config.cross_entropy_impl
    if config.final_logit_softcap is not None and impl in CE_KERNEL_NAMES:
        raise ValueError(
            f"{cls}.cross_entropy_impl '{impl}' cannot soft-cap the output logits "
            f"(final_logit_softcap {config.final_logit_softcap}): the kernel has no soft "
            "cap; use 'auto' (which then takes the chunked XLA loss) or 'xla'"
        )


def check_sinks(config: Any, cls: str) -> None:
    """``attention.sinks`` only where a kernel computes them: tjx.kernels' XLA path (``auto``
    resolves to it); the section itself refuses them with ``attention.decode_topk`` and MLA."""
    if config.attention.sinks and config.attention_impl in ("cudnn", "pallas", "tokamax"):
        raise ValueError(
            f"{cls}.attention_impl {config.attention_impl!r} cannot add attention sinks "
            "(attention.sinks=True): only tjx.kernels' XLA attention computes them; use 'auto' "
            "(which then resolves to XLA) or 'xla'"
        )


def check_rope_fraction(config: Any, cls: str) -> None:
    """``position.rope_fraction`` (in ``(0, 1]``, its section checks) below 1 only with RoPE on
    multi-head attention (MLA rotates its own ``qk_rope_head_dim``), rotating an even number of
    dims."""
    pos = config.position
    f = pos.rope_fraction
    if f == 1.0:
        return
    if pos.kind != "rope" or config.attention.type != "mha":
        raise ValueError(
            f"{cls}.position.rope_fraction {f} needs position.kind 'rope' and attention.type "
            f"'mha' (got {pos.kind!r}, {config.attention.type!r}); set it to 1.0"
        )
    rotated = int(config.head_dim * f)
    if rotated < 2 or rotated % 2:
        raise ValueError(
            f"{cls}.position.rope_fraction {f} rotates int(head_dim {config.head_dim} x {f}) = "
            f"{rotated} dims; RoPE needs an even number, at least 2"
        )
    if pos.rope_scaling is not None and pos.rope_scaling.type == "longrope":
        raise ValueError(
            f"{cls}.position.rope_fraction {f} with a longrope rope_scaling is not supported "
            "(its factors are per frequency of the whole head); set rope_fraction to 1.0"
        )


def check_unused(config: Any, cls: str) -> None:
    """A setting this family's model never reads (a section's by its dotted key) keeps its
    default (else it would be ignored)."""
    for name, why in type(config).unused_fields.items():
        value, default = setting_value(config, name), setting_default(config, name)
        if value != default:
            raise ValueError(f"{cls}.{name}: {why}; got {value!r}, set it to {default!r}")


def model_config(model: object, config: object, kind: type[M]) -> M:
    """``config``, which ``model`` (a model being built) needs to be a ``kind``: else a
    ``ValueError`` naming the model's class, ``kind`` and what was given.

    Parameters
    ----------
    model : nnx.Module
        The model whose ``__init__`` reads ``config`` (its class names it in the error).
    config : object
        What the caller passed.
    kind : type
        The config class the model is built from.

    Returns
    -------
    object
        ``config``, typed as ``kind``.
    """
    if not isinstance(config, kind):
        article = "an" if kind.__name__[:1] in "AEIOU" else "a"
        raise ValueError(
            f"{type(model).__name__} needs {article} {kind.__name__}; got {type(config).__name__}"
        )
    return config


def check_index_loss(config: Any, cls: str) -> None:
    """``mla.index_loss_weight`` > 0 trains a sparse attention's indexer: the model must have one
    (``mla.index_*`` set, DeepSeek's MLA) and MoE layers, whose statistics (``MoEStats``) carry
    its loss to the training loss. Checked as the model is built, not with the config: a run
    started from a checkpoint sets the weight on a config whose architecture comes later.

    Raises
    ------
    ValueError
        One line naming ``mla.index_loss_weight`` and what the model lacks.
    """
    weight = config.mla.index_loss_weight
    if weight <= 0:
        return
    lacks = None
    if config.attention.type != "mla" or config.mla.index_n_heads is None:
        lacks = "no sparse-attention indexer (mla.index_* unset)"
    elif not config.moe.num_experts:
        lacks = (
            "no MoE layers (moe.num_experts=0), whose statistics carry the indexer's loss to the "
            "training loss"
        )
    if lacks is not None:
        raise ValueError(
            f"{cls}.mla.index_loss_weight: {weight!r} trains a sparse attention's indexer and "
            f"this model has {lacks}; set mla.index_loss_weight to 0"
        )
