"""The multi-token-prediction layers of DeepSeek-V3 and GLM-4.5 checkpoints ↔ tjx's ``mtp``
(:mod:`tjx.nn.mtp`).

Both store depth ``j`` after the causal LM's layers, at ``model.layers.{num_layers + j}.``: a
decoder layer's tensors under the names of one (``input_layernorm``, ``self_attn.*``,
``post_attention_layernorm``, ``mlp.*``), and

==================================  ===============================================
HF                                  tjx
==================================  ===============================================
``enorm.weight``, ``hnorm.weight``  ``mtp.layers.{j}.enorm.scale``, ``hnorm.scale``
``eh_proj.weight`` ``[d, 2·d]``     ``mtp.layers.{j}.eh_proj.kernel`` ``[2·d, d]``
``shared_head.norm.weight``         ``mtp.layers.{j}.norm.scale``
``embed_tokens.weight``,            the main model's ``embed`` and head: written as
``shared_head.head.weight``         copies, not read (the checkpoints' are the same)
==================================  ===============================================

The decoder layer is read as the family's own mapping reads layer ``num_layers + j`` (its MLA,
MoE experts, router bias...), its tjx names moved from ``stack.layers.{num_layers + j}.`` to
``mtp.layers.{j}.block.``. A checkpoint with more depths than the config's ``mtp.depths`` (a
load with ``mtp.depths=0``) has the others skipped in one printed line (`skip_mtp`).

Qwen3.5's checkpoints (dense and MoE, `qwen_mtp_mapping`) store their module beside the causal
LM, under ``mtp.`` (transformers 5.24 has no Qwen3.5 MTP and drops them on load; the names are
the published folders' and vLLM's ``Qwen3_5MTP``'s): ``mtp.layers.0.*`` a decoder layer that
attends (the family's full-attention layer: gated ``q_proj``, q/k norms, its MLP or sparse
block), and

====================================  ===============================================
HF                                    tjx
====================================  ===============================================
``mtp.pre_fc_norm_embedding.weight``  ``mtp.layers.0.enorm.scale``
``mtp.pre_fc_norm_hidden.weight``     ``mtp.layers.0.hnorm.scale``
``mtp.fc.weight`` ``[d, 2·d]``        ``mtp.layers.0.eh_proj.kernel`` (the embedding first)
``mtp.norm.weight``                   ``mtp.layers.0.norm.scale``
====================================  ===============================================

the embedding and head the main model's (``mtp_use_dedicated_embeddings`` false).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.gated_deltanet import DeltaConfig
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.tables import Convert, Tables
from tjx.nn.mtp_config import MTPConfig


def skip_mtp(
    base: Callable[[str], bool], num_layers: int, mtp: int, key: str
) -> Callable[[str], bool]:
    """``base``'s ignored names, and the tensors of ``mtp`` multi-token-prediction layers stored
    after the ``num_layers`` of the causal LM (DeepSeek-V3's and GLM-4.5's; ``key``: the
    config.json key that counts them), said in one line when a checkpoint really holds one."""
    extra = re.compile(rf"model\.layers\.({'|'.join(str(num_layers + j) for j in range(mtp))})\.")
    said: list[bool] = []

    def ignored(name: str) -> bool:
        if not (mtp and extra.match(name)):
            return base(name)
        if not said:
            said.append(True)
            print(
                f"tjx: skipping the checkpoint's {mtp} multi-token-prediction layer(s) "
                f"(model.layers.{num_layers}.*, {key}): the model does not use them "
                "(mtp.depths)",
                file=sys.stderr,
            )
        return True

    return ignored


#: A depth's copies of the shared tensors (HF suffix → the main model's HF name, the tied head's).
_COPIES = {
    "embed_tokens.weight": ("model.embed_tokens.weight", "model.embed_tokens.weight"),
    "shared_head.head.weight": ("lm_head.weight", "model.embed_tokens.weight"),
}


def stored_depths(c: LlamaConfig, stored: int, key: str = "num_nextn_predict_layers") -> int:
    """``stored``, the multi-token-prediction layers a checkpoint holds (its config.json's
    ``key``), once checked against ``c``'s ``mtp.depths``: what a plan reads with the config, so
    that it refuses what the load would.

    Raises
    ------
    ValueError
        ``c`` has more depths than the checkpoint stores.
    """
    if c.mtp.depths > stored:
        fix = f"mtp.depths <= {stored}" if stored else "mtp.depths=0"
        raise ValueError(
            f"mtp.depths={c.mtp.depths}: the checkpoint stores {stored} multi-token-prediction "
            f"layer(s) ({key}); set {fix}"
        )
    return stored


#: config.json keys that count a checkpoint's multi-token-prediction layers or modules, in the
#: families that have them (DeepSeek-V3's and GLM-4.5's, Qwen3.5's and Qwen3-Next's, and a family
#: folder's own ``num_mtp_modules``).
COUNT_KEYS = (
    "num_nextn_predict_layers",
    "num_mtp_layers",
    "mtp_num_hidden_layers",
    "num_mtp_modules",
)


def reads_no_mtp(c: Any, hf: Mapping[str, Any], model_type: str) -> None:
    """Refuse ``c``'s ``mtp.depths`` above 0 for a checkpoint of ``model_type`` (``hf`` its
    ``config.json``), whose multi-token-prediction layers tjx does not read (`stored_depths`
    checks those of the families it reads them from): a plan refuses what the load could not
    fill (its mapping has no tensor for them), and no model keeps modules at their random
    initialisation. A count config.json keeps of modules of its own that tjx does not map
    (``num_mtp_modules``) is named.

    Raises
    ------
    ValueError
        ``c`` asks for multi-token-prediction depths.
    """
    mtp = getattr(c, "mtp", None)
    if mtp is None or not mtp.depths:
        return
    counted = [f"{k} {hf[k]}" for k in COUNT_KEYS if hf.get(k)]
    own = (
        f" (config.json's {', '.join(counted)} counts modules tjx does not read)" if counted else ""
    )
    raise ValueError(
        f"mtp.depths={mtp.depths}: tjx reads no multi-token-prediction layers from a "
        f"{model_type!r} checkpoint{own}; set mtp.depths=0"
    )


def mtp_mapping(
    c: LlamaConfig,
    build: Callable[[LlamaConfig], HFMapping],
    stored: int | None,
    key: str,
) -> HFMapping:
    """``build(c)`` with ``c.mtp.depths`` multi-token-prediction layers mapped too.

    Parameters
    ----------
    c : LlamaConfig
        The model's config.
    build : callable
        The family's mapping of a config without MTP (called with ``num_layers`` grown by the
        depths, so that it maps their decoder layers as its own).
    stored : int or None
        The checkpoint's depths on load (``key``'s value); None on export (the config's, with
        the shared tensors' copies written).
    key : str
        The config.json key that counts them (named when some are skipped).

    Raises
    ------
    ValueError
        A config with more depths than the checkpoint stores.
    """
    n, depths = c.num_layers, c.mtp.depths
    have = depths if stored is None else stored_depths(c, stored, key)
    if not depths:
        base = build(c)
        return HFMapping(base.shapes, base.to_tjx, base.to_hf, skip_mtp(base.ignored, n, have, key))
    grown = c.replace(num_layers=n + depths, mtp=MTPConfig())
    assert isinstance(grown, LlamaConfig)
    full = build(grown)
    moved = {f"stack.layers.{n + j}.": f"mtp.layers.{j}.block." for j in range(depths)}

    def ours(name: str) -> str:
        for old, new in moved.items():
            if name.startswith(old):
                return new + name[len(old) :]
        return name

    def through(convert: Convert) -> Convert:
        return lambda read: convert(lambda name: read(ours(name)))

    tables = Tables(
        dict(full.shapes),
        {ours(t): f for t, f in full.to_tjx.items()},
        {h: through(f) for h, f in full.to_hf.items()},
    )
    d, copies = c.d_model, []
    for j in range(depths):
        p, t = f"model.layers.{n + j}.", f"mtp.layers.{j}."
        tables.same(p + "enorm.weight", t + "enorm.scale", (d,))
        tables.same(p + "hnorm.weight", t + "hnorm.scale", (d,))
        tables.same(p + "shared_head.norm.weight", t + "norm.scale", (d,))
        tables.linear(p + "eh_proj", t + "eh_proj", (2 * d,), (d,))
        for suffix, (untied, tied) in _COPIES.items():
            copies.append(p + suffix)
            if stored is None:  # written as copies of the main model's
                tables.shapes[p + suffix] = (c.vocab_size, d)
                tables.to_hf[p + suffix] = tables.to_hf[tied if c.tie_embeddings else untied]
    skipped = skip_mtp(full.ignored, n + depths, have - depths, key)
    shared = frozenset(copies)

    def ignored(name: str) -> bool:
        return name in shared or skipped(name)

    return tables.mapping(ignored)


#: Qwen3.5's MTP tensors beside its layer: HF suffix (under ``mtp.``) → tjx suffix (depth 0's).
_QWEN_NORMS = {
    "pre_fc_norm_embedding.weight": "enorm.scale",
    "pre_fc_norm_hidden.weight": "hnorm.scale",
    "norm.weight": "norm.scale",
}


def qwen_mtp_mapping(c: LlamaConfig, build: Callable[[LlamaConfig], HFMapping]) -> HFMapping:
    """``build(c)`` (a Qwen3.5 family's mapping of ``c`` without MTP) with Qwen3.5's
    multi-token-prediction module (``mtp.*``, the module doc) when ``c.mtp.depths`` is 1.

    Its layer is ``build``'s layer 0 of a one-layer decoder that attends, moved from
    ``model.layers.0.``/``stack.layers.0.`` to ``mtp.layers.0.``/``mtp.layers.0.block.``.

    Raises
    ------
    ValueError
        ``mtp.depths`` above 1: Qwen3.5's module is one depth.
    """
    base = build(c)
    if not c.mtp.depths:
        return base
    if c.mtp.depths > 1:
        raise ValueError(
            f"mtp.depths={c.mtp.depths}: Qwen3.5's multi-token-prediction module is one depth "
            "(mtp_num_hidden_layers chains its layers in it); set mtp.depths <= 1"
        )
    # A one-layer decoder that attends: no delta layer, so no delta sizes either.
    one = c.replace(num_layers=1, mixer_pattern=None, delta=DeltaConfig(), mtp=MTPConfig())
    assert isinstance(one, LlamaConfig)
    layer = build(one)
    hf_old, hf_new = "model.layers.0.", "mtp.layers.0."
    t_old, t_new = "stack.layers.0.", "mtp.layers.0.block."

    def moved(name: str, old: str, new: str) -> str:
        return new + name[len(old) :] if name.startswith(old) else name

    tables = Tables(dict(base.shapes), dict(base.to_tjx), dict(base.to_hf))
    for name, shape in layer.shapes.items():
        if name.startswith(hf_old):
            tables.shapes[moved(name, hf_old, hf_new)] = shape
    for name, convert in layer.to_tjx.items():
        if name.startswith(t_old):
            tables.to_tjx[moved(name, t_old, t_new)] = _read_as(convert, hf_new, hf_old)
    for name, convert in layer.to_hf.items():
        if name.startswith(hf_old):
            tables.to_hf[moved(name, hf_old, hf_new)] = _read_as(convert, t_new, t_old)
    d = c.d_model
    for hf_name, tjx_name in _QWEN_NORMS.items():
        tables.same("mtp." + hf_name, "mtp.layers.0." + tjx_name, (d,))
    tables.linear("mtp.fc", "mtp.layers.0.eh_proj", (2 * d,), (d,))
    return tables.mapping(base.ignored)


def _read_as(convert: Convert, new: str, old: str) -> Convert:
    """``convert`` reading its tensors under prefix ``new`` where it names ``old``."""

    def read_moved(read: Any) -> Any:
        return convert(lambda name: read(new + name[len(old) :] if name.startswith(old) else name))

    return read_moved
