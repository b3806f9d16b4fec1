"""The module paths that moved in tjx-data 0.14 and 0.16, and the aliases that keep them
importable for one more release.

0.14 grouped the ``chat_*`` modules into the subpackage ``tjx.data.chat`` (``tjx.data.chat_run``
is now ``tjx.data.chat.run``, ...), 0.16 the ``run_*`` modules into ``tjx.data.run``
(``tjx.data.run_setup`` is now ``tjx.data.run.setup``, ...). Each old path is a three-line module
that calls `alias` (tjx-core's `module_moved`, the mechanism tjx-nn's moved paths use too):
importing it warns once (a `DeprecationWarning` pointing at the importing line) and gives the new
module itself, so every name, private ones included, and every monkeypatch reach the same object.
The old paths go in 0.17.

One old path, ``tjx.data.run_tokenizer``, is also a public name of `tjx.data` (the function
`run_tokenizer`). Importing a module sets it as an attribute of its package, which would put the
module where the function was; tjx-core's `module_moved` keeps the function there, as it was
before 0.16.
"""

from __future__ import annotations

from tjx.core.deprecation import module_moved

#: The release that moved each group of modules, by the old paths' common prefix.
MOVED_IN = {"tjx.data.chat_": "0.14", "tjx.data.run_": "0.16"}

#: Old module path → new one (the shims beside this module; a test keeps the two in step).
MOVED = {
    **{
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
    },
    **{
        f"tjx.data.run_{name}": f"tjx.data.run.{name}"
        for name in ("config", "data", "prepare", "rules", "setup", "tokenizer")
    },
}
REMOVED_IN = "0.17"


def alias(old: str) -> None:
    """Make the module path ``old`` the module it moved to, with a `DeprecationWarning`.

    Called from the body of the old path's module, which Python then replaces by the new module.

    Parameters
    ----------
    old : str
        The old module path, a key of `MOVED` (the calling module's ``__name__``).
    """
    since = next(version for prefix, version in MOVED_IN.items() if old.startswith(prefix))
    module_moved(
        old, MOVED[old], since=f"tjx-data {since}", removed_in=REMOVED_IN, callers=(__name__,)
    )
