"""Deprecated path: moved to ``tjx.data.run.config`` in tjx-data 0.16 (see `tjx.data.moved`).

Importing it warns once and gives the new module itself; the path goes in 0.17.
"""

from tjx.data.moved import alias
from tjx.data.run.config import *  # noqa: F403  (the names, for type checkers)

alias(__name__)
