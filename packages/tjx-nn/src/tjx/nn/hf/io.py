"""Hugging Face checkpoint folders: find one (a local folder or a hub name), read its
``config.json``, copy its tokenizer files.

A folder holds ``config.json`` and either ``model.safetensors`` or shards listed in
``model.safetensors.index.json`` (``{"weight_map": {tensor: file}}``): its tensors are read by
`tjx.nn.hf.reading`, written by `tjx.nn.hf.writing`. PyTorch pickles (``pytorch_model.bin``) are
never opened: unpickling runs arbitrary code.

``huggingface_hub`` (for hub names) is imported lazily.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
#: Tokenizer files that travel with the weights (whichever the folder has).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
_HUB_PATTERNS = ["config.json", "*.safetensors", INDEX, *TOKENIZER_FILES]
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.bin")


def is_hub_id(source: str) -> bool:
    """Whether ``source`` reads as a hub repo id, ``org/name`` (what `resolve` downloads).

    Checked without the network, for an app to tell a typo from a hub name before it downloads
    anything: a local path would exist, or start with ``.`` or ``~``; a one-part name is a
    legacy hub name (``gpt2``) only an app's own list knows.
    """
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def resolve(path_or_hub: str | os.PathLike[str]) -> Path:
    """A local folder as it is, else a hub repo id downloaded (safetensors files only).

    Raises
    ------
    ValueError
        Neither a folder nor a repo the hub gives (offline, unknown name).
    """
    path = Path(path_or_hub).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError(
            f"{str(path_or_hub)!r} is not a local folder and huggingface_hub is not installed"
        ) from e
    try:
        local = snapshot_download(str(path_or_hub), allow_patterns=_HUB_PATTERNS)
    except Exception as e:
        raise ValueError(
            f"could not find {str(path_or_hub)!r} locally or download it from the hub: {e}"
        ) from e
    return Path(local)


def read_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json`` as a dict, after checking that the folder holds safetensors weights.

    Raises
    ------
    ValueError
        No ``config.json``; no weights; only PyTorch pickles (with how to convert them).
    """
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} has no config.json: not a Hugging Face checkpoint folder")
    if not (folder / SINGLE).is_file() and not (folder / INDEX).is_file():
        pickles = [name for name in _PICKLES if (folder / name).is_file()]
        if pickles:
            raise ValueError(
                f"{folder} holds only {pickles[0]} (a PyTorch pickle, never opened by tjx); "
                "convert it to safetensors first: in Python with torch and transformers, "
                f"AutoModelForCausalLM.from_pretrained('{folder}').save_pretrained('OUT', "
                "safe_serialization=True), then use OUT"
            )
        raise ValueError(f"{folder} has no {SINGLE} or {INDEX}: no weights to load")
    try:
        data = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{config_file} must hold a JSON object")
    return data


def copy_tokenizer(source: Path, target: Path) -> list[str]:
    """Copy the tokenizer files ``source`` has (``TOKENIZER_FILES``) into ``target``."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
            copied.append(name)
    return copied
