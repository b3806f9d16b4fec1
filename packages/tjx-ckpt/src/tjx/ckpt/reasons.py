"""Why reading a committed step failed, in words: which array or file, what is wrong with it.

A failed read reaches tjx-ckpt as a chain of exceptions. The outermost is often orbax's wrapper,
whose message ends in the ``repr`` of a bound method (``See full TensorStore details: <bound
method pybind11_detail_function_record_v1_….spec of TensorStore({…``): nothing a reader can use.
The specific cause is tensorstore's, deeper in the chain::

    FAILED_PRECONDITION: Error reading "params.w0/0" in OCDBT database at local file
    "/run/checkpoints/20/state/": ZSTD_decompressStream() failed: Unknown frame descriptor; at
    byte 0; at uncompressed byte 0

`read_failure` finds that cause and says it as ``reading array params/w0 (chunk 0) failed: its
compressed bytes are damaged (ZSTD_decompressStream() failed: Unknown frame descriptor)``; a
chain without a tensorstore message gives its most specific exception's type and first line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tjx.ckpt.errors import REASON_LIMIT, one_line

__all__ = ["read_failure", "specific_cause"]

# orbax's wrapper around a failed array read: its message carries a method's repr, not a cause.
_WRAPPER = re.compile(r"Encountered error while reading array|See full TensorStore details")
# ... and what follows "See full TensorStore details:" in it, said when nothing else is.
_METHOD_REPR = re.compile(r"\s*See full TensorStore details:.*$", re.DOTALL)
_KEY = re.compile(r'Error (?:reading|writing) "([^"]+)"')
_FILE = re.compile(r'local file "([^"]+)"')
# The end of the innermost "…"-quoted clause: what follows is the most specific reason.
_LAST_CLAUSE = re.compile(r'"(?::|,)\s+(?!.*"(?::|,)\s)(.*)$', re.DOTALL)
_POSITION = re.compile(r";\s*at (?:uncompressed )?byte \d+")
_BTREE = re.compile(r"^Error decoding b-tree node: ")
_STATUS = re.compile(r"^[A-Z_]{4,}: ")
_WORDS = (  # (a phrase of tensorstore's, lower case; what it means for the reader)
    ("b-tree node", "the array store's index is damaged"),
    ("checksum", "checksum mismatch, the bytes changed after the save"),
    ("decompress", "its compressed bytes are damaged"),
    ("not found", "a file it needs is missing"),
    ("permission denied", "a file it needs cannot be read (permission denied)"),
    ("out of range", "a file it needs is shorter than recorded"),
)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and its causes, outermost first (explicit ``__cause__`` before ``__context__``)."""
    found: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in found and len(found) < 32:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def specific_cause(err: BaseException) -> BaseException:
    """The most specific exception of the chain that says something: the deepest one that is
    not orbax's wrapper (the wrapper itself when there is nothing else)."""
    candidates = [e for e in _chain(err) if str(e).strip() and not _WRAPPER.search(str(e))]
    return candidates[-1] if candidates else err


def _subject(text: str, names: Mapping[str, str], step_dir: str) -> str:
    """``array params/w0 (chunk 0)``, ``… (its metadata)``, ``… in state/d/ab12…``, or ``it``."""
    parts = []
    key = _KEY.search(text)
    if key is not None:
        array, _, item = key.group(1).rpartition("/")
        array = array or item
        part = "its metadata" if item.startswith(".z") else f"chunk {item}" if item else ""
        parts.append(f"array {names.get(array, array)}" + (f" ({part})" if part else ""))
    files = [f for f in _FILE.findall(text) if not f.endswith("/")]
    if files:
        parts.append(f"in {files[-1].removeprefix(step_dir)}")
    return " ".join(parts) or "it"


def _detail(text: str) -> str:
    clause = _LAST_CLAUSE.search(text)
    detail = clause.group(1) if clause is not None else text
    return _STATUS.sub("", _POSITION.sub("", detail)).strip(" ;")


def _fit(text: str, limit: int) -> str:
    """``text`` cut at its end to ``limit`` characters (with "…")."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def read_failure(
    err: BaseException, names: Mapping[str, str] | None = None, step_dir: str | None = None
) -> str:
    """One line of words for a failed read of a step's arrays, at most `REASON_LIMIT` long.

    Parameters
    ----------
    err : BaseException
        What the read raised (orbax's, tensorstore's, chained).
    names : mapping, optional
        orbax's names of the arrays (``params.w0``) to the caller's (``params/w0``).
    step_dir : str, optional
        The step's folder: files in it are named relative to it (``state/d/ab12…``).

    Returns
    -------
    str
        ``reading <array and file> failed: <what is wrong> (<tensorstore's reason>)``, the
        reason cut at its end if the line is too long; for an error without tensorstore's
        message, ``reading it failed (<Type>: <its first line>)``.
    """
    specific = specific_cause(err)
    text = one_line(_METHOD_REPR.sub("", str(specific)), limit=10_000)  # specs dropped too
    if _KEY.search(text) is None and _FILE.search(text) is None:
        return one_line(f"reading it failed ({type(specific).__name__}: {text})")
    prefix = f"{step_dir.rstrip('/')}/" if step_dir else "\0"
    detail = _detail(text)
    words = next((w for phrase, w in _WORDS if phrase in detail.lower()), "it cannot be decoded")
    said = f"reading {_subject(text, names or {}, prefix)} failed: {words}"
    detail = _fit(_BTREE.sub("", detail), REASON_LIMIT - len(said) - 3)
    return one_line(f"{said} ({detail})" if len(detail) > 1 else said)
