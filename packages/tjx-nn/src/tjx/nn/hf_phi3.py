"""Deprecated path: moved to ``tjx.nn.hf.phi3`` in tjx-nn 0.20 (see `tjx.nn.moved`).

Importing it warns once and gives the new module itself; the path goes in 0.24.
"""

from tjx.nn.hf.phi3 import *  # noqa: F403  (the names, for type checkers)
from tjx.nn.moved import alias

alias(__name__)
