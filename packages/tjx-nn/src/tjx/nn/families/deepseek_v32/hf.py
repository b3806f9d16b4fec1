"""Hugging Face DeepSeek-V3.2 (``DeepseekV32ForCausalLM``, ``deepseek_v32``) ↔ tjx ``Llama`` with
DeepSeek's MLA and MoE and DeepSeek Sparse Attention (:mod:`tjx.nn.families.deepseek_v32.indexer`).

Everything but the indexer is DeepSeek-V3's (:mod:`tjx.nn.hf.deepseek`, read with transformers
5.24's ``DeepseekV32Config`` defaults: 163840 positions, always the interleaved MLA RoPE):

=========================================  =================================================
config.json / tensor                       tjx
=========================================  =================================================
``index_topk``, ``index_n_heads``,         ``mla.index_topk``, ``mla.index_n_heads``,
``index_head_dim``                         ``mla.index_head_dim``
``mlp_layer_types`` (dense, then sparse)   ``moe.first_dense`` (``first_k_dense_replace``)
``layer_types`` (``indexed_attention``)    every layer's attention has an indexer
``self_attn.indexer.wq_b`` ``[H·D, q]``    ``attn.indexer.query`` ``[q, H, D]``
``self_attn.indexer.wk`` ``[D, d]``        ``attn.indexer.key`` ``[d, D]``
``self_attn.indexer.k_norm.{weight,bias}`` ``attn.indexer.key_norm.{scale,bias}``
``self_attn.indexer.weights_proj``         ``attn.indexer.weights`` ``[d, H]``
=========================================  =================================================

The indexer rotates the rotate-half way (no rows reordered); the MLA's rotated rows are
reordered as V3's (`tjx.nn.hf.deepseek_tensors`). Refused in one line: an ``mlp_layer_types``
other than ``first_k_dense_replace`` dense layers then sparse ones (tjx's MoE layers start once),
a ``layer_types`` entry other than ``indexed_attention``, a null ``q_lora_rank`` (the indexer
reads the low-rank query's latent), and V3's own refusals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.config import unsupported
from tjx.nn.hf.deepseek import SPECS, deepseek_config_from_hf, deepseek_config_to_hf, mtp_layers
from tjx.nn.hf.deepseek_tensors import deepseek_mapping
from tjx.nn.hf.keys import Spec, layer_list, size
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.mtp_tensors import mtp_mapping, stored_depths
from tjx.nn.hf.tables import Tables
from tjx.nn.mla_config import MLAConfig

DEEPSEEK_V32 = "deepseek_v32"
ARCHITECTURE = "DeepseekV32ForCausalLM"
#: config.json's indexer keys → the ``mla`` section's settings (the same names).
INDEX_KEYS = ("index_topk", "index_n_heads", "index_head_dim")
#: The indexer loss's settings (how a run trains it: overrides, not config.json keys).
LOSS_KEYS = ("mla.index_loss_weight", "mla.index_loss")
#: The config fields a checkpoint of it fixes (its indexer's shape and top-k).
OWN = tuple(f"mla.{k}" for k in INDEX_KEYS)
#: The keys the V3.2 class adds to V3's (read here, not by V3's import).
_OWN_KEYS = (*INDEX_KEYS, "mlp_layer_types", "layer_types")
#: transformers 5.24's ``DeepseekV32Config`` keys and defaults, V3's with its own.
SPEC: Spec = SPECS["deepseek_v3"].but(
    "DeepseekV32Config",
    max_position_embeddings=size(163840),
    q_lora_rank=size(1536),  # the indexer reads the query latent: null refused
    index_topk=size(2048),
    index_n_heads=size(64),
    index_head_dim=size(128),
    mlp_layer_types=layer_list(("dense", "sparse")),
    layer_types=layer_list(("indexed_attention",)),
)


def deepseek_v32_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """A ``LlamaConfig`` from a deepseek_v32 ``config.json`` (``overrides`` win).

    Raises
    ------
    ValueError
        An unknown key, or a variant tjx does not compute as transformers does, named.
    """
    hf = SPEC.read(hf)
    layers, dense = hf["num_hidden_layers"], hf["first_k_dense_replace"]
    pattern = ["dense"] * min(dense, layers) + ["sparse"] * max(layers - dense, 0)
    kinds = hf.get("mlp_layer_types")
    if kinds is not None and list(kinds) != pattern:
        raise unsupported(
            "mlp_layer_types",
            kinds,
            f"tjx's DeepSeek MoE layers are first_k_dense_replace ({dense}) dense layers then "
            "sparse ones; give that pattern or leave mlp_layer_types out",
        )
    if hf.get("rope_interleave") is False:
        raise unsupported("rope_interleave", False, "transformers' deepseek_v32 always interleaves")
    v3 = {k: v for k, v in hf.items() if k not in _OWN_KEYS} | {"model_type": "deepseek_v3"}
    index = {f"mla.{k}": int(hf[k]) for k in INDEX_KEYS}
    own = (*index, *LOSS_KEYS)  # set on the sparse model, not on V3's (which has no indexer)
    base = deepseek_config_from_hf(v3, **{k: v for k, v in overrides.items() if k not in own})
    sparse = {**index, **{k: v for k, v in overrides.items() if k in own}}
    config = base.replace(**sparse)
    assert isinstance(config, LlamaConfig)
    return config


def deepseek_v32_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` (DeepSeek's MLA with its indexer, its MoE)."""
    m = config.mla
    plain = config.replace(mla=MLAConfig(
        kv_latent_dim=m.kv_latent_dim, q_lora_rank=m.q_lora_rank,
        qk_rope_head_dim=m.qk_rope_head_dim, v_head_dim=m.v_head_dim,
        latent_norm_eps=m.latent_norm_eps,  # V3's export checks it (transformers' is fixed)
    ))  # fmt: skip
    assert isinstance(plain, LlamaConfig)
    out = deepseek_config_to_hf(plain, "deepseek_v3")
    out.pop("rope_interleave", None)  # V3.2's MLA always interleaves (no such key)
    out |= dict(architectures=[ARCHITECTURE], model_type=DEEPSEEK_V32)
    return out | {k: getattr(m, k) for k in INDEX_KEYS}


def is_deepseek_v32(config: LlamaConfig, model_type: str | None) -> bool:
    """Whether ``save_hf`` saves ``config`` as deepseek_v32: it has the indexer
    (``mla.index_topk``), or deepseek_v32 is asked for. ``ValueError`` where the two disagree."""
    sparse = config.mla.index_topk is not None
    if sparse and model_type not in (None, DEEPSEEK_V32):
        raise ValueError(
            "a model with DeepSeek Sparse Attention (mla.index_topk) saves as model_type "
            f"{DEEPSEEK_V32!r}; got {model_type!r}"
        )
    if model_type == DEEPSEEK_V32 and not sparse:
        raise ValueError(
            f"model_type {DEEPSEEK_V32!r} needs DeepSeek Sparse Attention (mla.index_topk, "
            "index_n_heads, index_head_dim); save this model as deepseek_v3"
        )
    return sparse


def deepseek_v32_mapping(c: LlamaConfig, *, mtp: int | None = None) -> HFMapping:
    """V3's tensors (`tjx.nn.hf.deepseek_tensors`) with each layer's indexer (module table);
    ``mtp``: the checkpoint's ``num_nextn_predict_layers`` on load, None on export (their decoder
    layers carry an indexer too)."""

    def layers(cc: LlamaConfig) -> HFMapping:
        base = deepseek_mapping(cc, "deepseek_v3", interleaved=True, mtp=0)
        tables = Tables.of(base)
        m, d = cc.mla, cc.d_model
        assert m.q_lora_rank and m.index_n_heads and m.index_head_dim
        h, dim = m.index_n_heads, m.index_head_dim
        for i in range(cc.num_layers):
            p, t = f"model.layers.{i}.self_attn.indexer.", f"stack.layers.{i}.attn.indexer."
            tables.linear(p + "wq_b", t + "query", (m.q_lora_rank,), (h, dim))
            tables.linear(p + "wk", t + "key", (d,), (dim,))
            tables.same(p + "k_norm.weight", t + "key_norm.scale", (dim,))
            tables.same(p + "k_norm.bias", t + "key_norm.bias", (dim,))
            tables.linear(p + "weights_proj", t + "weights", (d,), (h,))
        return tables.mapping(base.ignored)

    return mtp_mapping(c, layers, mtp, "num_nextn_predict_layers")


def read(
    hf: Mapping[str, Any], model_type: str, overrides: Mapping[str, Any]
) -> tuple[LlamaConfig, Callable[[], HFMapping]]:
    """A deepseek_v32 folder's config and its tensor mapping on demand
    (`tjx.nn.families.base.Family.read`)."""
    config = deepseek_v32_config_from_hf(hf, **overrides)
    mtp = stored_depths(config, mtp_layers(hf))
    return config, lambda: deepseek_v32_mapping(config, mtp=mtp)
