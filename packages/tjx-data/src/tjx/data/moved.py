"""The module paths that moved in tjx-data 0.14, and the aliases that keep them importable for
one release.

0.14 grouped the ``chat_*`` modules into the subpackage ``tjx.data.chat`` (``tjx.data.chat_run``
is now ``tjx.data.chat.run``, ...). Each old path is a three-line module that calls `alias`
(tjx-core's `module_moved`, the mechanism tjx-nn's moved paths use too): importing it warns once
(a `DeprecationWarning` pointing at the importing line) and gives the new module itself, so
every name, private ones included, and every monkeypatch reach the same object. The old paths go
in 0.16.
"""

from __future__ import annotations

from tjx.core.deprecation import module_moved

#: Old module path → new one (the shims beside this module; a test keeps the two in step).
MOVED = {
    f"tjx.data.chat_{name}": f"tjx.data.chat.{name}"
    for name in (
        "encode",
        "loader",
        "packing",
        "prepare",
        "run",
        "sandbox",
        "store",
        "tasks",
        "template",
    )
}
REMOVED_IN = "0.16"


def alias(old: str) -> None:
    """Make the module path ``old`` the module it moved to, with a `DeprecationWarning`.

    Called from the body of the old path's module, which Python then replaces by the new module.

    Parameters
    ----------
    old : str
        The old module path, a key of `MOVED` (the calling module's ``__name__``).
    """
    module_moved(old, MOVED[old], since="tjx-data 0.14", removed_in=REMOVED_IN, callers=(__name__,))
