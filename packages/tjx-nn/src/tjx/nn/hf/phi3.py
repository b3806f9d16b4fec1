"""Phi-3's RoPE scaling (LongRoPE) in a Hugging Face ``config.json`` ↔ tjx's `RopeScaling`.

Phi-3-mini-128k, Phi-3-medium-128k and Phi-3.5 carry ``rope_scaling = {"type": "longrope",
"short_factor": [...], "long_factor": [...]}`` (``"su"``, and in early configs ``"yarn"``, are
old names transformers' ``Phi3Config`` reads as ``longrope``) and, beside it, the pretraining
context ``original_max_position_embeddings`` (4096): transformers takes that top-level key over
one inside ``rope_scaling``, and 4096 when neither is given (``Phi3Config``'s default).
``factor`` is ``max_position_embeddings / original`` unless given, and the attention factor
``sqrt(1 + ln(factor) / ln(original))`` (1 for a factor <= 1) unless given, exactly as
``modeling_rope_utils._compute_longrope_parameters``.

Short or long factors: transformers 5.23 picks them per forward call by the call's longest
position, ``max(position_ids) + 1 > original`` → long (``longrope_frequency_update``), and its
Phi-3 recomputes the whole cache with the long factors when a generation first passes
``original`` (``Phi3ForCausalLM.prepare_inputs_for_generation``). tjx does the same: the
attention picks by ``max(positions) + 1`` (:mod:`tjx.nn.rope_scaling`) and ``generate``
re-reads the sequence so far when it crosses (:mod:`tjx.nn.generation`), so every token is what
a forward over its whole prefix computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.family_base import rope_theta
from tjx.nn.rope_scaling import RopeScaling

#: ``rope_scaling`` types transformers' Phi-3 reads, and what it reads them as.
PHI3_ROPE_TYPES = {"longrope": "longrope", "su": "longrope", "yarn": "longrope"}
#: ``Phi3Config.original_max_position_embeddings``' default.
PHI3_ORIGINAL = 4096
#: config.json's RoPE keys that are not `RopeScaling` fields.
_NOT_FIELDS = ("type", "rope_type", "rope_theta", "partial_rotary_factor")


def phi3_rope(hf: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    """``(rope_theta, rope_scaling)`` of a Phi-3 ``config.json`` (legacy ``rope_scaling`` or v5's
    ``rope_parameters``); ``ValueError`` naming a scaling Phi-3 does not compute."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or params)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return rope_theta(hf, "phi3"), None
    if kind not in PHI3_ROPE_TYPES:
        raise ValueError(
            f"config.json rope_scaling type {kind!r} is not one transformers' Phi-3 computes "
            f"(it reads {', '.join(PHI3_ROPE_TYPES)}, all as longrope)"
        )
    # transformers: the scaling's own base and partial factor first, then the top-level keys.
    rest = {k: v for k, v in hf.items() if k not in ("rope_scaling", "rope_parameters")}
    for key, default in (("rope_theta", 10000.0), ("partial_rotary_factor", 1.0)):
        rest[key] = scaling.get(key, hf.get(key, default))
    theta = rope_theta(rest, "phi3")  # its base, and the partial-rotary refusal
    fields = {k: v for k, v in scaling.items() if k not in _NOT_FIELDS}
    original = hf.get("original_max_position_embeddings", PHI3_ORIGINAL)
    fields["original_max_position_embeddings"] = original
    if fields.get("factor") is None:
        fields["factor"] = int(hf.get("max_position_embeddings", 4096)) / original
    return theta, RopeScaling.parse({"type": "longrope", **fields}, "config.json rope_scaling")


def phi3_rope_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The RoPE keys of a Phi-3 ``config.json`` for ``config``: the published form (``type``,
    ``short_factor``, ``long_factor``; the pretraining length beside it), plus ``factor`` and
    ``attention_factor`` only where they differ from what transformers derives."""
    scaling = config.position.rope_scaling
    if scaling is None:
        return {"original_max_position_embeddings": config.max_seq_len}
    assert scaling.type == "longrope" and scaling.original_max_position_embeddings is not None
    assert scaling.short_factor is not None and scaling.long_factor is not None
    original = scaling.original_max_position_embeddings
    written: dict[str, Any] = {
        "type": "longrope",
        "short_factor": list(scaling.short_factor),
        "long_factor": list(scaling.long_factor),
    }
    if scaling.factor != config.max_seq_len / original:
        written["factor"] = scaling.factor
    if scaling.attention_factor is not None:
        written["attention_factor"] = scaling.attention_factor
    return {"original_max_position_embeddings": original, "rope_scaling": written}
