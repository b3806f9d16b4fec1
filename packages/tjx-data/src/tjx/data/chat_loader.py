"""Deprecated path: moved to ``tjx.data.chat.loader`` in tjx-data 0.14 (see `tjx.data.moved`).

Importing it warns once and gives the new module itself; the path goes in 0.17.
"""

from tjx.data.chat.loader import *  # noqa: F403  (the names, for type checkers)
from tjx.data.moved import alias

alias(__name__)
