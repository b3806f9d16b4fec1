"""Text from Hugging Face datasets by hub name, for users who are online."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from tjx.data.errors import DataError
from tjx.data.sources.local import no_text

__all__ = ["hub_error", "open_hub_dataset"]


def hub_error(name: str, exc: BaseException) -> DataError:
    """A clear error for a hub name that could not be reached."""
    offline = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    state = ", ".join(f"{k}={v}" for k, v in offline.items() if v)
    hint = (
        f"offline mode is on ({state}): hub names need the network; unset HF_HUB_OFFLINE and "
        "HF_DATASETS_OFFLINE when online"
        if state
        else "check the name and your network (HF_HUB_OFFLINE is not set)"
    )
    return DataError(
        f"could not load {name!r} from the Hugging Face hub: {type(exc).__name__}: {exc}. {hint}, "
        "or use a local path or a built-in corpus ('shakespeare', 'kjv')"
    )


def open_hub_dataset(name: str, *, split: str, streaming: bool = True, **kwargs: Any) -> Iterable:
    """Open ``name`` (``owner/dataset`` or ``owner/dataset:config``) with ``datasets``.

    ``streaming=True`` (the default) reads rows as they download, so C4-sized corpora need no
    disk. Extra keyword arguments go to ``datasets.load_dataset``.
    """
    import datasets  # lazy: importing datasets costs ~0.3-1 s

    path, _, config = name.partition(":")
    try:
        return datasets.load_dataset(
            path, config or None, split=split, streaming=streaming, **kwargs
        )
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFound, ...)
        raise hub_error(name, exc) from exc


def iter_hub_texts(name: str, rows: Iterable, text_field: str) -> Iterator[str]:
    """Yield ``row[text_field]`` of each row, wrapping network errors raised mid-stream."""
    try:
        for number, row in enumerate(rows):
            if not isinstance(row.get(text_field), str):
                raise no_text(f"{name}: row {number}", text_field, row)
            yield row[text_field]
    except DataError:
        raise
    except Exception as exc:  # pragma: no cover - needs a network failure mid-stream
        raise hub_error(name, exc) from exc
