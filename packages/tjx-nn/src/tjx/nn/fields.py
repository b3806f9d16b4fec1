"""The old home of a tjx-nn config class's field checks: ``choice``, ``positive`` and ``rate`` live
in tjx-core (:mod:`tjx.core.config.values`, which every tjx-nn config class imports; imported
from here they still work, with a DeprecationWarning, until tjx-nn 0.24). Fields are declared with
`tjx.core.fields.setting` (``tjx.nn.fields.setting`` is its old path: it still works, with a
DeprecationWarning, until tjx-nn 0.24)."""

from __future__ import annotations

from tjx.core.deprecation import moved

__getattr__ = moved(
    __name__,
    {
        "setting": "tjx.core.fields",
        "choice": "tjx.core.config.values",
        "positive": "tjx.core.config.values",
        "rate": "tjx.core.config.values",
    },
)
