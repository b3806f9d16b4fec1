"""Names that moved to another module: the old path keeps working for one release and warns once.

A package whose public name moved (to tjx.core, say) sets its module's PEP 562 ``__getattr__`` to
`moved(...)`; ``from tjx.ckpt import setting`` then returned ``tjx.core.fields.setting`` with one
DeprecationWarning that named the new import (tjx-ckpt 0.14-0.15).

A whole module that moved (as ``tjx.nn.hf_io`` → ``tjx.nn.hf.io`` did in tjx-nn 0.20-0.24)
keeps its old path as a short module whose body calls `module_moved`: importing the old path
warns once and gives the new module itself, so every name, private ones included, and every
monkeypatch reach one object.
Where the old path is also a public name of its package (``tjx.data.run_tokenizer``, a module
path and a function), the package keeps that name: the import system would otherwise set the
module over it.

A name that moved out of a package into an app (the trainer's run directory, say) cannot be served
from its old place: a package never imports an app. `moved_out` makes reading it an ImportError
that says where it is now.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["module_moved", "moved", "moved_out", "moved_to_trainer"]


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


#: Per package, its names that are also old module paths (`_keep_package_name`).
_KEPT: dict[str, set[str]] = {}


class _KeepsItsNames(ModuleType):
    """A package some of whose names are also old module paths: after such a path is imported,
    the import system's ``setattr(package, name, module)`` leaves the package's own object."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and name in _KEPT.get(self.__name__, ()):
            return
        super().__setattr__(name, value)


def _keep_package_name(old: str) -> None:
    package, _, name = old.rpartition(".")
    parent = sys.modules.get(package)
    if parent is None or isinstance(getattr(parent, name, parent), ModuleType):
        return  # no such name, or already the module: nothing to keep
    _KEPT.setdefault(package, set()).add(name)
    if type(parent) is ModuleType:  # a plain package (one with its own class keeps it)
        parent.__class__ = _KeepsItsNames


def moved_out(
    module: str,
    targets: Mapping[str, str],
    *,
    since: str,
    otherwise: Callable[[str], Any] | None = None,
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for names that left the package for a place it cannot import.

    Parameters
    ----------
    module : str
        The old module's name (``__name__``), for the messages.
    targets : Mapping[str, str]
        Old name → where it is now and how to import it, in words (``"the trainer app: `from
        trainer import RunDir`"``).
    since : str
        The release that moved them (``"tjx-ckpt 0.15"``).
    otherwise : callable, optional
        The ``__getattr__`` for every other name (`moved`'s, say); without one, any other name
        is an AttributeError.

    Returns
    -------
    Callable[[str], Any]
        The ``__getattr__``: a name of ``targets`` raises ImportError naming its new home (an
        ImportError, not an AttributeError, so ``from PACKAGE import NAME`` shows this message
        rather than Python's bare "cannot import name").
    """

    def attribute(name: str) -> Any:
        target = targets.get(name)
        if target is not None:
            message = f"{module}.{name} moved out of {module} in {since}: {target}"
            raise ImportError(message, name=name)
        if otherwise is not None:
            return otherwise(name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return attribute


def moved_to_trainer(what: str, module: str, names: Iterable[str]) -> dict[str, str]:
    """`moved_out` targets for names that went to the trainer app, each message in one wording.

    Parameters
    ----------
    what : str
        What the names are part of, in words (``"step plan"``).
    module : str
        The trainer module to import them from (``"trainer.plan.step_plan"``).
    names : iterable of str
        The names that moved there.

    Returns
    -------
    dict of str to str
        Name → ``"a training run's <what> is the trainer app's: `from <module> import <name>`"``.
    """
    return {
        name: f"a training run's {what} is the trainer app's: `from {module} import {name}`"
        for name in names
    }


def module_moved(
    old: str, new: str, *, since: str, removed_in: str, callers: tuple[str, ...] = ()
) -> None:
    """Make the module path ``old`` the module ``new``, with one `DeprecationWarning`.

    Called from the body of the old path's module, which Python then replaces by the new module
    (the import system returns what ``sys.modules`` holds once the body has run), so a second
    import of the old path finds the new module and does not warn again.

    Parameters
    ----------
    old : str
        The old module path (the calling module's ``__name__``).
    new : str
        The module it moved to.
    since : str
        The release that moved it, for the message (``"tjx-nn 0.20"``).
    removed_in : str
        The release without the old path, for the message (``"0.21"``).
    callers : tuple[str, ...]
        Modules between the old path's body and this function (a package's own helper that calls
        it), skipped with it when the warning looks for the importing line.
    """
    _keep_package_name(old)
    sys.modules[old] = importlib.import_module(new)
    # The warning points at the line that imported the old path, past this function, the
    # callers and the old module's body, so Python's default filters show it where the importer
    # can fix it (``warnings`` skips importlib's own frames itself, so they are not counted).
    skipped = {__name__, old, *callers}
    level, frame = 1, inspect.currentframe()
    while frame is not None and frame.f_globals.get("__name__") in skipped:
        frame, level = frame.f_back, level + 1
    warnings.warn(
        f"{old} moved to {new} in {since}: import from {new}; the old path goes in {removed_in}",
        DeprecationWarning,
        stacklevel=level,
    )
