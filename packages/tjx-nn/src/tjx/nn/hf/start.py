"""Starting a model from a checkpoint: which config settings say what the model is (the
checkpoint fixes them) and which how it trains (the new run's config decides them).

Two ways in: a Hugging Face checkpoint, whose architecture its ``config.json`` fixes
(`hf_conflicts`: the settings a user asked for that the weights cannot have), and another run's
checkpoint, whose tjx config must be the new one but for how it trains (`config_clashes`).
Refusing instead of dropping such a setting matters: dropped silently, the run would train
something else than asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.config_io import config_to_dict
from tjx.nn.configs import SECTIONS, GPT2Config, TransformerConfig, setting_value
from tjx.nn.families.registry import fixed_fields
from tjx.nn.gated_deltanet import DELTA_SIZES
from tjx.nn.hf.gpt2 import hf_gpt2_conflicts

__all__ = ["HF_LLAMA_FIXED", "HOW_TO_TRAIN", "TRAINING_FIELDS", "config_clashes", "hf_conflicts"]

#: Config fields a run started from another run's checkpoint may change: how it trains, not what
#: (a component section's by its dotted key).
HOW_TO_TRAIN = (
    "dropout",
    "attention.dropout",
    "attention_impl",
    "cross_entropy_impl",
    "delta.impl",
    "norm.impl",
    "mlp.impl",
    "remat",
    "attention.decode_topk",
    "init.std",
    "init.scaled_residual",
    "mla.index_loss_weight",  # a sparse attention indexer's loss
    "mla.index_loss",
)

#: The config fields a run decides when a Hugging Face checkpoint fixed the architecture (what an
#: app hands ``load_hf`` as overrides; a dotted key: a component section's): how to train it,
#: not what it is.
TRAINING_FIELDS = (
    "scan_layers",
    "remat",
    "attention_impl",
    "delta.impl",
    "norm.impl",
    "mlp.impl",
    "dropout",
    "attention.decode_topk",
    "precision",
    "mla.index_loss_weight",  # a sparse attention indexer's loss: how the run trains it
    "mla.index_loss",
)

#: ``LlamaConfig`` fields a checkpoint of the LLaMA family fixes: its shape, its windows and the
#: switches of the families built on it (Qwen3, OLMo 2, Gemma, ..., the family folders'), its MLA,
#: its experts and its delta layers (a component section's settings by their dotted keys).
HF_LLAMA_FIXED = (
    "position.kind",
    "attention.type",
    "norm.position",
    "use_bias",
    "num_kv_heads",
    "attention.sliding_window",
    "attention.window_pattern",
    "attention.qk_norm",
    "attention.qk_norm_scope",
    "norm.plus_one",
    "scale_embeddings",
    "attention.query_pre_attn_scalar",
    "attention.logit_softcap",
    "final_logit_softcap",
    "position.rope_local_theta",
    "mla.kv_latent_dim",
    "mla.q_lora_rank",
    "mla.qk_rope_head_dim",
    "mla.v_head_dim",
    "moe.num_experts",
    "moe.router_scale",
    "moe.router_groups",
    "moe.router_topk_groups",
    "attention.sinks",
    "moe.router_logit_bias",
    "position.rope_fraction",
    # Qwen3.5's and Qwen3-Next's delta layers and gated attention, the family folders' switches
    # (`tjx.nn.families.base.Family.fixed`), DeepSeek-V3's and GLM-4.5's multi-token prediction.
    "mixer_pattern",
    *(f"delta.{name}" for name in DELTA_SIZES),
    "attention.output_gate",
    *fixed_fields(),
    "mtp.depths",
)


def hf_conflicts(
    options: Mapping[str, Any], checkpoint: TransformerConfig | None
) -> dict[str, Any]:
    """The requested architecture settings that a Hugging Face checkpoint's weights cannot have.

    Parameters
    ----------
    options : Mapping[str, Any]
        Config field (a component section's: its dotted key, ``moe.num_experts``) → requested
        value; ``None`` means unset. A list (YAML's, e.g. ``window_pattern``) compares as the
        tuple a config holds.
    checkpoint : TransformerConfig or None
        The checkpoint's config (`read_hf_config`); a `GPT2Config` or ``None`` (a GPT-2 hub name,
        known without reading it) is checked by `hf_gpt2_conflicts`, any other against its own
        values of `HF_LLAMA_FIXED`.

    Returns
    -------
    dict[str, Any]
        Each conflicting field → the value requested, in the fixed fields' order; empty when the
        settings fit.
    """
    if checkpoint is None or isinstance(checkpoint, GPT2Config):
        return hf_gpt2_conflicts(options)

    def same(value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    return {
        k: options[k]
        for k in HF_LLAMA_FIXED
        if options.get(k) is not None and same(options[k]) != setting_value(checkpoint, k)
    }


def config_clashes(
    ours: TransformerConfig, theirs: TransformerConfig, *, vocab: bool
) -> dict[str, tuple[Any, Any]]:
    """The settings in which two configs describe different models: how it trains aside.

    Parameters
    ----------
    ours, theirs : TransformerConfig
        The config a run asks for, and the one a checkpoint was trained as.
    vocab : bool
        Whether ``vocab_size`` counts (False: the vocabulary comes from a tokenizer not yet read).

    Returns
    -------
    dict[str, tuple[Any, Any]]
        Field → (ours, theirs) as JSON data (`config_to_dict`; a component section's fields by
        their dotted keys), fields outside `HOW_TO_TRAIN` in ``ours``' order; two config classes
        are one entry, ``"class"`` → their names.
    """
    a, b = config_to_dict(ours), config_to_dict(theirs)
    if a["class"] != b["class"]:
        return {"class": (a["class"], b["class"])}
    skip = {*HOW_TO_TRAIN, *(() if vocab else ("vocab_size",))}
    fa, fb = _dotted(a["fields"]), _dotted(b["fields"])
    return {k: (fa[k], fb.get(k)) for k in fa if k not in skip and fa[k] != fb.get(k)}


def _dotted(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``config_to_dict``'s fields with each component section's as dotted keys."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in SECTIONS and isinstance(value, Mapping):
            out |= {f"{key}.{name}": v for name, v in value.items()}
        else:
            out[key] = value
    return out
