"""Kimi-K2's and Kimi-K2.5's published folders ↔ the DeepSeek-V3 text model tjx reads
(:mod:`tjx.nn.hf.deepseek`).

=====================================  ==========================================================
published folder                       tjx
=====================================  ==========================================================
``kimi_k2`` (Kimi-K2-Instruct/Base,    a ``deepseek_v3`` config (transformers 5.24 reads the
``DeepseekV3ForCausalLM``)             type only inside Kimi-K2.5's ``text_config``, as
                                       ``deepseek_v3``; the folder's ``auto_map`` is DeepSeek's
                                       upstreamed code); its FP8 blocks dequantize as
                                       DeepSeek-V3's (`tjx.nn.hf.quantized`)
``kimi_k25``                           its ``text_config`` (``kimi_k2`` or ``deepseek_v3``), tied
(``Kimi_K25ForConditionalGeneration``) as the image-text config says (``tie_word_embeddings``,
                                       default true as transformers' ``Kimi_K25Config``)
``language_model.model.*``,            the text model's ``model.*`` and ``lm_head.*``
``language_model.lm_head.*`` (as       (``model.language_model.*``, transformers' own layout,
published), ``...model.blocks.N.*``    too); transformers 5.24's ``save_pretrained`` renames
(as transformers saves it)             every ``layers`` to ``blocks`` (its vision rename undone
                                       on the language model as well): read as ``layers``
``vision_tower.*``, ``mm_projector.*`` skipped in one line (tjx loads the text model)
=====================================  ==========================================================

The published Kimi-K2.5's routed experts are INT4 (``compressed-tensors``, ``pack-quantized``):
dequantized as they load (`tjx.nn.hf.quantized`), its ``text_config`` repeating the folder's
``quantization_config``. Refused in one line: a ``quantization_config`` tjx does not dequantize
(`tjx.nn.hf.quantization_config` names what it found and what tjx reads), one inside
``text_config`` that differs from the folder's, and any image-text key tjx does not know. The
multi-token-prediction layers a ``text_config`` counts (``num_nextn_predict_layers``) are
skipped as transformers' image-text model skips them (its ``DeepseekV3Model`` builds
``num_hidden_layers`` layers): ``mtp.depths`` 0. The export is the
text model, ``deepseek_v3`` (``DeepseekV3ForCausalLM``), which transformers reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from tjx.nn.hf.deepseek import SPECS
from tjx.nn.hf.image_text import skip_beside, text_config

#: The image-text model's type, the Kimi-K2 text folders' type, and the text model tjx reads.
IMAGE_TEXT = "kimi_k25"
KIMI_K2 = "kimi_k2"
TEXT = "deepseek_v3"
#: The image-text config's keys beside ``text_config``: transformers 5.24's ``Kimi_K25Config``
#: and the published folder's own (Moonshot's code: the media tokens, its vision tower's
#: settings); none changes the text model's numbers. ``quantization_config`` is checked before
#: (`tjx.nn.hf.plan`); ``auto_map`` only as published (`UPSTREAMED`).
IMAGE_TEXT_KEYS = frozenset(
    {
        "text_config",
        "vision_config",
        "projection_hidden_size",
        "projection_layer_norm_eps",
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
        "tie_word_embeddings",
        "media_placeholder_token_id",
        "use_unified_vision_chunk",
        "video_placeholder",
        "ignore_index",
        "auto_map",
        "quantization_config",
    }
)
#: The published folder's ``auto_map``: Moonshot's code, which transformers 5.24 ships as its own
#: ``kimi_k25`` (any other names code tjx would not run: refused).
UPSTREAMED = {
    "AutoConfig": "configuration_kimi_k25.KimiK25Config",
    "AutoModel": "modeling_kimi_k25.KimiK25ForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_kimi_k25.KimiK25ForConditionalGeneration",
}
#: What an image-text folder holds beside its language model (as published, and as transformers
#: 5.24 lays it out or saves it).
VISION = ("vision_tower.", "mm_projector.", "model.vision_tower.", "model.mm_projector.")
#: The language model's prefixes → the text model's.
_PREFIXES = (
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
    ("model.language_model.", "model."),
)
#: The text model's keys (a ``kimi_k2`` folder's, and a Kimi-K2.5 ``text_config``'s): DeepSeek-V3's,
#: as transformers reads both with ``DeepseekV3Config``.
SPEC = SPECS[TEXT]
_BLOCKS = re.compile(r"^model\.blocks\.(\d+)\.")


def kimi_k2_text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
    """A ``kimi_k2`` ``config.json`` as the ``deepseek_v3`` one it is."""
    return {**hf, "model_type": TEXT}


def kimi_k25_text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The DeepSeek-V3 ``config.json`` dict of a Kimi-K2.5 image-text ``config.json``.

    Raises
    ------
    ValueError
        No ``text_config``, a ``text_config`` of another model type, one with a
        ``quantization_config`` the folder's differs from, an ``auto_map`` other than the
        published one, or an image-text key tjx does not know: one line naming it.
    """
    auto_map = hf.get("auto_map", {})
    if not (isinstance(auto_map, Mapping) and auto_map.items() <= UPSTREAMED.items()):
        raise ValueError(
            f"config.json auto_map {auto_map!r} names modelling code other than the published "
            "Kimi-K2.5's (which transformers ships): tjx never runs custom code; remove it"
        )
    inner = hf.get("text_config")
    if isinstance(inner, Mapping):
        kind = inner.get("model_type", TEXT)
        if kind not in (TEXT, KIMI_K2):
            raise ValueError(
                f"config.json text_config.model_type {kind!r} is not Kimi-K2.5's text model "
                f"(transformers 5.24 reads {KIMI_K2!r} or {TEXT!r} there)"
            )
        quant = inner.get("quantization_config")
        if quant is not None and quant != hf.get("quantization_config"):
            raise ValueError(
                "config.json text_config.quantization_config differs from the folder's "
                "quantization_config: tjx cannot tell which one the tensors follow; keep one"
            )
        hf = {**hf, "text_config": {k: v for k, v in inner.items() if k != "quantization_config"}}
    return text_config(hf, image_text=IMAGE_TEXT, text=TEXT, keys=IMAGE_TEXT_KEYS, tied=True,
                       spec=SPEC)  # fmt: skip


def text_name(stored: str) -> str:
    """A tensor's name in a Kimi-K2.5 image-text folder → its name in the text model's."""
    for prefix, text in _PREFIXES:
        if stored.startswith(prefix):
            return _BLOCKS.sub(r"model.layers.\1.", text + stored.removeprefix(prefix))
    return stored


def skip_vision(base: Callable[[str], bool]) -> Callable[[str], bool]:
    """``base``'s ignored names, and the vision tower's and projector's tensors, said in one line
    when the folder holds them (transformers' text model does not read them either)."""
    what = "vision tower and projector (vision_tower.*, mm_projector.*): tjx loads the text model"
    return skip_beside(base, {VISION: what})
