"""Typed, validated model configs (frozen dataclasses): ``TransformerConfig`` (the fields every
family shares) and the decoders' ``GPT2Config`` and ``LlamaConfig``; the models with an encoder
(BERT, ViT, the encoder-decoder) are in :mod:`tjx.nn.encoder_configs`.

Every bad value raises ``ValueError`` at construction naming the field and the allowed values:
a section checks its own, :mod:`tjx.nn.cross_checks` what one needs of the rest of the model.
A setting of a section (``SECTIONS``) is named by a dotted key: `make_config` builds a config of
such keys, :mod:`tjx.nn.config_keys` reads one (``setting_value``, which this module also
exports). Subclasses only change defaults and add model-specific fields.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

from tjx.core.config.values import choice, positive, rate
from tjx.core.fields import setting
from tjx.kernels import CE_IMPLEMENTATIONS, IMPLEMENTATIONS
from tjx.nn.attention_config import FLAT_ATTENTION_KEYS, AttentionConfig
from tjx.nn.config_keys import field_defaults, fill_part_defaults
from tjx.nn.config_keys import setting_value as setting_value
from tjx.nn.cross_checks import (
    MIXERS,
    check_family,
    check_mixers,
    check_mla,
    check_rope,
    check_rope_scaling,
    check_sizes,
    check_unused,
    check_window,
)
from tjx.nn.families.gemma4.options import Gemma4Options, check_model
from tjx.nn.families.llama4.options import FLAT_KEYS as FLAT_LLAMA4_KEYS
from tjx.nn.families.llama4.options import Llama4Options
from tjx.nn.families.llama4.options import check_model as check_llama4
from tjx.nn.family_config import (
    LayerGeometry,
    LayerShape,
    check_mtp,
    kv_source,
    layer_shape,
    nope_layers,
)
from tjx.nn.fp8 import check_fp8
from tjx.nn.gated_deltanet import DeltaConfig
from tjx.nn.mla_config import MLAConfig
from tjx.nn.mlp_config import MLPConfig
from tjx.nn.moe.config import MoEConfig
from tjx.nn.mtp_config import MTPConfig
from tjx.nn.norm_config import NormConfig
from tjx.nn.params import InitConfig
from tjx.nn.position_config import FLAT_POSITION_KEYS, PositionConfig
from tjx.nn.precision import Precision, as_precision

# tjx-kernels' dispatcher owns this list: an implementation it adds is accepted here at once.
ATTENTION_IMPLS: tuple[str, ...] = IMPLEMENTATIONS
#: The vocabulary head's loss: chunked XLA, the fused Pallas kernel, or the chunked one with its
#: per-chunk passes in one Pallas kernel (tjx.kernels.ce_choice).
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
    are the MLP (``mlp``, `MLPConfig`, :mod:`tjx.nn.mlp_config`), the norms (``norm``, `NormConfig`,
    :mod:`tjx.nn.norm_config`), the init (``init``, `InitConfig`, :mod:`tjx.nn.params`) and
    multi-token prediction (``mtp``, `MTPConfig`, :mod:`tjx.nn.mtp_config`); a setting of theirs
    left None is the family's (``part_defaults``, filled in at construction). A family folder's
    options are its option section: Gemma 4's ``gemma4`` (`Gemma4Options`,
    :mod:`tjx.nn.families.gemma4.options`, which also checks what it needs of the model) and
    Llama 4's ``llama4`` (`Llama4Options`, :mod:`tjx.nn.families.llama4.options`). Each checks
    its own values when built, and :mod:`tjx.nn.cross_checks` what it needs of the rest of the
    model (``check_window``, ``check_mla``, ``check_mixers``; the stack's first MoE layer here);
    the family switches (what they are: :mod:`tjx.nn.family_config`) by ``check_family``. A
    setting in a section is named by a dotted key (``"moe.num_experts"``: `replace`,
    `make_config`, and :mod:`tjx.nn.config_keys`' `setting_value`). The single values' checks
    (``choice``, ``positive``, ``rate``) are tjx-core's, which every tjx-nn config uses.

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
    # A section's default is one instance of its frozen class, built with the class: a config
    # that leaves a section out (a GPT-2's mla, moe ...) shares it and builds or checks nothing.
    mlp: MLPConfig = setting(MLPConfig(), help="the feed-forward blocks")
    norm: NormConfig = setting(NormConfig(), help="the normalisation layers: kind, eps, position")
    position: PositionConfig = setting(
        PositionConfig(), help="the position encoding: kind, RoPE's settings, T5's"
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
        help="the vocabulary head's loss: xla (chunked), pallas (fused kernel), pallas_rows "
        "(chunked, one row kernel a chunk); auto: by evidence",
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
    init: InitConfig = setting(InitConfig(), help="the initial weights' std and residual scaling")
    attention: AttentionConfig = setting(
        AttentionConfig(), help="self-attention: its form, window, norms, caps, gate"
    )
    mla: MLAConfig = setting(
        MLAConfig(), help="attention.type=mla: the latent's and DeepSeek's sizes"
    )
    mtp: MTPConfig = setting(MTPConfig(), help="multi-token prediction modules after the decoder")
    scale_embeddings: bool = setting(False, help="token embeddings times sqrt(d_model) (Gemma)")
    final_logit_softcap: float | None = setting(None, help="output logits c·tanh(x/c) (Gemma 2)")
    qk_l2_norm: bool = setting(
        False, help="q and k over their RMS, no weight, after RoPE, on rotated layers (Llama 4)"
    )
    llama4: Llama4Options = setting(
        Llama4Options(), help="Llama 4's NoPE global layers and their temperature"
    )
    mixer_pattern: list[str] | None = setting(
        None,
        each_choices=MIXERS,
        help="layers' token mixers, repeated (delta: Gated DeltaNet); None: all attention",
    )
    delta: DeltaConfig = setting(
        DeltaConfig(), help="the Gated DeltaNet layers (mixer_pattern's delta)"
    )
    gemma4: Gemma4Options = setting(
        Gemma4Options(), help="Gemma 4's layer switches (its option section)"
    )
    moe: MoEConfig = setting(
        MoEConfig(), help="mixture-of-experts layers; num_experts 0: dense MLPs"
    )

    def __post_init__(self) -> None:
        cls = type(self).__name__
        object.__setattr__(self, "precision", as_precision(self.precision))
        check_sections(self, cls)
        # The family's value of each section setting left None (``part_defaults``).
        sections = {key.split(".")[0] for key in self.part_defaults}
        parts = {name: getattr(self, name) for name in sections}
        for name, part in fill_part_defaults(self.part_defaults, parts).items():
            object.__setattr__(self, name, part)
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
        # Llama 4's, multi-token prediction's, Gemma 4's and float8's rules live with them (the
        # family folders' options, family_config, fp8) and apply once one of them is switched on
        # (Llama 4's NoPE or q/k norm) or leaves its default (the defaults are valid): a config
        # without them is read here alone.
        if self.llama4.global_nope or self.qk_l2_norm:
            check_llama4(
                self.llama4,
                cls,
                qk_l2_norm=self.qk_l2_norm,
                position=self.position.kind,
                attention=self.attention,
                layer_locals=self.layer_locals(),
            )
        check_mixers(self, cls)
        check_mla(self, cls)
        defaults = field_defaults(type(self))  # the class's: what a setting left alone holds
        if self.mtp.depths:
            check_mtp(self, cls)
        check_family(self, cls)
        if self.gemma4 != defaults["gemma4"]:
            check_model(self, cls)
        # The sections check themselves when built; what they need of the stack is checked here.
        if self.moe.num_experts:
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

    def layer_shape(self, i: int | None = None) -> LayerShape:
        """Layer ``i``'s shape (`tjx.nn.family_config.layer_shape` of the ``gemma4`` section and
        the layers' geometry); None: the shape of layers alike."""
        # The config's checks fill head_dim, num_kv_heads and mlp.dim.
        geometry = LayerGeometry(
            cast(int, self.head_dim),
            cast(int, self.num_kv_heads),
            cast(int, self.mlp.dim),
            self.layer_windows(),
        )
        return layer_shape(self.gemma4, geometry, i)

    def layer_shapes(self, num_layers: int | None = None) -> tuple[LayerShape, ...] | None:
        """Each layer's `layer_shape` in a stack of ``num_layers`` (default ``num_layers``);
        None for a stack of other layers (an encoder-decoder's decoder): its layers are alike."""
        if num_layers not in (None, self.num_layers):
            return None
        return tuple(self.layer_shape(i) for i in range(self.num_layers))

    def nope_layers(self) -> tuple[bool, tuple[float, float] | None]:
        """Whether the global layers rotate no position, and their queries' temperature:
        `tjx.nn.family_config.nope_layers` of the ``llama4`` section."""
        return nope_layers(self.llama4)

    def kv_source(self, i: int) -> int | None:
        """The layer whose keys and values layer ``i`` reads, or None (its own):
        `tjx.nn.family_config.kv_source` of the ``gemma4`` section."""
        return kv_source(self.gemma4, self.layer_windows(), i)

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


def check_sections(config: Any, cls: str) -> None:
    """Each component section (`SECTIONS`) is its section's class, not a value of one of its
    settings (``norm="rmsnorm"``), which Python does not check and a later read would trip on."""
    for f in dataclasses.fields(config):
        part, kind = getattr(config, f.name), cast(type[Any], type(f.default))
        if f.name not in SECTIONS or isinstance(part, kind):
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


def rotated_dims(config: Any) -> int:
    """The dims of each q/k head RoPE rotates: ``int(head_dim · position.rope_fraction)``."""
    return int(config.head_dim * config.position.rope_fraction)


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
