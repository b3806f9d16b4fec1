"""Llama 4's image-text folders read as their text model.

The image-text model's folders (``llama4``, ``Llama4ForConditionalGeneration``: the published
Llama 4 checkpoints) are read as their text model: the ``text_config``, the
``language_model.*`` tensors; the vision tower and its projector (``vision_model.*``,
``multi_modal_projector.*``) are skipped in one line, and the export is the text model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tjx.nn.families.llama4.hf import LLAMA4
from tjx.nn.families.llama4.hf_read import SPEC
from tjx.nn.hf.image_text import skip_beside, text_config

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
