"""Standard JSON for records that may hold NaN or an infinity (a diverged loss, an overflowed
perplexity), and reading them back.

``json.dumps`` writes ``NaN`` / ``Infinity`` by default, which strict JSON readers (jq, a browser,
most languages' default parsers) reject. Here each non-finite float becomes ``null`` and is named,
with what it was, in a ``"nonfinite"`` entry of the mapping that holds it::

    {"step": 7, "loss": NaN, "val_perplexity": Infinity}          # what json.dumps writes
    {"step": 7, "loss": null, "val_perplexity": null,
     "nonfinite": {"loss": "NaN", "val_perplexity": "Infinity"}}  # what dumps_json writes

`from_standard_json` puts the values back (and drops the entry), so a reader gets the record as it
was logged; a file written before (bare ``NaN`` / ``Infinity`` tokens) reads as it always did,
since Python's ``json`` parses those tokens.

One rule for every file tjx writes: tjx.metrics' JSONL log, tjx.ckpt's run files (``final.json``),
the eval app's results. Standard library only (``import tjx.ckpt`` loads neither jax nor numpy).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["NONFINITE_KEY", "dumps_json", "from_standard_json", "loads_json", "to_standard_json"]

#: The entry that names a mapping's non-finite values: ``{"loss": "NaN"}``.
NONFINITE_KEY = "nonfinite"
_SPELLING = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _spelling(value: Any) -> str | None:
    """``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` for a non-finite real number, else None."""
    if isinstance(value, bool | int) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return None


def _standard(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return to_standard_json(value, where=where)
    if isinstance(value, list | tuple):
        items = []
        for i, item in enumerate(value):
            if _spelling(item) is not None:
                raise ValueError(
                    f"{where}[{i}]: {item} inside a list cannot be written as standard JSON; "
                    "put it in a mapping, whose 'nonfinite' entry can name it"
                )
            items.append(_standard(item, f"{where}[{i}]"))
        return items
    return value


def to_standard_json(record: Mapping[str, Any], *, where: str = "record") -> dict[str, Any]:
    """``record`` with each non-finite float replaced by None and named in ``"nonfinite"``.

    Nested mappings get their own ``"nonfinite"`` entry; other values are kept as they are.

    Parameters
    ----------
    record : mapping
        A JSON-able mapping (keys are strings).
    where : str
        How errors name the record.

    Returns
    -------
    dict
        A mapping ``json.dumps(..., allow_nan=False)`` accepts.

    Raises
    ------
    ValueError
        A non-finite float inside a list (nothing could name it), or a mapping that holds a
        non-finite float and already has a ``"nonfinite"`` entry of its own.
    """
    out: dict[str, Any] = {}
    named: dict[str, str] = {}
    for key, value in record.items():
        spelled = _spelling(value)
        if spelled is not None:
            out[key], named[key] = None, spelled
        else:
            out[key] = _standard(value, f"{where}.{key}")
    if named:
        if NONFINITE_KEY in out:
            raise ValueError(
                f"{where}: holds {sorted(named)} (not finite) and a key {NONFINITE_KEY!r} of its "
                "own, which standard JSON would need to name them"
            )
        out[NONFINITE_KEY] = named
    return out


def _is_sidecar(record: Mapping[str, Any]) -> bool:
    names = record.get(NONFINITE_KEY)
    return (
        isinstance(names, dict)
        and bool(names)
        and all(s in _SPELLING and k in record and record[k] is None for k, s in names.items())
    )


def from_standard_json(value: Any) -> Any:
    """The inverse of `to_standard_json`: each value named in a ``"nonfinite"`` entry is put
    back as a float and the entry dropped, in nested mappings too. Anything else (a record with
    bare ``NaN`` already parsed, a histogram's ``nonfinite`` count) is returned as it is."""
    if isinstance(value, list):
        return [from_standard_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: from_standard_json(item) for key, item in value.items()}
    if _is_sidecar(out):
        names = out.pop(NONFINITE_KEY)
        for key, spelled in names.items():
            out[key] = _SPELLING[spelled]
    return out


def dumps_json(record: Mapping[str, Any], **kwargs: Any) -> str:
    """``json.dumps`` of `to_standard_json` ``(record)``: standard JSON, whatever the floats.

    ``kwargs`` go to ``json.dumps`` (``indent``, ``sort_keys``, ``default``...).
    """
    return json.dumps(to_standard_json(record), allow_nan=False, **kwargs)


def loads_json(text: str) -> Any:
    """``json.loads`` then `from_standard_json`: a record written by `dumps_json`, or by plain
    ``json.dumps`` with bare ``NaN`` / ``Infinity``, as it was written."""
    return from_standard_json(json.loads(text))
