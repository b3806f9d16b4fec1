"""Deprecated path: moved to ``tjx.nn.preference.rules`` in tjx-nn 0.20 (see `tjx.nn.moved`).

Importing it warns once and gives the new module itself; the path goes in 0.24.
"""

from tjx.nn.moved import alias
from tjx.nn.preference.rules import *  # noqa: F403  (the names, for type checkers)

alias(__name__)
