"""An image-text checkpoint read as its text model (Qwen3.5's published folders and those of the
family folders' families): the text config inside its ``config.json``, and the towers stored
beside the language model skipped in one line each, as transformers' causal LMs skip them on load.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from tjx.nn.hf.config import HARMLESS
from tjx.nn.hf.keys import Spec, flag


def text_config(
    hf: Mapping[str, Any],
    *,
    image_text: str,
    text: str,
    keys: frozenset[str],
    tied: bool,
    spec: Spec,
) -> dict[str, Any]:
    """The text model's ``config.json`` dict of an image-text ``config.json``: its
    ``text_config`` as ``model_type`` ``text``, tied as the image-text model ties (its own
    ``tie_word_embeddings``, ``tied`` when it has none, as transformers' default), read with
    the text model's ``spec`` (its keys named ``text_config.<key>`` in messages).

    Parameters
    ----------
    hf : Mapping
        The image-text model's ``config.json`` (``model_type`` ``image_text``).
    image_text, text : str
        The two model types (for messages, and the text model's).
    keys : frozenset of str
        The image-text config's keys tjx knows (any other key is refused: it could change the
        model).
    tied : bool
        transformers' ``tie_word_embeddings`` default for the image-text model.
    spec : Spec
        The text model's keys (`keys.Spec`; its class ``<Name>TextConfig``, the image-text
        model's ``<Name>Config``).

    Raises
    ------
    ValueError
        No ``text_config``, or a key the image-text config does not have, named.
    """
    unknown = sorted(set(hf) - keys - HARMLESS)
    if unknown:
        raise ValueError(
            f"config.json key(s) {', '.join(unknown)} are not understood by tjx's {image_text} "
            "(image-text) import and could change the model"
        )
    inner = hf.get("text_config")
    if not isinstance(inner, Mapping):
        raise ValueError(f"config.json of model_type {image_text!r} has no text_config")
    outer = Spec(spec.cls.replace("TextConfig", "Config"), {"tie_word_embeddings": flag(tied)})
    tie = outer.read(hf)["tie_word_embeddings"]
    return spec.read(dict(inner) | {"model_type": text, "tie_word_embeddings": tie},
                     prefix="text_config.")  # fmt: skip


def skip_beside(
    base: Callable[[str], bool], beside: Mapping[str | tuple[str, ...], str]
) -> Callable[[str], bool]:
    """``base``'s ignored names, and every tensor under one of ``beside``'s name prefixes (a
    prefix or a tuple of them → what they are), said in one line per entry when a checkpoint
    really holds it."""
    said: set[str | tuple[str, ...]] = set()

    def ignored(name: str) -> bool:
        entry = next((p for p in beside if name.startswith(p)), None)
        if entry is None:
            return base(name)
        if entry not in said:
            said.add(entry)
            print(f"tjx: skipping the checkpoint's {beside[entry]}", file=sys.stderr)
        return True

    return ignored
