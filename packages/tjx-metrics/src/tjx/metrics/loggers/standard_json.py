"""Moved to `tjx.core.standard_json` in tjx-metrics 0.17 (one copy of the rule for every package).

The names still import from here, warning once each, until tjx-metrics 0.19; ``tjx.metrics``
itself keeps exporting them (``from tjx.metrics import dumps_json`` is not deprecated).
"""

from tjx.core.deprecation import moved

__getattr__ = moved(
    __name__,
    {
        name: "tjx.core.standard_json"
        for name in (
            "NONFINITE_KEY",
            "dumps_json",
            "from_standard_json",
            "loads_json",
            "to_standard_json",
        )
    },
)
