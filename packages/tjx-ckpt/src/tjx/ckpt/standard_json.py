"""Standard JSON for a run's files (``final.json``...), NaN and infinities included.

``json.dumps`` writes ``NaN`` / ``Infinity``, which strict readers (jq, a browser, most languages'
default parsers) reject: a run whose validation loss grew to 8,703 wrote
``"val_perplexity": Infinity``. Here each non-finite float becomes ``null`` and is named, with
what it was, in a ``"nonfinite"`` entry of the mapping that holds it::

    {"step": 20, "val_loss": 8703.1, "val_perplexity": null,
     "nonfinite": {"val_perplexity": "Infinity"}}

`loads` puts the values back, and reads files written before (bare tokens) as it always did.

The same rule as tjx.metrics' JSONL log (``tjx.metrics.dumps_json``): tjx-ckpt keeps its own
copy, standard library only, because it does not depend on tjx-metrics (and ``import tjx.ckpt``
loads neither jax nor numpy).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["NONFINITE_KEY", "dumps", "loads"]

#: The entry that names a mapping's non-finite values: ``{"val_perplexity": "Infinity"}``.
NONFINITE_KEY = "nonfinite"
_SPELLING = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _spelling(value: Any) -> str | None:
    if isinstance(value, bool | int) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    if math.isnan(number):
        return "NaN"
    return None if math.isfinite(number) else ("Infinity" if number > 0 else "-Infinity")


def _standard(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        named: dict[str, str] = {}
        for key, item in value.items():
            spelled = _spelling(item)
            if spelled is not None:
                out[key], named[key] = None, spelled
            else:
                out[key] = _standard(item, f"{where}.{key}")
        if named:
            if NONFINITE_KEY in out:
                raise ValueError(
                    f"{where}: holds {sorted(named)} (not finite) and a key {NONFINITE_KEY!r}"
                )
            out[NONFINITE_KEY] = named
        return out
    if isinstance(value, list | tuple):
        if any(_spelling(item) is not None for item in value):
            raise ValueError(f"{where}: a NaN or infinity inside a list has no standard JSON form")
        return [_standard(item, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def _restored(value: Any) -> Any:
    if isinstance(value, list):
        return [_restored(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: _restored(item) for key, item in value.items()}
    names = out.get(NONFINITE_KEY)
    if (
        isinstance(names, dict)
        and names
        and all(s in _SPELLING and k in out and out[k] is None for k, s in names.items())
    ):
        del out[NONFINITE_KEY]
        out.update({key: _SPELLING[spelled] for key, spelled in names.items()})
    return out


def dumps(data: Mapping[str, Any], **kwargs: Any) -> str:
    """``json.dumps`` of ``data`` as standard JSON (``kwargs``: ``indent``, ``default``...).

    Raises
    ------
    ValueError
        A non-finite float inside a list, or beside a key named ``"nonfinite"``.
    """
    return json.dumps(_standard(data, "data"), allow_nan=False, **kwargs)


def loads(text: str) -> Any:
    """``json.loads`` with the values a ``"nonfinite"`` entry names put back as floats."""
    return _restored(json.loads(text))
