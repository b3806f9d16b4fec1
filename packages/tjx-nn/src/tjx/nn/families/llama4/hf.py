"""Hugging Face Llama 4 text (``Llama4ForCausalLM``, ``llama4_text``) ↔ tjx ``Llama`` with
chunked local layers, NoPE global layers and Llama 4's MoE layers.

=====================================  ========================================================
config.json / tensor                   tjx
=====================================  ========================================================
``no_rope_layers`` (1: RoPE; default:  ``window_pattern``: a RoPE layer ``"local"``, a NoPE one
every ``no_rope_layer_interval``-th    ``"global"`` (``global_nope``); ``attention_chunk_size``
NoPE), ``attention_chunk_size``,       → ``attention_chunk`` (transformers chunks exactly the
``layer_types``                        RoPE layers: an explicit ``layer_types`` must agree)
``use_qk_norm``                        ``qk_l2_norm`` (RoPE layers only, ``rms_norm_eps``)
``attn_temperature_tuning``,           ``nope_temperature_floor``, ``nope_temperature_scale``
``floor_scale``, ``attn_scale``        (with no NoPE layer it changes nothing: off)
``interleave_moe_layer_step``,         ``moe.layer_step`` (``moe.first_dense`` for a list that
``moe_layers``                         starts later); no MoE layer: a dense model
``num_local_experts``,                 ``num_experts``, ``experts_per_token``; the
``num_experts_per_tok``                ``sigmoid_plain`` router, weights not renormalised,
                                       scaling the expert's input (``router_scales_input``)
``intermediate_size``,                 ``expert_mlp_dim`` and the one shared expert's width;
``intermediate_size_mlp``              the dense layers' ``mlp.dim``
``rope_parameters`` (default, llama3)  ``rope_theta`` (default 500000), ``rope_scaling``
``feed_forward.experts.gate_up_proj``  ``moe.experts.fc_gate`` (its first ``f`` columns) and
``[E, d, 2f]``, ``down_proj``          ``fc_in`` (the rest); ``fc_out`` as stored
``[E, f, d]``
``feed_forward.router``,               ``moe.router``, ``moe.shared``; a dense layer's
``shared_expert.*``, ``feed_forward``  ``mlp``
``.{gate,up,down}_proj``
=====================================  ========================================================

Llama 4 rotates interleaved pairs (``apply_rotary_emb``: dims ``2i`` and ``2i + 1`` as one
complex number at frequency ``i``); tjx rotates halves (``i`` with ``i + head_dim/2``, the same
frequency). Each head's ``q_proj``/``k_proj`` rows are reordered even-then-odd on load (and back
on export), as transformers' own Llama conversion does: a permutation is exact (no arithmetic),
queries and keys move alike (their products, the weightless q/k norm and the temperature do not
see the order), and tjx's one RoPE kernel serves it.

Refused in one line naming the key: ``attention_bias`` true, an activation other than silu, a
RoPE scaling other than llama3's, NoPE layers without ``attention_chunk_size`` (tjx's NoPE layers
are the global ones of a chunked pattern), a ``layer_types`` that does not chunk exactly the RoPE
layers, ``moe_layers`` that no step and first layer give, unknown keys.

The image-text model's folders (``llama4``, ``Llama4ForConditionalGeneration``: the published
Llama 4 checkpoints) are read as their text model: the ``text_config``, the
``language_model.*`` tensors; the vision tower and its projector (``vision_model.*``,
``multi_modal_projector.*``) are skipped in one line, and the export is the text model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tjx.nn.configs import LlamaConfig, make_config
from tjx.nn.hf.config import BASE_KEYS, HARMLESS, rope_from_hf
from tjx.nn.hf.family_base import (
    LLAMA_SWITCHES,
    mismatches,
    refuse_mismatches,
    shortest_pattern,
)
from tjx.nn.hf.image_text import skip_beside, text_config
from tjx.nn.hf.keys import BASE, flag, int_list, layer_list, nonneg, positive, size, text
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.tables import Convert, Tables
from tjx.nn.moe.config import MoEConfig, expert_mlp_dim, moe_layers, shared_mlp_dim

LLAMA4 = "llama4_text"
ARCHITECTURE = "Llama4ForCausalLM"
#: The image-text model's ``model_type``: its ``text_config`` is a llama4_text config, its
#: language model's tensors ``language_model.*`` (the text model's ``*``).
IMAGE_TEXT = "llama4"
#: The image-text config's keys beside ``text_config``: the vision tower's and the tokens that
#: mark an image in a prompt (none changes the text model's numbers).
IMAGE_TEXT_KEYS = frozenset(
    {
        "text_config",
        "vision_config",
        "boi_token_index",
        "eoi_token_index",
        "image_token_index",
        "tie_word_embeddings",
    }
)
LANGUAGE_MODEL = "language_model."
#: The image-text model's modules beside its language model, which the text model does not use.
VISION = ("vision_model.", "multi_modal_projector.")
#: Llama 4's keys beyond ``config.BASE_KEYS``.
KEYS = frozenset(
    {
        "hidden_act",
        "intermediate_size_mlp",
        "num_local_experts",
        "num_experts_per_tok",
        "moe_layers",
        "interleave_moe_layer_step",
        "use_qk_norm",
        "no_rope_layers",
        "no_rope_layer_interval",
        "attention_chunk_size",
        "layer_types",
        "attn_temperature_tuning",
        "floor_scale",
        "attn_scale",
        "router_aux_loss_coef",
        # transformers' Llama 4 router never reads it (nor does its loss), so tjx need not.
        "router_jitter_noise",
        "output_router_logits",  # what a forward returns, not what it computes
    }
)
#: The keys Llama 4's import reads (`keys.Spec`), with transformers 5.24's ``Llama4TextConfig``
#: defaults (Scout's); ``head_dim`` null is hidden_size // num_attention_heads (its
#: ``__post_init__``), ``moe_layers`` and ``no_rope_layers`` null or left out follow the step and
#: the interval.
SPEC = BASE.but(
    "Llama4TextConfig",
    hidden_act=text("silu"),
    intermediate_size_mlp=size(16384),
    num_key_value_heads=size(8, null=None),
    head_dim=size(128, null=None),
    max_position_embeddings=size(4096 * 32),
    rms_norm_eps=positive(1e-5),
    num_experts_per_tok=size(1),
    num_local_experts=size(16),
    moe_layers=int_list(None),
    interleave_moe_layer_step=size(1),
    use_qk_norm=flag(True),
    router_aux_loss_coef=nonneg(0.001),
    router_jitter_noise=nonneg(0.0),
    no_rope_layers=int_list(None),
    no_rope_layer_interval=size(4),
    attention_chunk_size=size(8192, null=None),
    layer_types=layer_list(("chunked_attention", "full_attention")),
    attn_temperature_tuning=flag(True),
    floor_scale=positive(8192),  # an int in transformers; tjx writes a float if need be
    attn_scale=positive(0.1),
    rules=(("num_experts_per_tok", "<=", "num_local_experts"),),
)
#: Llama 4's RoPE base where a config.json names none (``Llama4TextConfig.default_theta``).
LLAMA4_THETA = 500000.0
#: What a config must have to be written as Llama 4 (beside its MoE layers' `MOE_NEEDS`).
NEEDS: dict[str, Any] = (
    dict(
        LLAMA_SWITCHES,  # Llama's own block (its q/k norm is Llama 4's weightless one, not this)
        use_bias=False,
        mixer_pattern=None,
    )
    | {
        "attention.type": "mha",
        "attention.qkv_bias": False,
        "attention.sinks": False,
        "attention.output_gate": False,
        "attention.sliding_window": None,
    }
    | {"position.kind": "rope", "position.rope_fraction": 1.0}
    | {"norm.kind": "rmsnorm"}
)
MOE_NEEDS: dict[str, Any] = dict(
    router="sigmoid_plain",
    router_norm_topk=False,
    router_scales_input=True,
    router_scale=1.0,
    router_groups=1,
    router_logit_bias=False,
    num_shared_experts=1,
    shared_expert_gate=False,
    capacity_factor=None,
)


def _rope_layers(get: Mapping[str, Any], layers: int) -> list[bool]:
    """Which layers RoPE rotates, as transformers reads ``no_rope_layers`` (an empty or absent
    list: a NoPE layer every ``no_rope_layer_interval``)."""
    given = get.get("no_rope_layers")
    if not given:
        every = int(get["no_rope_layer_interval"])
        return [(i + 1) % every != 0 for i in range(layers)]
    if len(given) < layers or not set(given) <= {0, 1}:
        raise ValueError(
            f"config.json no_rope_layers must list at least {layers} of 0 (NoPE) and 1 (RoPE); "
            f"got {given!r}"
        )
    return [bool(r) for r in given[:layers]]


def _moe_placement(get: Mapping[str, Any], layers: int) -> tuple[int, int] | None:
    """(``moe.layer_step``, ``moe.first_dense``) giving ``moe_layers`` (default: every
    ``interleave_moe_layer_step``-th layer), None for none."""
    step = int(get["interleave_moe_layer_step"])
    given = get.get("moe_layers")
    if given is None:
        return (step, 0) if step <= layers else None
    if not given:
        return None
    want = sorted(int(i) for i in given)
    for s in range(1, layers + 1):
        for first in range(layers):
            if [i for i in range(layers) if i >= first and (i + 1) % s == 0] == want:
                return s, first
    raise ValueError(
        f"config.json moe_layers {list(given)} is not supported: tjx's MoE layers are every k-th "
        "from some layer on (interleave_moe_layer_step, moe_first_dense)"
    )


def llama4_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` from a llama4_text ``config.json`` dict (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown key, or a value tjx does not compute as transformers does, named.
    """
    unknown = sorted(set(hf) - BASE_KEYS - KEYS - HARMLESS)
    if unknown or "auto_map" in hf:
        raise ValueError(
            f"config.json key(s) {', '.join(unknown or ['auto_map'])} are not understood by "
            f"tjx's {LLAMA4} import and could change the model; remove them only if they "
            "change no output"
        )
    get = SPEC.read(hf)
    if get["attention_bias"]:
        raise ValueError(f"config.json attention_bias true is not supported for {LLAMA4}")
    if get["hidden_act"] != "silu":
        raise ValueError(
            f"config.json hidden_act must be 'silu' (SwiGLU); got {get['hidden_act']!r}"
        )
    layers, heads = get["num_hidden_layers"], get["num_attention_heads"]
    max_len = get["max_position_embeddings"]
    theta, scaling = rope_from_hf(_with_theta(get), max_len)
    if scaling is not None and scaling.type != "llama3":
        raise ValueError(
            f"config.json rope_scaling of type {scaling.type!r} is not supported for {LLAMA4} "
            "(its checkpoints use llama3's)"
        )
    fields: dict[str, Any] = (
        dict(
            vocab_size=get["vocab_size"],
            max_seq_len=max_len,
            d_model=get["hidden_size"],
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=get["num_key_value_heads"] or heads,
            # Left out: 128; null: hidden_size // heads (transformers' __post_init__).
            head_dim=get["head_dim"] or get["hidden_size"] // heads,
            tie_embeddings=get["tie_word_embeddings"],
            **{"attention.dropout": float(get["attention_dropout"])},
            qk_l2_norm=get["use_qk_norm"],
        )
        | {"position.rope_theta": theta, "position.rope_scaling": scaling}
        | {"norm.eps": float(get["rms_norm_eps"])}
        | {"mlp.dim": get["intermediate_size_mlp"], "init.std": float(get["initializer_range"])}
    )
    fields |= _attention_layers(get, layers)
    placement = _moe_placement(get, layers)
    if placement is not None:
        width = get["intermediate_size"]
        fields["moe"] = MoEConfig(
            num_experts=get["num_local_experts"],
            experts_per_token=get["num_experts_per_tok"],
            expert_mlp_dim=width,
            shared_expert_mlp_dim=width,
            layer_step=placement[0],
            first_dense=placement[1],
            router_aux_loss=float(get["router_aux_loss_coef"]),
            **MOE_NEEDS,  # the router, its input scaling, one ungated shared expert
        )
    return make_config(LlamaConfig, {**fields, **overrides})


def _with_theta(hf: Mapping[str, Any]) -> dict[str, Any]:
    """``hf`` with Llama 4's RoPE base (500000) where neither ``rope_theta`` nor
    ``rope_parameters`` names one (`config`'s reading defaults to 10000)."""
    out = dict(hf)
    if out.get("rope_theta") is None:
        out.pop("rope_theta", None)
        if "rope_theta" not in (out.get("rope_parameters") or {}):
            out["rope_theta"] = LLAMA4_THETA
    return out


def _attention_layers(get: Mapping[str, Any], layers: int) -> dict[str, Any]:
    """``attention_chunk``, ``window_pattern``, ``global_nope`` and the NoPE temperature of the
    RoPE/NoPE layers and chunk transformers reads."""
    rope = _rope_layers(get, layers)
    chunk = get.get("attention_chunk_size")
    want = ["chunked_attention" if r and chunk is not None else "full_attention" for r in rope]
    types = get.get("layer_types")
    if types is not None and list(types) != want:
        raise ValueError(
            f"config.json layer_types {list(types)} is not supported: tjx chunks exactly the "
            f"RoPE layers (no_rope_layers), as transformers' default {want}"
        )
    nope = not all(rope)
    if chunk is None:
        if nope:
            raise ValueError(
                "config.json attention_chunk_size null with NoPE layers (no_rope_layers) is not "
                "supported: tjx's NoPE layers are the global ones beside chunked RoPE layers"
            )
        return {"attention.chunk": None}
    out: dict[str, Any] = {"attention.chunk": int(chunk)}
    if not nope:
        return out
    kinds = ["local" if r else "global" for r in rope]
    out |= {"attention.window_pattern": shortest_pattern(kinds), "llama4.global_nope": True}
    if get["attn_temperature_tuning"]:
        out |= dict(
            **{"llama4.nope_temperature_floor": float(get["floor_scale"])},
            **{"llama4.nope_temperature_scale": float(get["attn_scale"])},
        )
    return out


def is_llama4(config: LlamaConfig, model_type: str | None) -> bool:
    """Whether ``config`` saves as llama4_text: asked for, or it has a switch only Llama 4
    computes (chunks, NoPE layers, the weightless q/k norm, input-scaled experts)."""
    if model_type is not None:
        return model_type == LLAMA4
    c = config
    return bool(
        c.attention.chunk or c.llama4.global_nope or c.qk_l2_norm or c.moe.router_scales_input
    )


def llama4_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as llama4_text.

    Raises
    ------
    ValueError
        ``config`` computes something Llama 4 cannot express (every such field named).
    """
    c = config
    what = f"model_type {LLAMA4!r} cannot express this model"
    refuse_mismatches(mismatches(c, NEEDS), what)
    if c.position.rope_scaling is not None and c.position.rope_scaling.type != "llama3":
        refuse_mismatches(
            {"position.rope_scaling": (c.position.rope_scaling.type, "llama3 or None")}, what
        )
    kinds = moe_layers(c)
    if c.moe.num_experts:
        refuse_mismatches(mismatches(c, MOE_NEEDS, "moe"), what)
        if shared_mlp_dim(c) != expert_mlp_dim(c):
            refuse_mismatches(
                {"moe.shared_expert_mlp_dim": (shared_mlp_dim(c), expert_mlp_dim(c))}, what
            )
    locals_ = c.layer_locals()
    rope = [on or not c.llama4.global_nope for on in locals_]
    if c.attention.chunk is not None and any(r != on for r, on in zip(rope, locals_, strict=True)):
        # transformers chunks exactly the RoPE layers: a global layer must be a NoPE one.
        refuse_mismatches({"llama4.global_nope": (c.llama4.global_nope, True)}, what)
    rope_params: dict[str, Any] = {"rope_type": "default", "rope_theta": c.position.rope_theta}
    if c.position.rope_scaling is not None:
        fields = c.position.rope_scaling.as_dict()
        del fields["type"]
        rope_params = {"rope_type": "llama3", "rope_theta": c.position.rope_theta, **fields}
    floor = c.llama4.nope_temperature_floor
    return {
        "architectures": [ARCHITECTURE],
        "model_type": LLAMA4,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": expert_mlp_dim(c) if c.moe.num_experts else c.mlp.dim,
        "intermediate_size_mlp": c.mlp.dim,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_seq_len,
        "rms_norm_eps": c.norm.eps,
        "rope_parameters": rope_params,
        "tie_word_embeddings": c.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": c.attention.dropout,
        "initializer_range": c.init.std,
        "num_local_experts": c.moe.num_experts or 1,
        "num_experts_per_tok": c.moe.experts_per_token if c.moe.num_experts else 1,
        "moe_layers": [i for i, m in enumerate(kinds) if m],
        "interleave_moe_layer_step": c.moe.layer_step,
        "router_aux_loss_coef": c.moe.router_aux_loss if c.moe.num_experts else 0.001,
        "router_jitter_noise": 0.0,
        "use_qk_norm": c.qk_l2_norm,
        "no_rope_layers": [int(r) for r in rope],
        "attention_chunk_size": c.attention.chunk,
        "attn_temperature_tuning": floor is not None,
        "floor_scale": _number(floor if floor is not None else SPEC.keys["floor_scale"].default),
        "attn_scale": c.llama4.nope_temperature_scale,
    }


def _number(x: float) -> int | float:
    """An integral float as an int (transformers' ``floor_scale`` is typed int)."""
    return int(x) if float(x).is_integer() else x


def _pairs_last(hd: int) -> np.ndarray:
    """``order[j]``: the HF row within a head that tjx's row ``j`` is: the even rows (each pair's
    first) then the odd ones (`module docstring`)."""
    return np.concatenate([np.arange(0, hd, 2), np.arange(1, hd, 2)])


def _rotary_in(hf: str, heads: int, hd: int, d: int) -> Convert:
    """HF ``[heads·hd, d]`` (pairs interleaved) → tjx ``[d, heads, hd]`` (halves)."""
    order = _pairs_last(hd)
    return lambda read: read(hf).reshape(heads, hd, d)[:, order].transpose(2, 0, 1)


def _rotary_out(tjx: str, heads: int, hd: int, d: int) -> Convert:
    """tjx ``[d, heads, hd]`` → HF ``[heads·hd, d]`` (the pairs interleaved again)."""
    back = np.argsort(_pairs_last(hd))
    return lambda read: read(tjx).transpose(1, 2, 0)[:, back].reshape(heads * hd, d)


def _gate_up_in(hf: str, part: int, f: int) -> Convert:
    """HF ``gate_up_proj`` ``[E, d, 2f]``'s gate (``part`` 0) or up (1) half → ``[E, d, f]``."""
    return lambda read: read(hf)[..., part * f : (part + 1) * f]


def _gate_up_out(gate: str, up: str) -> Convert:
    """tjx's ``fc_gate`` and ``fc_in`` kernels ``[E, d, f]`` → HF ``gate_up_proj``."""
    return lambda read: np.concatenate([read(gate), read(up)], axis=-1)


def llama4_mapping(c: LlamaConfig) -> HFMapping:
    """The HF ↔ tjx correspondence of a Llama 4 ``c`` (its tensor names: the module doc)."""
    assert c.head_dim is not None and c.num_kv_heads is not None and c.mlp.dim is not None
    d, h, hk, hd, m, v = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp.dim, c.vocab_size
    tables = Tables()
    tables.same("model.embed_tokens.weight", "embed.embedding", (v, d))
    kinds = moe_layers(c)
    for i in range(c.num_layers):
        p, t = f"model.layers.{i}.", f"stack.layers.{i}."
        for hf, tjx, heads in (("q_proj", "query", h), ("k_proj", "key", hk)):
            name, kernel = f"{p}self_attn.{hf}.weight", f"{t}attn.{tjx}.kernel"
            tables.shapes[name] = (heads * hd, d)
            tables.to_tjx[kernel] = _rotary_in(name, heads, hd, d)
            tables.to_hf[name] = _rotary_out(kernel, heads, hd, d)
        tables.linear(p + "self_attn.v_proj", t + "attn.value", (d,), (hk, hd))
        tables.linear(p + "self_attn.o_proj", t + "attn.out", (h, hd), (d,))
        tables.same(p + "input_layernorm.weight", t + "attn_norm.scale", (d,))
        tables.same(p + "post_attention_layernorm.weight", t + "mlp_norm.scale", (d,))
        ff = p + "feed_forward."
        if not kinds[i]:
            _mlp(tables, ff, t + "mlp.", d, m)
            continue
        e, f = c.moe.num_experts, expert_mlp_dim(c)
        tables.linear(ff + "router", t + "moe.router", (d,), (e,))
        _mlp(tables, ff + "shared_expert.", t + "moe.shared.", d, shared_mlp_dim(c))
        x = t + "moe.experts."
        gate_up = ff + "experts.gate_up_proj"
        tables.shapes[gate_up] = (e, d, 2 * f)
        tables.to_tjx[x + "fc_gate.kernel"] = _gate_up_in(gate_up, 0, f)
        tables.to_tjx[x + "fc_in.kernel"] = _gate_up_in(gate_up, 1, f)
        tables.to_hf[gate_up] = _gate_up_out(x + "fc_gate.kernel", x + "fc_in.kernel")
        tables.same(ff + "experts.down_proj", x + "fc_out.kernel", (e, f, d))
    tables.same("model.norm.weight", "final_norm.scale", (d,))
    if not c.tie_embeddings:
        tables.linear("lm_head", "head", (d,), (v,))

    def ignored(name: str) -> bool:
        return c.tie_embeddings and name == "lm_head.weight"

    return tables.mapping(ignored)


def _mlp(tables: Tables, hf: str, tjx: str, d: int, width: int) -> None:
    """A SwiGLU MLP's ``gate_proj``/``up_proj``/``down_proj`` ↔ ``fc_gate``/``fc_in``/``fc_out``."""
    tables.linear(hf + "gate_proj", tjx + "fc_gate", (d,), (width,))
    tables.linear(hf + "up_proj", tjx + "fc_in", (d,), (width,))
    tables.linear(hf + "down_proj", tjx + "fc_out", (width,), (d,))


def llama4_text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The text model's ``config.json`` dict of a Llama 4 image-text ``config.json``: its
    ``text_config``, tied as the image-text model says (``tie_word_embeddings``).

    Raises
    ------
    ValueError
        No ``text_config``, a key the image-text config does not have, or a text config tied
        otherwise than the image-text model, named.
    """
    out = text_config(
        hf, image_text=IMAGE_TEXT, text=LLAMA4, keys=IMAGE_TEXT_KEYS, tied=False, spec=SPEC
    )
    inner, tied = hf["text_config"], out["tie_word_embeddings"]
    if bool(inner.get("tie_word_embeddings", tied)) != tied:
        raise ValueError(
            f"config.json tie_word_embeddings {tied} of the image-text model and "
            f"{inner['tie_word_embeddings']} of its text_config disagree; tjx cannot tell which "
            "one transformers applies"
        )
    return out


def text_name(stored: str) -> str:
    """A tensor's name in a Llama 4 image-text checkpoint → its name in the text model's
    (``language_model.*`` → ``*``; the others as they are)."""
    return stored.removeprefix(LANGUAGE_MODEL)


def skip_vision(base: Callable[[str], bool]) -> Callable[[str], bool]:
    """``base``'s ignored names, and the vision tower's and projector's tensors, said in one line
    when the checkpoint holds them (transformers' text model does not read them either)."""
    what = "vision tower (vision_model.*, multi_modal_projector.*): tjx loads the text model"
    return skip_beside(base, {VISION: what})
