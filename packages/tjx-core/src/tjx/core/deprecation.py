"""Names that moved to another module: the old path keeps working for one release and warns once.

A package whose public name moved (to tjx.core, say) sets its module's PEP 562 ``__getattr__`` to
`moved(...)`; ``from tjx.ckpt import setting`` then returns ``tjx.core.fields.setting`` with one
DeprecationWarning that names the new import.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved"]


def moved(module: str, targets: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves names now defined elsewhere.

    Parameters
    ----------
    module : str
        The old module's name (``__name__``), for the messages.
    targets : Mapping[str, str]
        Old name → ``"new.module"`` (same name there) or ``"new.module:new_name"``.

    Returns
    -------
    Callable[[str], Any]
        The ``__getattr__``: a moved name is imported from its new module, with a
        DeprecationWarning the first time each name is read; any other name is an AttributeError.
    """
    warned: set[str] = set()

    def attribute(name: str) -> Any:
        target = targets.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new_module, _, new_name = target.partition(":")
        new_name = new_name or name
        if name not in warned:
            warned.add(name)
            # stacklevel 2: the warning points at the user's import or attribute read.
            warnings.warn(
                f"{module}.{name} moved to {new_module}.{new_name}: import it from there "
                f"(`from {new_module} import {new_name}`); the old name goes in the next release",
                DeprecationWarning,
                stacklevel=2,
            )
        return getattr(importlib.import_module(new_module), new_name)

    return attribute
