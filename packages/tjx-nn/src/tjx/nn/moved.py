"""The module paths that moved in tjx-nn 0.20, and the aliases that keep them importable for one
release.

0.20 grouped the modules named by a prefix into subpackages (``tjx.nn.hf_io`` is now
``tjx.nn.hf.io``, ``tjx.nn.moe_config`` ``tjx.nn.moe.config``, ...). Each old path is a
three-line module that calls `alias` (tjx-core's `module_moved`, the one mechanism every package
uses): importing it warns once (a `DeprecationWarning` pointing at the importing line) and gives
the new module itself, so every name, private ones included, and every monkeypatch reach the
same object. The old paths go in 0.24 (kept through 0.22 and 0.23).

Three old modules are now packages of the same path (``tjx.nn.hf``, ``tjx.nn.moe``,
``tjx.nn.preference``): their public names are the package's; any other name the old module
held (one it imported, a private one) still reads through `former_name`, with a warning.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

from tjx.core.deprecation import module_moved

#: Old module path → new one (the shims beside this module; a test keeps the two in step).
MOVED = {
    **{
        f"tjx.nn.hf_{name}": f"tjx.nn.hf.{name}"
        for name in (
            "config",
            "deepseek",
            "deepseek_tensors",
            "families",
            "family_base",
            "family_tensors",
            "gemma",
            "gpt2",
            "io",
            "llama",
            "moe",
            "phi3",
            "start",
        )
    },
    **{f"tjx.nn.moe_{name}": f"tjx.nn.moe.{name}" for name in ("config", "dispatch", "parallel")},
    **{f"tjx.nn.preference_{name}": f"tjx.nn.preference.{name}" for name in ("rules", "steps")},
}
REMOVED_IN = "0.24"


def alias(old: str) -> None:
    """Make the module path ``old`` the module it moved to, with a `DeprecationWarning`.

    Called from the body of the old path's module, which Python then replaces by the new module
    (the import system returns what ``sys.modules`` holds once the body has run).

    Parameters
    ----------
    old : str
        The old module path, a key of `MOVED` (the calling module's ``__name__``).
    """
    module_moved(old, MOVED[old], since="tjx-nn 0.20", removed_in=REMOVED_IN, callers=(__name__,))


def former_name(package: str, module: ModuleType, name: str) -> Any:
    """A name of the module that ``package``'s path named before 0.20, with a `DeprecationWarning`.

    A package's ``__getattr__`` (PEP 562) calls it for the names it does not define itself.

    Parameters
    ----------
    package : str
        The package (``tjx.nn.hf``), the calling ``__init__``'s ``__name__``.
    module : ModuleType
        The module the old module's code now lives in (``tjx.nn.hf.checkpoints``).
    name : str
        The attribute asked for.

    Returns
    -------
    Any
        ``module``'s attribute ``name``.

    Raises
    ------
    AttributeError
        ``module`` has no such name either (so ``from package import submodule`` goes on to
        import the submodule).
    """
    if name.startswith("__") or not hasattr(module, name):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    warnings.warn(
        f"{package}.{name} is {module.__name__}.{name} since tjx-nn 0.20: import it from there; "
        f"the old path goes in {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(module, name)
