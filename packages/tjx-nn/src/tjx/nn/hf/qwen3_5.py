"""Hugging Face Qwen3.5 text (``Qwen3_5ForCausalLM``, ``qwen3_5_text``) ↔ tjx ``Llama`` with delta
layers.

Qwen3.5 is Qwen3's decoder (pre-norm, SwiGLU, per-head q/k norms) with:

=================================  ============================================================
config.json / tensor               tjx
=================================  ============================================================
``layer_types`` (``linear_`` /     ``mixer_pattern`` (``delta`` / ``attention``; default: three
``full_attention``)                delta layers, then an attention one)
``linear_num_key_heads``, ...      ``delta.key_heads``, ``delta.value_heads``, ``delta.key_dim``,
``linear_conv_kernel_dim``         ``delta.value_dim``, ``delta.conv_kernel``
``linear_attn.*``                  ``delta.*`` (`tjx.nn.gated_deltanet`): ``conv1d.weight``
                                   ``[C, 1, K]`` ↔ ``conv_weight`` ``[C, K]``, ``A_log`` ↔
                                   ``a_log``, ``norm.weight`` ↔ ``norm_scale``
``self_attn.q_proj`` ``[2·h·hd,    ``attn.query`` and ``attn.gate`` (``attention_output_gate``):
d]``                               per head, ``hd`` query rows then ``hd`` gate rows
RMSNorms ``x · (1 + w)``, w from   ``norm.plus_one`` (the q/k norms too; the delta layers' own
0                                  output norm scales by ``w``)
``rope_parameters``'s              ``rope_fraction`` (0.25 by default: RoPE turns each head's
``partial_rotary_factor``          first quarter)
=================================  ============================================================

``mrope_section`` / ``mrope_interleaved`` (the image model's 3-D positions) change no number for
text: its three position rows are the same token index. The published checkpoints are the
image-text model's (``model_type`` qwen3_5): its ``text_config`` and ``model.language_model.*``
are this text model (`image_text_config`, `text_name`); its vision tower (``model.visual.*``) and
the multi-token-prediction module (``mtp.*``) are skipped in one line each (`skip_modules`), as
transformers' causal LM drops them. The published configs' ``attn_output_gate``
(true: the gated ``q_proj``, which transformers always builds), ``mamba_ssm_dtype`` (the delta
state's dtype at serving; transformers and tjx keep float32) and ``mlp_only_layers`` (every layer
of a dense model is dense) change nothing transformers computes: transformers 5.24's
``Qwen3_5TextConfig`` drops them. Refused in one line naming the key: unknown keys,
``attn_output_gate`` false, ``attention_bias`` true, another activation, a RoPE scaling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tjx.nn.configs import LlamaConfig, make_config
from tjx.nn.gated_deltanet import DeltaConfig
from tjx.nn.hf.config import OTHER_SWITCHES, partial_rotary_factor
from tjx.nn.hf.family_base import (
    base_fields,
    check_keys,
    common_to_hf,
    mismatches,
    refuse_mismatches,
    rope_theta,
    shortest_pattern,
)
from tjx.nn.hf.family_tensors import family_mapping
from tjx.nn.hf.image_text import skip_beside, text_config
from tjx.nn.hf.keys import ABSENT, BASE, Key, count, flag, int_list, layer_list, size, text
from tjx.nn.hf.mapping import HFMapping, Read
from tjx.nn.hf.mtp_tensors import qwen_mtp_mapping
from tjx.nn.hf.tables import Tables

QWEN3_5 = "qwen3_5_text"
ARCHITECTURE = "Qwen3_5ForCausalLM"
#: Qwen3.5's keys beyond ``family_base.BASE_KEYS``, each mapped or checked here.
KEYS = frozenset(
    {
        "hidden_act",
        "layer_types",
        "full_attention_interval",  # transformers' default layer_types (an older config's)
        "partial_rotary_factor",
        "linear_conv_kernel_dim",
        "linear_key_head_dim",
        "linear_value_head_dim",
        "linear_num_key_heads",
        "linear_num_value_heads",
        # Qwen's multi-token-prediction module beside the causal LM (``mtp.*``): transformers
        # drops it on load, and so does tjx, in one line (`skip_modules`), unless asked for
        # (``mtp.depths=1``: `mtp_fields`, `tjx.nn.hf.mtp_tensors.qwen_mtp_mapping`).
        "mtp_num_hidden_layers",
        "mtp_use_dedicated_embeddings",
        # The published configs' keys that transformers' Qwen3.5 configs drop: the gate is
        # always there (`NO_OP`); the delta state's dtype at serving (vLLM's; transformers and
        # tjx keep float32); which layers are dense (all of a dense model's are).
        "attn_output_gate",
        "mamba_ssm_dtype",
        "mlp_only_layers",
    }
)
#: The keys a Qwen hybrid reads only at the value transformers computes with (it has no other):
#: key → value (`hybrid_fields` refuses another in one line).
NO_OP: dict[str, Any] = {"attn_output_gate": True}
#: ``layer_types`` ↔ ``mixer_pattern``.
MIXER_OF = {"linear_attention": "delta", "full_attention": "attention"}
#: The keys Qwen3.5's import reads (`keys.Spec`), with transformers 5.24's
#: ``Qwen3_5TextConfig`` defaults (``partial_rotary_factor`` and ``full_attention_interval``:
#: the keyword arguments its ``__post_init__`` reads; the RoPE entry's factor wins).
SPEC = BASE.but(
    "Qwen3_5TextConfig",
    hidden_act=text("silu"),
    num_key_value_heads=size(4),
    max_position_embeddings=size(32768),
    head_dim=size(256),
    linear_conv_kernel_dim=size(4),
    linear_key_head_dim=size(128),
    linear_value_head_dim=size(128),
    linear_num_key_heads=size(16),
    linear_num_value_heads=size(32),
    layer_types=layer_list(tuple(sorted(MIXER_OF))),
    full_attention_interval=size(4),
    partial_rotary_factor=Key("float", 0.25, above=0, high=1),
    mtp_num_hidden_layers=count(ABSENT),
    mtp_use_dedicated_embeddings=flag(ABSENT),
    attn_output_gate=flag(ABSENT),
    mamba_ssm_dtype=text(ABSENT),
    mlp_only_layers=int_list(ABSENT),
    rules=(("linear_num_key_heads", "divides", "linear_num_value_heads"),),
)
LAYER_TYPE_OF = {v: k for k, v in MIXER_OF.items()}
#: Qwen3.5's switches of those a LLaMA block has off (`tjx.nn.hf.config.OTHER_SWITCHES`).
QWEN3_5_OWN = ("attention.output_gate", "mixer_pattern")
#: What a config must have to be written as Qwen3.5: field → the value Qwen3.5 computes with.
NEEDS: dict[str, Any] = (
    dict(
        **{"attention.type": "mha"},
        use_bias=False,
        **{"attention.qkv_bias": False},
        **{"attention.qk_norm": True},
        **{"attention.qk_norm_scope": "head"},
        **{"attention.output_gate": True},
        scale_embeddings=False,
        **{"attention.query_pre_attn_scalar": None},
        **{"attention.logit_softcap": None},
        final_logit_softcap=None,
        **{"attention.sliding_window": None},
        **{"attention.sinks": False},
        **{"moe.num_experts": 0},
    )
    | {"position.kind": "rope", "position.rope_local_theta": None, "position.rope_scaling": None}
    | {"norm.kind": "rmsnorm", "norm.position": "pre", "norm.plus_one": True}
    | {"mlp.activation": "swiglu"}
    # The other families' switches off (Qwen3.5's own: the output gate and delta layers).
    | {k: v for k, v in OTHER_SWITCHES.items() if k not in QWEN3_5_OWN}
)
#: The RoPE entry's keys of the image model's positions (equal for text: no number changes).
_MROPE = ("mrope_section", "mrope_interleaved")
#: The image-text model's ``model_type`` (``Qwen3_5ForConditionalGeneration``, the published
#: Qwen3.5 checkpoints): its ``text_config`` is a qwen3_5_text config, its language model's tensors
#: are ``model.language_model.*`` (tjx's ``model.*``), the vision tower's ``model.visual.*``.
IMAGE_TEXT = "qwen3_5"
#: The image-text config's keys beside ``text_config``: the vision tower's, and the tokens that
#: mark images and video in a prompt (none changes the text model's numbers).
IMAGE_TEXT_KEYS = frozenset(
    {
        "text_config",
        "vision_config",
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
        "tie_word_embeddings",
    }
)
LANGUAGE_MODEL, VISUAL, MTP = "model.language_model.", "model.visual.", "mtp."


def qwen3_5_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` with delta layers from a qwen3_5_text ``config.json`` dict
    (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown key, or a value tjx does not compute as transformers does, named.
    """
    hf = SPEC.read(hf)
    fields = {**hybrid_fields(hf, QWEN3_5, KEYS), **overrides}
    return make_config(LlamaConfig, fields | mtp_fields(hf, fields))


def mtp_fields(hf: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The multi-token-prediction module's fields of a Qwen3.5 config (``hf`` read by its spec,
    ``fields`` the config's with the overrides): loaded only when asked (``mtp.depths=1``; by
    default skipped in one line, as transformers skips it), from a checkpoint that stores one.

    Raises
    ------
    ValueError
        ``mtp.depths`` above what ``mtp_num_hidden_layers`` stores, or dedicated embeddings.
    """
    depths = fields.get("mtp.depths", 0)
    if not depths:
        return {}
    stored = hf.get("mtp_num_hidden_layers", 0)
    if depths > stored or stored > 1 or hf.get("mtp_use_dedicated_embeddings"):
        raise ValueError(
            f"mtp.depths={depths}: tjx reads Qwen3.5's multi-token-prediction module of one layer "
            f"on the main model's embeddings; config.json has mtp_num_hidden_layers {stored}, "
            f"mtp_use_dedicated_embeddings {hf.get('mtp_use_dedicated_embeddings', False)} "
            "(set mtp.depths=0)"
        )
    return {"mtp.depths": depths}


def image_text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The text model's ``config.json`` dict of a Qwen3.5 image-text ``config.json``
    (`tjx.nn.hf.image_text.text_config`; untied unless it says otherwise)."""
    return text_config(
        hf, image_text=IMAGE_TEXT, text=QWEN3_5, keys=IMAGE_TEXT_KEYS, tied=False, spec=SPEC
    )


def text_name(stored: str) -> str:
    """A tensor's name in an image-text checkpoint → its name in the text model's
    (``model.language_model.*`` → ``model.*``; the others as they are)."""
    if stored.startswith(LANGUAGE_MODEL):
        return "model." + stored.removeprefix(LANGUAGE_MODEL)
    return stored


def skip_modules(base: Callable[[str], bool], image_text: bool) -> Callable[[str], bool]:
    """``base``'s ignored names, and the modules stored beside the causal LM that it does not
    use, each said in one line when a checkpoint really holds it (`image_text.skip_beside`): the
    multi-token-prediction module (``mtp.*``, ``mtp_num_hidden_layers``) and an image-text
    model's vision tower (``model.visual.*``). transformers' causal LM drops both on load too."""
    beside: dict[str | tuple[str, ...], str] = {MTP: "multi-token-prediction module (mtp.*)"}
    if image_text:
        beside[VISUAL] = "vision tower (model.visual.*): tjx loads the text model"
    return skip_beside(base, beside)


def refuse_no_ops(
    hf: Mapping[str, Any], no_op: Mapping[str, Any], model_type: str, why: str
) -> None:
    """Refuse, in one line, a key of ``no_op`` that ``hf`` sets to another value than the one
    transformers computes with (``why``: what it computes); transformers would drop the key.

    Raises
    ------
    ValueError
        The first such key, its value and the one to set.
    """
    for key, value in no_op.items():
        if key in hf and hf[key] != value:
            raise ValueError(
                f"config.json {key} {hf[key]!r} is not supported for {model_type}: "
                f"transformers' config has no such switch ({why}) and would drop it; set it "
                f"to {value!r} or remove it"
            )


def hybrid_fields(hf: Mapping[str, Any], model_type: str, keys: frozenset[str]) -> dict[str, Any]:
    """The ``LlamaConfig`` fields of a Qwen hybrid (delta and gated attention layers: Qwen3.5,
    and Qwen3-Next's decoder) from ``hf`` as the type's `keys.Spec` has read it (transformers'
    defaults filled in), its keys beyond ``family_base.BASE_KEYS`` ``keys``.

    Raises
    ------
    ValueError
        An unknown key, or a value tjx does not compute as transformers does, named.
    """
    check_keys(hf, model_type, keys)
    refuse_no_ops(hf, NO_OP, model_type, "its attention output is always gated (the gated q_proj)")
    act = hf["hidden_act"]
    if act != "silu":
        raise ValueError(f"config.json hidden_act must be 'silu' (SwiGLU); got {act!r}")
    params = {k: v for k, v in (hf.get("rope_parameters") or {}).items() if k not in _MROPE}
    partial = params.pop("partial_rotary_factor", hf["partial_rotary_factor"])
    layers = hf["num_hidden_layers"]
    types = hf.get("layer_types")  # its length and kinds: read with the spec
    if types is None:
        every = hf["full_attention_interval"]
        types = ["linear_attention" if (i + 1) % every else "full_attention" for i in range(layers)]
    rest = {k: v for k, v in hf.items() if k != "partial_rotary_factor"}  # read above
    fields = base_fields(hf)
    fields |= dict(
        mixer_pattern=shortest_pattern([MIXER_OF[t] for t in types]),
        delta=DeltaConfig(
            key_heads=hf["linear_num_key_heads"],
            value_heads=hf["linear_num_value_heads"],
            key_dim=hf["linear_key_head_dim"],
            value_dim=hf["linear_value_head_dim"],
            conv_kernel=hf["linear_conv_kernel_dim"],
        ),
    ) | {
        "position.rope_theta": rope_theta({**rest, "rope_parameters": params}, model_type),
        "position.rope_fraction": partial_rotary_factor(partial),
    }
    # The switches a Qwen hybrid computes with (the dense MLP: the moe section's default).
    skip = ("position.rope_scaling", "attention.sliding_window", "moe.num_experts")
    switches = {k: v for k, v in NEEDS.items() if k not in skip}
    return fields | switches


def is_qwen3_5(config: LlamaConfig) -> bool:
    """Whether ``config`` computes what only Qwen3.5 among the families tjx writes does: delta
    layers or a gated attention output."""
    return config.attention.output_gate or "delta" in config.layer_mixers()


def qwen3_5_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as qwen3_5_text.

    Raises
    ------
    ValueError
        ``config`` computes something Qwen3.5 cannot express (every such field named).
    """
    return hybrid_to_hf(config, QWEN3_5, ARCHITECTURE, NEEDS)


def hybrid_to_hf(
    config: LlamaConfig, model_type: str, architecture: str, needs: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``config.json`` dict of a Qwen hybrid's decoder as ``model_type`` (``needs``: field →
    the value that type computes with; its own keys, e.g. the experts', are the caller's).

    Raises
    ------
    ValueError
        ``config`` computes something ``model_type`` cannot express (every such field named).
    """
    c = config
    refuse_mismatches(mismatches(c, needs), f"model_type {model_type!r} cannot express this model")
    out = common_to_hf(c, rope_theta=False)
    sizes = dict(zip(("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                      "linear_value_head_dim"), (c.delta.key_heads, c.delta.value_heads,
                      c.delta.key_dim, c.delta.value_dim), strict=True))  # fmt: skip
    if "delta" not in c.layer_mixers():  # no delta layer: transformers still builds the sizes
        sizes = {k: SPEC.keys[k].default for k in sizes}
    if c.mtp.depths:  # Qwen3.5's module (`mtp_tensors.qwen_mtp_mapping`)
        out |= {"mtp_num_hidden_layers": c.mtp.depths, "mtp_use_dedicated_embeddings": False}
    return out | {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_act": "silu",
        "attention_bias": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": c.position.rope_theta,
            "partial_rotary_factor": c.position.rope_fraction,
        },
        "layer_types": [LAYER_TYPE_OF[m] for m in c.layer_mixers()],
        "linear_conv_kernel_dim": c.delta.conv_kernel,
        **sizes,
    }


def _query_half(hf: str, half: int, shape: tuple[int, ...]) -> Any:
    """Half ``half`` (0: the query, 1: the gate) of each head's rows of ``q_proj`` ``[h·2·hd,
    d]`` as a tjx ``[d, h, hd]`` kernel."""
    h, hd = shape[1], shape[2]
    return lambda read: read(hf).reshape(h, 2, hd, -1)[:, half].transpose(2, 0, 1)


def _query_and_gate(query: str, gate: str) -> Any:
    """``q_proj`` ``[h·2·hd, d]`` from tjx's query and gate kernels ``[d, h, hd]``."""

    def convert(read: Read) -> np.ndarray:
        q, g = read(query), read(gate)
        d, h, hd = q.shape
        both = np.stack([q.transpose(1, 2, 0), g.transpose(1, 2, 0)], axis=1)  # [h, 2, hd, d]
        return both.reshape(h * 2 * hd, d)

    return convert


def qwen3_5_mapping(c: LlamaConfig) -> HFMapping:
    """The HF ↔ tjx correspondence of a Qwen3.5 ``c``: Qwen3's (`family_mapping`) with each
    delta layer's ``linear_attn`` in place of ``self_attn`` and the gated ``q_proj``."""
    return qwen_mtp_mapping(c, lambda c: hybrid_mapping(c, family_mapping(c, "qwen3"), fused=False))


def hybrid_mapping(c: LlamaConfig, base: HFMapping, *, fused: bool) -> HFMapping:
    """``base`` (a mapping with every layer's ``self_attn``) with the attention layers' gated
    ``q_proj`` and the delta layers' ``linear_attn`` instead: Qwen3.5's four input projections,
    or Qwen3-Next's two grouped ones when ``fused`` (`fused_delta_tensors`)."""
    tables = Tables.of(base)
    assert c.head_dim is not None
    d, h, hd = c.d_model, c.num_heads, c.head_dim
    delta = [i for i, mixer in enumerate(c.layer_mixers()) if mixer != "attention"]
    tables.drop(
        tuple(f"model.layers.{i}.self_attn." for i in delta),
        tuple(f"stack.layers.{i}.attn." for i in delta),
    )
    for i, mixer in enumerate(c.layer_mixers()):
        p, t = f"model.layers.{i}.", f"stack.layers.{i}."
        if mixer == "attention":
            q_proj, query, gate = p + "self_attn.q_proj.weight", t + "attn.query.kernel", t
            gate += "attn.gate.kernel"
            tables.shapes[q_proj] = (2 * h * hd, d)
            tables.to_tjx[query] = _query_half(q_proj, 0, (d, h, hd))
            tables.to_tjx[gate] = _query_half(q_proj, 1, (d, h, hd))
            tables.to_hf[q_proj] = _query_and_gate(query, gate)
            continue
        _delta_tensors(c, p + "linear_attn.", t + "delta.", tables, fused)
    return tables.mapping(base.ignored)


def _delta_tensors(c: LlamaConfig, p: str, t: str, tables: Tables, fused: bool) -> None:
    """One delta layer's tensors (HF prefix ``p``, tjx prefix ``t``) into ``tables``."""
    assert c.delta.key_heads is not None and c.delta.value_heads is not None
    assert c.delta.key_dim is not None and c.delta.value_dim is not None
    d, hv = c.d_model, c.delta.value_heads
    value = hv * c.delta.value_dim
    conv = 2 * c.delta.key_heads * c.delta.key_dim + value
    inputs = [] if fused else [("in_proj_qkv", conv), ("in_proj_z", value), ("in_proj_b", hv),
                               ("in_proj_a", hv)]  # fmt: skip
    for name, n_in, n_out in [(n, d, o) for n, o in inputs] + [("out_proj", value, d)]:
        tables.linear(p + name, t + name, (n_in,), (n_out,))
    if fused:
        fused_delta_tensors(c, p, t, tables)
    tables.shapes[p + "conv1d.weight"] = (conv, 1, c.delta.conv_kernel)
    tables.to_tjx[t + "conv_weight"] = _squeezed(p + "conv1d.weight")
    tables.to_hf[p + "conv1d.weight"] = _unsqueezed(t + "conv_weight")
    for hf_name, tjx_name, n in (
        ("dt_bias", "dt_bias", hv),
        ("A_log", "a_log", hv),
        ("norm.weight", "norm_scale", c.delta.value_dim),
    ):
        tables.same(p + hf_name, t + tjx_name, (n,))


def fused_delta_tensors(c: LlamaConfig, p: str, t: str, tables: Tables) -> None:
    """Qwen3-Next's ``in_proj_qkvz`` and ``in_proj_ba`` ↔ tjx's four input projections.

    Qwen3-Next groups its rows by key head: ``in_proj_qkvz`` ``[g·(2·dk + 2·r·dv), d]`` holds, for
    each of the ``g`` key heads, its query's ``dk`` rows, its key's ``dk``, then the values and
    the output gates of its ``r = value heads / g`` value heads (``r·dv`` each); ``in_proj_ba``
    ``[g·2r, d]`` each group's ``r`` betas then its ``r`` decays. tjx's ``in_proj_qkv`` is the
    convolution's channel order (every query head, every key head, every value head), which is
    the order transformers concatenates the groups' parts in before its convolution.
    """
    assert c.delta.key_heads is not None and c.delta.value_heads is not None
    assert c.delta.key_dim is not None and c.delta.value_dim is not None
    g, dk, dv = c.delta.key_heads, c.delta.key_dim, c.delta.value_dim
    r = c.delta.value_heads // g
    qkvz, ba = p + "in_proj_qkvz.weight", p + "in_proj_ba.weight"
    widths = {"q": dk, "k": dk, "v": r * dv, "z": r * dv}  # each group's rows, in this order
    starts = dict(zip(widths, np.cumsum([0, *widths.values()])[:-1].tolist(), strict=True))
    tables.shapes[qkvz] = (g * sum(widths.values()), c.d_model)
    tables.shapes[ba] = (g * 2 * r, c.d_model)

    def rows(name: str, parts: str, width: dict[str, int], start: dict[str, int]) -> Any:
        """tjx kernel ``[d, Σ g·width]``: ``parts``' rows of each group, part after part."""

        def convert(read: Read) -> np.ndarray:
            grouped = read(name).reshape(g, -1, c.d_model)
            return np.concatenate(
                [grouped[:, start[k] : start[k] + width[k]].reshape(-1, c.d_model) for k in parts]
            ).T

        return convert

    def joined(parts: list[tuple[str, list[int]]]) -> Any:
        """The grouped HF weight from tjx kernels (name, each part's width per group)."""

        def convert(read: Read) -> np.ndarray:
            per_group = []
            for name, part_widths in parts:
                kernel = read(name).T  # [Σ g·width, d]
                split = np.split(kernel, np.cumsum([g * w for w in part_widths])[:-1])
                per_group += [s.reshape(g, w, -1) for s, w in zip(split, part_widths, strict=True)]
            return np.concatenate(per_group, axis=1).reshape(-1, c.d_model)

        return convert

    tables.to_tjx[t + "in_proj_qkv.kernel"] = rows(qkvz, "qkv", widths, starts)
    tables.to_tjx[t + "in_proj_z.kernel"] = rows(qkvz, "z", widths, starts)
    tables.to_tjx[t + "in_proj_b.kernel"] = rows(ba, "b", {"b": r}, {"b": 0})
    tables.to_tjx[t + "in_proj_a.kernel"] = rows(ba, "a", {"a": r}, {"a": r})
    tables.to_hf[qkvz] = joined([(t + "in_proj_qkv.kernel", [dk, dk, r * dv]),
                                 (t + "in_proj_z.kernel", [r * dv])])  # fmt: skip
    tables.to_hf[ba] = joined([(t + "in_proj_b.kernel", [r]), (t + "in_proj_a.kernel", [r])])


def _squeezed(name: str) -> Any:
    return lambda read: read(name)[:, 0, :]


def _unsqueezed(name: str) -> Any:
    return lambda read: read(name)[:, None, :]
