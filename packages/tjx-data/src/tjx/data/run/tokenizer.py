"""The tokenizer a run asks for, and how a run's data messages name the caller's arguments.

``names`` maps tjx.data's argument names to the caller's (``{"seq_len": "data.seq_len"}``), so a
`DataError` reads in the user's words while its ``argument`` stays tjx.data's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tjx.data.bpe import load_tokenizer
from tjx.data.cache import Staging, cache_root
from tjx.data.errors import DataError
from tjx.data.prepare import bpe_tokenizer
from tjx.data.sources.local import Compressed
from tjx.data.tokenizers import Tokenizer

__all__ = ["Names", "check_run_tokenizer", "fault", "name_of", "run_tokenizer"]
__all__ += ["same_tokenizer", "source_or_field"]

Names = Mapping[str, str] | None


def fault(names: Names, argument: str, message: str) -> DataError:
    """``DataError("<name of argument>: message", argument=argument)``."""
    return DataError(f"{name_of(names, argument)}: {message}", argument=argument)


def source_or_field(err: DataError) -> str:
    """The argument a source's `DataError` is said of: ``"text_field"`` for a row without that
    field (`tjx.data.sources.local.no_text`: the field is what to change), else ``"source"``."""
    return "text_field" if err.argument == "text_field" else "source"


def name_of(names: Names, argument: str) -> str:
    """The caller's name for ``argument`` (the argument's own name by default)."""
    return (names or {}).get(argument, argument)


def run_tokenizer(
    spec: str,
    source: str,
    *,
    vocab: int = 2048,
    cache_dir: str | Path | None = None,
    names: Names = None,
    staging: Staging | None = None,
    compressed: Compressed = True,
    text_field: str = "text",
) -> Tokenizer:
    """The tokenizer ``spec`` names for a run on ``source``.

    ``"bpe"`` is a byte-level BPE of ``vocab`` ids trained on ``source``'s train split once and
    cached (`bpe_tokenizer`); anything else goes to `load_tokenizer` (``"byte"``, ``"gpt2"``, a
    path). A corpus the BPE cannot train on is a `DataError` with ``argument="source"``, a
    tokenizer that does not load one with ``argument="tokenizer"``. A new BPE is built in
    ``staging`` when given (published by its owner once the data passed its checks); it reads
    a local folder's compressed files unless ``compressed`` is False, and each row's
    ``text_field``.
    """
    if spec != "bpe":
        try:
            return load_tokenizer(spec)
        except DataError as err:
            raise fault(names, "tokenizer", str(err)) from None
    try:
        return bpe_tokenizer(source, vocab, cache_root(cache_dir), staging=staging,
                             compressed=compressed, text_field=text_field)  # fmt: skip
    except DataError as err:  # the corpus it trains on is the source
        raise fault(names, source_or_field(err), str(err)) from None


def _tokenizer_file(spec: object) -> Path | None:
    """The ``tokenizer.json`` a spec names (a folder holding one, or the file), else None."""
    path = Path(str(spec)).expanduser()
    path = path / "tokenizer.json" if path.is_dir() else path
    return path if path.is_file() else None


def same_tokenizer(theirs: object, ours: object) -> bool:
    """Whether two tokenizer specs give the same ids for the same text, as far as can be told
    without loading them: the same spec, or two paths to byte-identical ``tokenizer.json`` files.

    Parameters
    ----------
    theirs, ours:
        Specs as a run records them (``"gpt2"``, a folder, a file); ``theirs`` None: unknown, the
        same only by file content.

    Returns
    -------
    bool
        True when a model trained on ``theirs``' ids reads ``ours``' as the same tokens.
    """
    if theirs is not None and str(theirs) == str(ours):
        return True
    a, b = _tokenizer_file(theirs), _tokenizer_file(ours)
    return a is not None and b is not None and a.read_bytes() == b.read_bytes()


def check_run_tokenizer(run: str, data: Any, *, names: Names = None) -> None:
    """Refuse data read by another tokenizer than the run ``run`` trained on (`same_tokenizer`):
    a run's weights started from read ids of its own tokenizer.

    Parameters
    ----------
    run : str
        The run's folder, as the user named it (its ``data.json`` records the tokenizer).
    data : RunData or ChatRunData
        The prepared data (`prepare_run`).
    names : mapping, optional
        The caller's name of the ``tokenizer`` argument, for the message's fix.

    Raises
    ------
    DataError
        With ``argument="tokenizer"``, naming the run's tokenizer.
    """
    theirs = json.loads((Path(run).expanduser() / "data.json").read_text()).get("tokenizer")
    ours = getattr(data, "tokenizer_dir", None) or getattr(data, "tokenizer_spec", None)
    if not same_tokenizer(theirs, ours):
        raise DataError(
            f"the run {run!r} read another tokenizer ({theirs}), so its ids would mean other "
            f"tokens here; set {name_of(names, 'tokenizer')}={theirs}",
            argument="tokenizer",
        )
