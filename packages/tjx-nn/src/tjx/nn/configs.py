"""Typed, validated model configs (frozen dataclasses): ``TransformerConfig`` (the fields every
family shares, and their checks) and the decoders' ``GPT2Config`` and ``LlamaConfig``; the models
with an encoder (BERT, ViT, the encoder-decoder) are in :mod:`tjx.nn.encoder_configs`.

Every bad value raises ``ValueError`` at construction naming the field and the allowed values.
Subclasses only change defaults and add model-specific fields.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from tjx.core.config.values import choice, positive, rate
from tjx.core.fields import setting
from tjx.kernels import CE_IMPLEMENTATIONS, IMPLEMENTATIONS
from tjx.nn.attention_config import FLAT_ATTENTION_KEYS, AttentionConfig, positive_float
from tjx.nn.families.gemma4.options import Gemma4Options, check_model
from tjx.nn.families.llama4.options import FLAT_KEYS as FLAT_LLAMA4_KEYS
from tjx.nn.families.llama4.options import Llama4Options
from tjx.nn.family_config import DECODER_NORM_POSITIONS, check_mtp
from tjx.nn.fp8 import check_fp8
from tjx.nn.gated_deltanet import DELTA_SIZES, DeltaConfig
from tjx.nn.mla_config import DEEPSEEK_MLA, MLAConfig
from tjx.nn.mlp import MLPConfig
from tjx.nn.moe.config import MoEConfig
from tjx.nn.mtp_config import MTPConfig
from tjx.nn.norm_config import NormConfig
from tjx.nn.params import InitConfig
from tjx.nn.position_config import FLAT_POSITION_KEYS, PositionConfig
from tjx.nn.precision import Precision, as_precision

# tjx-kernels' dispatcher owns this list: an implementation it adds is accepted here at once.
ATTENTION_IMPLS: tuple[str, ...] = IMPLEMENTATIONS
#: The vocabulary head's loss: chunked XLA or the fused Pallas kernel (tjx.kernels.ce_choice).
CE_IMPLS: tuple[str, ...] = CE_IMPLEMENTATIONS
REMAT_POLICIES = ("none", "full", "save_dots", "save_attention_output", "save_dots_and_attention")
#: The component sections of a model config (their own config classes): a setting in one is named
#: by a dotted key, ``moe.num_experts``; a family folder's option section (``llama4``) likewise.
SECTIONS = (
    "attention",
    "position",
    "moe",
    "mla",
    "delta",
    "mtp",
    "init",
    "mlp",
    "norm",
    "gemma4",
    "llama4",
)
C = TypeVar("C", bound="TransformerConfig")
#: The sections' old flat keys (a model section's, before they were sections) → their dotted key
#: (:mod:`tjx.nn.old_layout` moves them); the family folders' with the shared parts'.
FLAT_SECTION_KEYS = {
    **{old: f"attention.{new}" for old, new in FLAT_ATTENTION_KEYS.items()},
    **{old: f"position.{new}" for old, new in FLAT_POSITION_KEYS.items()},
    **{old: f"llama4.{new}" for old, new in FLAT_LLAMA4_KEYS.items()},
}
#: What each entry of ``mixer_pattern`` says about a layer: its token mixer, attention or Gated
#: DeltaNet linear attention (:mod:`tjx.nn.gated_deltanet`, Qwen3-Next and Qwen3.5).
MIXERS = ("attention", "delta")


@dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """Fields shared by every tjx transformer.

    ``num_kv_heads``/``head_dim``/``mlp.dim`` default to ``num_heads``, ``d_model // num_heads``
    and ``4 * d_model``. ``precision`` accepts a ``Precision`` or a preset name (``"bf16"`` …).
    ``remat`` is one of ``REMAT_POLICIES``; ``scan_layers`` stacks layers under ``nnx.scan``.
    ``position`` (`PositionConfig`, :mod:`tjx.nn.position_config`) is the position encoding:
    its ``kind``, RoPE's base, share and scaling, Gemma 3's local base and T5's buckets (a
    scaling needs ``position.kind="rope"``).

    Self-attention's settings but its heads and kernel are a component section, ``attention``
    (`AttentionConfig`, :mod:`tjx.nn.attention_config`: its window, q/k norm, soft cap, sinks,
    output gate ...); a model whose every layer is local decodes with a rolling KV cache of the
    window's size. So are the mixture of experts, multi-head latent attention and Gated
    DeltaNet: ``moe`` (`MoEConfig`, :mod:`tjx.nn.moe.config`), ``mla`` (`MLAConfig`,
    :mod:`tjx.nn.mla_config`) and ``delta`` (`DeltaConfig`, :mod:`tjx.nn.gated_deltanet`); so
    are the MLP (``mlp``, `MLPConfig`, :mod:`tjx.nn.mlp`), the norms (``norm``, `NormConfig`,
    :mod:`tjx.nn.norm_config`), the init (``init``, `InitConfig`, :mod:`tjx.nn.params`) and
    multi-token prediction (``mtp``, `MTPConfig`, :mod:`tjx.nn.mtp_config`); a setting of theirs
    left None is the family's (``part_defaults``, filled in at construction). A family folder's
    options are its option section: Gemma 4's ``gemma4`` (`Gemma4Options`,
    :mod:`tjx.nn.families.gemma4.options`, which also checks what it needs of the model) and
    Llama 4's ``llama4`` (`Llama4Options`, :mod:`tjx.nn.families.llama4.options`). Each checks
    its own values when built, and this module what it needs of the rest of the model
    (``check_window``, ``check_mla``, ``check_mixers``, the stack's first MoE layer); the family
    switches (what they are: :mod:`tjx.nn.family_config`) by ``check_family``. A setting in a
    section is named by a dotted key (``"moe.num_experts"``: `replace`, `setting_value`,
    `make_config`). The single values' checks (``choice``, ``positive``, ``rate``) are
    tjx-core's, which every tjx-nn config uses.

    ``unused_fields`` (a class attribute) names the shared fields a family's model never reads,
    each with the reason: such a field must keep its class default (any other value would be
    ignored without a word, so it is refused), and code mapping generic settings onto a family
    (the trainer's ``model:`` section) leaves it out unless its user changed it.
    """

    unused_fields: ClassVar[Mapping[str, str]] = {}
    #: Whether the family has bidirectional self-attention (an encoder), whose window cuDNN
    #: cannot apply (its sliding window looks back only).
    bidirectional: ClassVar[bool] = False
    #: The kinds of attention layer the family's model builds (``tjx.nn.kernel_choice``'s
    #: ``ATTENTION_KINDS``): the kernel choice resolves one kernel for each before it is built.
    attention_layers: ClassVar[tuple[str, ...]] = ("causal",)
    #: The family's value of each component section's setting left None (a dotted key), filled
    #: in at construction: ``LlamaConfig(mlp=MLPConfig(dim=64))`` has LLaMA's SwiGLU.
    part_defaults: ClassVar[Mapping[str, Any]] = {
        "mlp.activation": "gelu",
        "init.scaled_residual": True,
        "norm.kind": "layernorm",
        "norm.eps": 1e-5,
        "norm.position": "pre",
        "position.kind": "learned",
    }

    vocab_size: int = setting(50257, help="tokens in the vocabulary (embedding and output rows)")
    max_seq_len: int = setting(1024, help="longest sequence (the learned position table's size)")
    d_model: int = setting(768, help="residual width")
    num_layers: int = setting(12, help="transformer blocks")
    num_heads: int = setting(12, help="attention (query) heads")
    num_kv_heads: int | None = setting(
        None, help="key/value heads (grouped-query attention); None: num_heads"
    )
    head_dim: int | None = setting(None, help="width of one head; None: d_model // num_heads")
    mlp: MLPConfig = setting(MLPConfig, factory=True, help="the feed-forward blocks")
    norm: NormConfig = setting(
        NormConfig, factory=True, help="the normalisation layers: kind, eps, position"
    )
    position: PositionConfig = setting(
        PositionConfig, factory=True, help="the position encoding: kind, RoPE's settings, T5's"
    )
    use_bias: bool = setting(True, help="biases of dense layers and LayerNorms")
    dropout: float = setting(
        0.0, resumable=True, help="dropout rate of the residual branches and embeddings"
    )
    tie_embeddings: bool = setting(True, help="the output head reuses the input embedding")
    attention_impl: str = setting(
        "auto",
        choices=ATTENTION_IMPLS,
        resumable=True,
        help="attention kernel; auto: tjx.kernels picks by measurement",
    )
    cross_entropy_impl: str = setting(
        "auto",
        choices=CE_IMPLS,
        resumable=True,
        help="the vocabulary head's loss: xla (chunked), pallas (fused kernel); auto: by evidence",
    )
    scan_layers: bool = setting(False, help="one scan over the layers (stacked): faster compiles")
    remat: str = setting(
        "none",
        choices=REMAT_POLICIES,
        resumable=True,
        help="what the backward pass recomputes instead of storing",
    )
    precision: Precision = setting(
        Precision, factory=True, help="parameter and compute dtypes (param_dtype, compute_dtype)"
    )
    init: InitConfig = setting(
        InitConfig, factory=True, help="the initial weights' std and residual scaling"
    )
    attention: AttentionConfig = setting(
        AttentionConfig, factory=True, help="self-attention: its form, window, norms, caps, gate"
    )
    mla: MLAConfig = setting(
        MLAConfig, factory=True, help="attention.type=mla: the latent's and DeepSeek's sizes"
    )
    mtp: MTPConfig = setting(
        MTPConfig, factory=True, help="multi-token prediction modules after the decoder"
    )
    scale_embeddings: bool = setting(False, help="token embeddings times sqrt(d_model) (Gemma)")
    final_logit_softcap: float | None = setting(None, help="output logits c·tanh(x/c) (Gemma 2)")
    qk_l2_norm: bool = setting(
        False, help="q and k over their RMS, no weight, after RoPE, on rotated layers (Llama 4)"
    )
    llama4: Llama4Options = setting(
        Llama4Options, factory=True, help="Llama 4's NoPE global layers and their temperature"
    )
    mixer_pattern: list[str] | None = setting(
        None,
        each_choices=MIXERS,
        help="layers' token mixers, repeated (delta: Gated DeltaNet); None: all attention",
    )
    delta: DeltaConfig = setting(
        DeltaConfig, factory=True, help="the Gated DeltaNet layers (mixer_pattern's delta)"
    )
    gemma4: Gemma4Options = setting(
        Gemma4Options, factory=True, help="Gemma 4's layer switches (its option section)"
    )
    moe: MoEConfig = setting(
        MoEConfig, factory=True, help="mixture-of-experts layers; num_experts 0: dense MLPs"
    )

    def __post_init__(self) -> None:
        cls = type(self).__name__
        object.__setattr__(self, "precision", as_precision(self.precision))
        check_sections(self, cls)
        fill_part_defaults(self)
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        for name in ("max_seq_len", "d_model", "num_layers", "num_heads", "num_kv_heads"):
            positive(cls, name, getattr(self, name))
        self._check_vocab(cls)
        check_sizes(self, cls)
        choice(cls, "attention_impl", self.attention_impl, ATTENTION_IMPLS)
        choice(cls, "cross_entropy_impl", self.cross_entropy_impl, CE_IMPLS)
        choice(cls, "remat", self.remat, REMAT_POLICIES)
        rate(cls, "dropout", self.dropout)
        check_rope(self, cls)
        check_rope_scaling(self, cls)
        check_window(self, cls)
        check_llama4(self, cls)
        check_mixers(self, cls)
        check_mla(self, cls)
        defaults = field_defaults(self)
        # Multi-token prediction's, Gemma 4's and float8's rules live with them (family_config,
        # the gemma4 folder's options, fp8) and apply once one of their settings leaves its
        # default (the defaults are valid): a config without them is read in this file alone.
        if self.mtp.depths:
            check_mtp(self, cls)
        check_family(self, cls)
        if self.gemma4 != defaults["gemma4"]:
            check_model(self, cls)
        # The sections check themselves when built; what they need of the stack is checked here.
        self.moe.check_layers(self.num_layers, f"{cls}.moe")
        check_unused(self, cls)
        if self.precision.fp8:
            check_fp8(self, cls)

    def layer_windows(self, num_layers: int | None = None) -> tuple[int | None, ...]:
        """Each layer's self-attention window (None: full attention), ``attention.window_pattern``
        repeated over ``num_layers`` (default ``num_layers``) layers."""
        n = self.num_layers if num_layers is None else num_layers
        window = self.attention.sliding_window
        if window is None:
            return (None,) * n
        pattern = self.attention.window_pattern or ("local",)
        return tuple(window if pattern[i % len(pattern)] == "local" else None for i in range(n))

    def layer_locals(self, num_layers: int | None = None) -> tuple[bool, ...]:
        """Each layer's ``local`` switch: whether its sliding window or attention chunk applies
        (and, with ``llama4.global_nope``, whether RoPE rotates it), ``attention.window_pattern``
        repeated."""
        n = self.num_layers if num_layers is None else num_layers
        a = self.attention
        if a.sliding_window is None and a.chunk is None:
            return (False,) * n
        pattern = a.window_pattern or ("local",)
        return tuple(pattern[i % len(pattern)] == "local" for i in range(n))

    def layer_mixers(self, num_layers: int | None = None) -> tuple[str, ...]:
        """Each layer's token mixer (``MIXERS``), ``mixer_pattern`` repeated over ``num_layers``
        (default ``num_layers``) layers; every layer attends without one."""
        n = self.num_layers if num_layers is None else num_layers
        pattern = self.mixer_pattern or ("attention",)
        return tuple(pattern[i % len(pattern)] for i in range(n))

    def _check_vocab(self, cls: str) -> None:
        positive(cls, "vocab_size", self.vocab_size)

    @property
    def gated(self) -> bool:
        """Whether the MLP is gated (SwiGLU/GeGLU)."""
        return self.mlp.gated

    def replace(self, **changes: Any) -> TransformerConfig:
        """A copy with ``changes`` applied (validated again); a dotted key (``"delta.impl"``)
        changes that field of a component section (`SECTIONS`)."""
        nested: dict[str, dict[str, Any]] = {}
        for key in [k for k in changes if "." in k]:
            section, name = key.split(".", 1)
            nested.setdefault(section, {})[name] = changes.pop(key)
        for section, values in nested.items():
            base = changes.get(section, getattr(self, section))
            changes[section] = dataclasses.replace(base, **values)
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class GPT2Config(TransformerConfig):
    """GPT-2: learned positions, pre-LN LayerNorm, GELU (tanh) MLP, biases, tied embeddings."""


@dataclass(frozen=True, kw_only=True)
class LlamaConfig(TransformerConfig):
    """LLaMA-style decoder: RMSNorm, SwiGLU, RoPE, GQA, no biases, untied head by default.
    ``attention.type="mla"``: keys/values from one cached low-rank latent per token."""

    part_defaults: ClassVar[Mapping[str, Any]] = {
        **TransformerConfig.part_defaults,
        "mlp.activation": "swiglu",
        "init.scaled_residual": False,
        "norm.kind": "rmsnorm",
        "norm.eps": 1e-6,
        "position.kind": "rope",
    }

    vocab_size: int = 32000
    max_seq_len: int = 2048
    d_model: int = 512
    num_layers: int = 8
    num_heads: int = 8
    use_bias: bool = False
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        check_sections(self, type(self).__name__)  # before the mlp section is read here
        if self.mlp.dim is None:
            # LLaMA: 8/3·d rounded up to a multiple of 64 keeps SwiGLU params ≈ a 4·d MLP.
            dim = ((8 * self.d_model // 3) + 63) // 64 * 64
            object.__setattr__(self, "mlp", dataclasses.replace(self.mlp, dim=dim))
        super().__post_init__()


# The checks of TransformerConfig (its __post_init__ calls them), each a ValueError naming
# ``Class.field``: sizes, RoPE and its scaling, sliding windows, MLA, T5's relative bias, the
# decoder families' switches (``check_family``; :mod:`tjx.nn.family_config` says what they are)
# and the fields a family never reads (``check_unused``). A config and its checks are one idea,
# so they are one module (before tjx-nn 0.22: :mod:`tjx.nn.config_checks`).


def check_sections(config: Any, cls: str) -> None:
    """Each component section (`SECTIONS`) is its section's class, not a value of one of its
    settings (``norm="rmsnorm"``), which Python does not check and a later read would trip on."""
    for f in dataclasses.fields(config):
        part, kind = getattr(config, f.name), f.default_factory
        if f.name not in SECTIONS or not isinstance(kind, type) or isinstance(part, kind):
            continue
        # What to write instead: a dict's items, or the setting a string is a choice of.
        items = dict(part) if isinstance(part, Mapping) else {"<setting>": part}
        if isinstance(part, str):
            for g in dataclasses.fields(kind):
                if part in g.metadata.get("choices", ()):
                    items = {g.name: part}
        args = ", ".join(f"{k}={v!r}" for k, v in items.items())
        dotted = {f"{f.name}.{k}": v for k, v in items.items()}
        write = f"{f.name}={kind.__name__}({args}) or make_config({cls}, {dotted!r})"
        if part is None:
            write = f"{f.name}={kind.__name__}(...), or leave it out for the default"
        raise ValueError(
            f"{cls}.{f.name} must be an instance of {kind.__name__} (got the "
            f"{type(part).__name__} {part!r}); write {write}"
        )


def fill_part_defaults(config: Any) -> None:
    """Each component section's setting left None set to the family's (``part_defaults``)."""
    for key, value in type(config).part_defaults.items():
        section, name = key.split(".")
        part = getattr(config, section)
        if getattr(part, name) is None:
            object.__setattr__(config, section, dataclasses.replace(part, **{name: value}))


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


def check_llama4(config: Any, cls: str) -> None:
    """Llama 4's NoPE global layers (the ``llama4`` section) and weightless q/k norm, only where
    they act: rotated (RoPE, multi-head) layers, and a global layer in
    ``attention.window_pattern``."""
    c, nope = config, config.llama4.global_nope
    rotated = c.position.kind == "rope" and c.attention.type == "mha"
    if nope and (not rotated or False not in c.layer_locals()):
        raise ValueError(
            f"{cls}.llama4.global_nope: needs position 'rope', attention.type 'mha' and a global "
            f"layer in attention.window_pattern (got {c.position.kind!r}, {c.attention.type!r}, "
            f"{c.attention.window_pattern}); set llama4.global_nope to False"
        )
    if c.qk_l2_norm and not rotated:
        raise ValueError(
            f"{cls}.qk_l2_norm: only rotated (position 'rope', attention.type 'mha') layers have "
            f"it; got {c.position.kind!r}, {c.attention.type!r}"
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
    if config.final_logit_softcap is not None and config.cross_entropy_impl == "pallas":
        raise ValueError(
            f"{cls}.cross_entropy_impl 'pallas' cannot soft-cap the output logits "
            f"(final_logit_softcap {config.final_logit_softcap}): the fused kernel has no soft "
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


def rotated_dims(config: Any) -> int:
    """The dims of each q/k head RoPE rotates: ``int(head_dim · position.rope_fraction)``."""
    return int(config.head_dim * config.position.rope_fraction)


def setting_default(config: Any, key: str) -> Any:
    """The class default of setting ``key`` of ``config`` (a dotted one: its section's)."""
    section, _, name = key.rpartition(".")
    owner = setting_value(config, section) if section else config
    return field_defaults(owner)[name]


def field_defaults(config: Any) -> dict[str, Any]:
    """Each field of ``config``'s class → its default (a section's: a fresh default instance)."""
    return {
        f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(config)
    }


def check_unused(config: Any, cls: str) -> None:
    """A setting this family's model never reads (a section's by its dotted key) keeps its
    default (else it would be ignored)."""
    for name, why in type(config).unused_fields.items():
        value, default = setting_value(config, name), setting_default(config, name)
        if value != default:
            raise ValueError(f"{cls}.{name}: {why}; got {value!r}, set it to {default!r}")


def make_config(cls: type[C], fields: Mapping[str, Any]) -> C:
    """``cls`` built of keywords ``fields``, where a dotted key (``"mlp.dim"``) sets that setting
    of a component section (`SECTIONS`), over the section given whole or else the default.

    Raises
    ------
    ValueError
        A dotted key names no section of ``cls``, or a value ``cls`` refuses.
    """
    kwargs = {k: v for k, v in fields.items() if "." not in k}
    nested: dict[str, dict[str, Any]] = {}
    for key in [k for k in fields if "." in k]:
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = fields[key]
    defaults = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for section, values in nested.items():
        if section not in SECTIONS or section not in defaults:
            raise ValueError(f"{cls.__name__} has no section {section!r} (dotted keys: {SECTIONS})")
        base: Any = kwargs.get(section)
        if base is None:
            f = defaults[section]
            base = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        kwargs[section] = dataclasses.replace(base, **values)
    return cls(**kwargs)


def setting_value(config: Any, key: str) -> Any:
    """The value of setting ``key`` of ``config``: a field, or a dotted one of a component
    section (``"moe.router"``)."""
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value
