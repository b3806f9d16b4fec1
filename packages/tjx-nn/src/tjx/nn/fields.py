"""The old home of a tjx-nn config class's field checks: ``choice``, ``positive`` and ``rate`` live
with the other checks of a config in :mod:`tjx.nn.config_checks` (imported from here they still
work, with a DeprecationWarning, until tjx-nn 0.23). Fields are declared with
`tjx.core.fields.setting` (``tjx.nn.fields.setting`` is its old path: it still works, with a
DeprecationWarning, until tjx-nn 0.21)."""

from __future__ import annotations

from tjx.core.deprecation import moved

__getattr__ = moved(
    __name__,
    {
        "setting": "tjx.core.fields",
        "choice": "tjx.nn.config_checks",
        "positive": "tjx.nn.config_checks",
        "rate": "tjx.nn.config_checks",
    },
)
