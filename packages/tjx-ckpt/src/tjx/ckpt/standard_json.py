"""Moved to `tjx.core.standard_json` in tjx-ckpt 0.14 (one copy of the rule for every package).

``tjx.ckpt.standard_json.dumps`` / ``loads`` / ``NONFINITE_KEY`` still work, warning once each,
until tjx-ckpt 0.16: use ``from tjx.core.standard_json import dumps_json, loads_json``.
"""

from tjx.core.deprecation import moved

__getattr__ = moved(
    __name__,
    {
        "NONFINITE_KEY": "tjx.core.standard_json",
        "dumps": "tjx.core.standard_json:dumps_json",
        "loads": "tjx.core.standard_json:loads_json",
    },
)
