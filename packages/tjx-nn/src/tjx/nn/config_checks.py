"""Deprecated module: before tjx-nn 0.22 it held ``TransformerConfig``'s checks. A config and its
checks are one idea, so they are in :mod:`tjx.nn.configs` now, beside the class that calls them;
the checks of one value (``choice``, ``positive``, ``rate``, which every tjx-nn config class
uses) are tjx-core's (:mod:`tjx.core.config.values`), below both ``configs`` and
:mod:`tjx.nn.moe.config`. Read from here, each name still works, with a DeprecationWarning the first
time; the module goes in tjx-nn 0.24.
"""

from __future__ import annotations

from tjx.core.deprecation import moved

#: Old name → its module now.
MOVED_TO = {
    **{name: "tjx.core.config.values" for name in ("choice", "positive", "rate")},
    **{
        name: "tjx.nn.configs"
        for name in (
            "LAYER_KINDS",
            "check_sizes",
            "check_rope",
            "check_rope_scaling",
            "check_window",
            "check_deepseek_mla",
            "check_mla",
            "check_relative",
            "check_family",
            "check_unused",
        )
    },
}
__getattr__ = moved(__name__, MOVED_TO)
