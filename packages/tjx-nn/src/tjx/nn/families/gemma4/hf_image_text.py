"""Gemma 4's image-text folders read as their text model.

The published folders are the image-text model's (``gemma4``, ``Gemma4ForConditionalGeneration``):
tjx reads its ``text_config`` (tied by the top-level ``tie_word_embeddings``) and the
``model.language_model.*`` tensors, skips the vision and audio towers and their embedders in one
line (`skip_towers`), and exports the text model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tjx.nn.families.gemma4.hf import GEMMA4
from tjx.nn.families.gemma4.hf_read import SPEC
from tjx.nn.hf.image_text import skip_beside, text_config

#: The image-text model's type, and its keys beside ``text_config``: the towers' configs and the
#: tokens that mark images, video and audio in a prompt (none changes the text model's numbers).
IMAGE_TEXT = "gemma4"
IMAGE_TEXT_KEYS = frozenset(
    {
        "text_config",
        "vision_config",
        "audio_config",
        "boi_token_id",
        "eoi_token_id",
        "image_token_id",
        "video_token_id",
        "boa_token_id",
        "eoa_token_index",
        "audio_token_id",
        "initializer_range",
        "tie_word_embeddings",
    }
)
#: What an image-text checkpoint holds beside its language model (``model.language_model.*``).
TOWERS = ("model.vision_tower.", "model.audio_tower.", "model.embed_vision.", "model.embed_audio.")


def gemma4_image_text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The text model's ``config.json`` dict of a Gemma 4 image-text ``config.json``
    (`tjx.nn.hf.image_text.text_config`; tied unless it says otherwise)."""
    return text_config(
        hf, image_text=IMAGE_TEXT, text=GEMMA4, keys=IMAGE_TEXT_KEYS, tied=True, spec=SPEC
    )


def skip_towers(base: Callable[[str], bool]) -> Callable[[str], bool]:
    """``base``'s ignored names, and the image-text model's vision and audio towers and their
    embedders (`TOWERS`), said in one line when a checkpoint holds them (transformers' causal LM
    does not read them either)."""
    what = (
        "vision and audio towers (model.vision_tower.*, model.audio_tower.*, "
        "model.embed_vision/embed_audio.*): tjx loads the text model"
    )
    return skip_beside(base, {TOWERS: what})
