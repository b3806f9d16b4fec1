"""Hugging Face GPT-2 interop: read and write ``config.json`` + ``model.safetensors``.

HF GPT-2 uses ``Conv1D`` layers whose weights are stored ``[in, out]`` (the transpose of
``nn.Linear``), and fuses q/k/v into ``attn.c_attn`` (``[d, 3d]``, columns q | k | v). tjx keeps
q/k/v separate as ``[embed, heads, head_dim]`` kernels, so the conversion splits/concatenates and
reshapes, never transposes. Written files use the hub's ``gpt2`` naming (``wte.weight``,
``h.0.attn.c_attn.weight`` …, no ``transformer.`` prefix; tied head omitted), which
``transformers.GPT2LMHeadModel.from_pretrained`` loads. Reading also accepts the
``transformer.``-prefixed names that ``save_pretrained`` writes and ignores the causal-mask
buffers (``attn.bias``, ``attn.masked_bias``).

Loading and saving go through ``tjx.nn.load_hf`` / ``save_hf`` (``checkpoints``); this module holds
GPT-2's config and tensor correspondence (``gpt2_mapping``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tjx.nn.configs import GPT2Config, make_config, setting_value
from tjx.nn.hf.config import OTHER_SWITCHES, check_known
from tjx.nn.hf.family_base import LLAMA_SWITCHES, mismatches, refuse_mismatches
from tjx.nn.hf.keys import ABSENT, Key, Spec, flag, fraction, positive, size, text
from tjx.nn.hf.mapping import HFMapping, Read, concat, take

_PER_LAYER = {
    "ln_1.weight": "attn_norm.scale",
    "ln_1.bias": "attn_norm.bias",
    "ln_2.weight": "mlp_norm.scale",
    "ln_2.bias": "mlp_norm.bias",
    "mlp.c_fc.weight": "mlp.fc_in.kernel",
    "mlp.c_fc.bias": "mlp.fc_in.bias",
    "mlp.c_proj.weight": "mlp.fc_out.kernel",
    "mlp.c_proj.bias": "mlp.fc_out.bias",
}
#: The hub names of the published GPT-2 checkpoints (``load_hf_gpt2`` also reads a local folder).
HF_GPT2_NAMES: tuple[str, ...] = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
#: What every HF GPT-2 checkpoint fixes besides the sizes in its ``config.json``: a ``GPT2Config``
#: field → GPT-2's value (``None``: the checkpoint's own, e.g. ``num_kv_heads`` = its head count).
HF_GPT2_FIXED: Mapping[str, Any] = {
    "position.kind": "learned",
    "attention.type": "mha",
    "use_bias": True,
    "norm.kind": "layernorm",
    "norm.position": "pre",
    "num_kv_heads": None,
    "tie_embeddings": True,
}

#: The switches GPT-2's block lacks, off (LLaMA's families' and the others' but the activation,
#: which GPT-2's ``activation_function`` says): no GPT-2 key says any of them, so an export refuses
#: a config with one on rather than drop it.
GPT2_BLOCK: dict[str, Any] = (
    {k: v for k, v in LLAMA_SWITCHES.items() if k != "mlp.activation"}
    | OTHER_SWITCHES
    | {"attention.qkv_bias": False, "attention.sliding_window": None, "moe.num_experts": 0}
)
#: Keys GPT-2's ``config.json`` may hold: sizes, dropouts, bookkeeping, generation defaults and
#: the double-heads model's ``summary_*`` (no tensor of the LM uses them).
_GPT2_KEYS = frozenset(
    {
        "architectures",
        "model_type",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "_name_or_path",
        "use_cache",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "vocab_size",
        "n_positions",
        "n_ctx",
        "n_embd",
        "n_layer",
        "n_head",
        "n_inner",
        "activation_function",
        "layer_norm_epsilon",
        "initializer_range",
        "resid_pdrop",
        "embd_pdrop",
        "attn_pdrop",
        "tie_word_embeddings",
        "scale_attn_weights",
        "scale_attn_by_inverse_layer_idx",
        "reorder_and_upcast_attn",
        "add_cross_attention",
        "summary_type",
        "summary_use_proj",
        "summary_activation",
        "summary_proj_to_labels",
        "summary_first_dropout",
        "task_specific_params",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
    }
)
#: The keys GPT-2's import reads (`keys.Spec`), with transformers 5.24's ``GPT2Config`` defaults
#: (``n_inner`` null: 4 × ``n_embd``); its sizes are required, as every family's. (tjx's own
#: dropout is a training setting: the ``*_pdrop`` rates are only checked.)
SPEC = Spec(
    "GPT2Config",
    {
        "vocab_size": size(),
        "n_positions": size(1024),
        "n_embd": size(),
        "n_layer": size(),
        "n_head": size(),
        "n_inner": size(None, null=None),
        "activation_function": text("gelu_new"),
        "layer_norm_epsilon": positive(1e-5),
        "initializer_range": Key("float", 0.02, above=0, high=1),
        "scale_attn_weights": flag(True),
        "scale_attn_by_inverse_layer_idx": flag(False),
        "add_cross_attention": flag(False),
        "tie_word_embeddings": flag(True),
        # Read by no tensor of the LM, typed all the same (a damaged file is refused whole).
        "n_ctx": size(ABSENT),
        "resid_pdrop": fraction(ABSENT),
        "embd_pdrop": fraction(ABSENT),
        "attn_pdrop": fraction(ABSENT),
    },
    rules=(("n_head", "divides", "n_embd"),),
)
#: Keys that change the computation, with the only value tjx's GPT-2 computes.
_GPT2_VALUES: Mapping[str, Any] = {
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
}

_TOP = {
    "wte.weight": "embed.embedding",
    "wpe.weight": "pos_embed.embedding",
    "ln_f.weight": "final_norm.scale",
    "ln_f.bias": "final_norm.bias",
}


def hf_gpt2_conflicts(options: Mapping[str, Any]) -> dict[str, Any]:
    """The requested architecture settings that HF GPT-2 weights cannot have.

    A checkpoint fixes its architecture (``HF_GPT2_FIXED``); a setting that would change it (MLA,
    another position scheme, no biases, grouped key/value heads, ...) cannot apply to the loaded
    weights, and dropping it silently would train something else than asked.

    Parameters
    ----------
    options : Mapping[str, Any]
        ``GPT2Config`` field → requested value; ``None`` means unset. Keys outside
        ``HF_GPT2_FIXED`` are not architecture GPT-2 fixes and are ignored (sizes come from the
        checkpoint; training settings such as ``remat`` or ``dropout`` apply as given).

    Returns
    -------
    dict[str, Any]
        Each conflicting field (in ``HF_GPT2_FIXED``'s order) → the value requested; empty when
        the settings fit.
    """
    return {
        name: options[name]
        for name, own in HF_GPT2_FIXED.items()
        if options.get(name) is not None and options[name] != own
    }


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> GPT2Config:
    """A ``GPT2Config`` from a HF GPT-2 ``config.json`` dict (``overrides`` win).

    Keys outside ``_GPT2_KEYS`` are refused by name; those that would change the computation
    (``scale_attn_weights``, ``add_cross_attention`` ...) must have GPT-2's own value.
    """
    check_known(hf, "gpt2", _GPT2_KEYS, custom_code=False)
    hf = SPEC.read(hf)
    for key, own in _GPT2_VALUES.items():
        if hf[key] != own:
            raise ValueError(f"config.json {key} must be {own!r} for tjx's GPT-2; got {hf[key]!r}")
    act = hf["activation_function"]
    acts = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact", "relu": "relu"}
    if act not in acts:
        raise ValueError(f"activation_function must be one of {tuple(acts)}; got {act!r}")
    fields: dict[str, Any] = (
        dict(
            vocab_size=hf["vocab_size"],
            max_seq_len=hf["n_positions"],
            d_model=hf["n_embd"],
            num_layers=hf["n_layer"],
            num_heads=hf["n_head"],
        )
        | {"norm.eps": float(hf["layer_norm_epsilon"])}
        | {
            "mlp.dim": hf["n_inner"] or 4 * hf["n_embd"],
            "mlp.activation": acts[act],
            "init.std": float(hf["initializer_range"]),
        }
    )
    conflicts = hf_gpt2_conflicts(overrides)
    if conflicts:
        gpt2 = {k: HF_GPT2_FIXED[k] for k in conflicts}
        raise ValueError(
            f"HF GPT-2 weights fix the architecture, so {conflicts} cannot apply; allowed: "
            f"{gpt2} or None"
        )
    fields.update(overrides)
    return make_config(GPT2Config, fields)


def config_to_hf(config: GPT2Config) -> dict[str, Any]:
    """The HF ``config.json`` dict for ``config``."""
    acts = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu"}
    if config.mlp.activation not in acts:
        raise ValueError(
            f"mlp.activation must be one of {tuple(acts)} for HF GPT-2; got "
            f"{config.mlp.activation!r}"
        )
    if config.head_dim != config.d_model // config.num_heads:
        raise ValueError(
            f"HF GPT-2 has head_dim = d_model // num_heads ({config.d_model // config.num_heads}); "
            f"got head_dim {config.head_dim}"
        )
    own = {name: setting_value(config, name) for name in HF_GPT2_FIXED}
    if config.num_kv_heads == config.num_heads:
        own["num_kv_heads"] = None  # one key/value head per query head, as in GPT-2
    conflicts = hf_gpt2_conflicts(own)
    if conflicts:
        gpt2 = {k: HF_GPT2_FIXED[k] for k in conflicts}
        raise ValueError(
            f"only GPT-2-shaped configs export to HF GPT-2: {conflicts} must be {gpt2} "
            "(num_kv_heads None: == num_heads)"
        )
    refuse_mismatches(
        mismatches(config, GPT2_BLOCK), "only GPT-2-shaped configs export to HF GPT-2"
    )
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.max_seq_len,
        "n_ctx": config.max_seq_len,
        "n_embd": config.d_model,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_inner": config.mlp.dim,
        "activation_function": acts[config.mlp.activation],
        "layer_norm_epsilon": config.norm.eps,
        "tie_word_embeddings": True,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.attention.dropout,
        "initializer_range": config.init.std,
    }


def gpt2_mapping(config: GPT2Config) -> HFMapping:
    """The HF ↔ tjx correspondence for a ``GPT2Config`` (hub naming; see ``HFMapping``)."""
    assert config.mlp.dim is not None
    d, h, m = config.d_model, config.num_heads, config.mlp.dim
    hd = d // h
    sizes = {
        "wte.weight": (config.vocab_size, d),
        "wpe.weight": (config.max_seq_len, d),
        "ln_f.weight": (d,),
        "ln_f.bias": (d,),
    }
    layer_sizes = {
        "ln_1.weight": (d,),
        "ln_1.bias": (d,),
        "ln_2.weight": (d,),
        "ln_2.bias": (d,),
        "mlp.c_fc.weight": (d, m),
        "mlp.c_fc.bias": (m,),
        "mlp.c_proj.weight": (m, d),
        "mlp.c_proj.bias": (d,),
        "attn.c_attn.weight": (d, 3 * d),
        "attn.c_attn.bias": (3 * d,),
        "attn.c_proj.weight": (d, d),
        "attn.c_proj.bias": (d,),
    }
    shapes = dict(sizes)
    to_tjx: dict[str, Callable[[Read], np.ndarray]] = {}
    to_hf: dict[str, Callable[[Read], np.ndarray]] = {}
    for hf_name, name in _TOP.items():
        to_tjx[name] = take(hf_name)
        to_hf[hf_name] = take(name)
    parts = ("query", "key", "value")
    for i in range(config.num_layers):
        p, t = f"h.{i}.", f"stack.layers.{i}."
        shapes.update({p + k: v for k, v in layer_sizes.items()})
        for hf_name, name in _PER_LAYER.items():
            to_tjx[t + name] = take(p + hf_name)
            to_hf[p + hf_name] = take(t + name)
        for j, part in enumerate(parts):  # c_attn is Conv1D [in=d, out=3d], columns q | k | v
            cols = (j * d, (j + 1) * d)
            to_tjx[f"{t}attn.{part}.kernel"] = take(p + "attn.c_attn.weight", (d, h, hd), cols)
            to_tjx[f"{t}attn.{part}.bias"] = take(p + "attn.c_attn.bias", (h, hd), cols)
        to_hf[p + "attn.c_attn.weight"] = concat([f"{t}attn.{q}.kernel" for q in parts], (d, d), 1)
        to_hf[p + "attn.c_attn.bias"] = concat([f"{t}attn.{q}.bias" for q in parts], (d,), 0)
        to_tjx[t + "attn.out.kernel"] = take(p + "attn.c_proj.weight", (h, hd, d))
        to_hf[p + "attn.c_proj.weight"] = take(t + "attn.out.kernel", (d, d))
        to_tjx[t + "attn.out.bias"] = take(p + "attn.c_proj.bias")
        to_hf[p + "attn.c_proj.bias"] = take(t + "attn.out.bias")

    def ignored(name: str) -> bool:  # causal-mask buffers; the tied head's copy
        return name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight"

    return HFMapping(shapes, to_tjx, to_hf, ignored)
