"""Imports written as imports, loaded on first use: the one lazy-import idiom of tjx.

An app's command line must answer ``--help`` or refuse a bad flag before it pays for JAX
(seconds), so a module on that path may not import tjx.nn at its top; and a package's
``__init__`` keeps its light names eager and its heavy ones (orbax, Pallas) for first use. Both
are written as ordinary import statements inside a block, which type checkers, linters and
dependency inference read as the imports they are::

    from tjx.core.lazy import lazy_imports

    with lazy_imports(globals()):  # a module: each name is a module, loaded on first attribute
        from tjx import nn, optim

    with lazy_api(globals()):  # a package's __init__: each name is loaded on first access
        from tjx.ckpt.manager import CheckpointManager

The shape is etils' ``epy.lazy_imports`` / ``epy.lazy_api_imports``; tjx keeps its own so that
tjx-core stays on the standard library (tjx-kernels and tjx-parallel do not depend on etils), so
that an import another thread makes meanwhile stays eager (only the block's own module is
deferred), and so that a package can answer names it no longer has (``otherwise``).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import importlib
import threading
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["LazyModule", "lazy_api", "lazy_imports"]

# builtins.__import__ is replaced only while a block runs, and only the block's own module (its
# globals, which every import statement passes) is deferred: a thread importing meanwhile gets
# Python's import. The lock keeps two blocks on two threads from restoring each other's hook.
_LOCK = threading.RLock()
_ACTIVE: dict[int, Callable[..., Any]] = {}  # id(globals) → what an import there returns
_PYTHON_IMPORT = [builtins.__import__]  # the hook in place when the first block began


def _hook(
    name: str,
    globals: Mapping[str, object] | None = None,  # builtins.__import__'s parameter names
    locals: Mapping[str, object] | None = None,
    fromlist: Sequence[str] | None = (),
    level: int = 0,
) -> types.ModuleType:
    handler = _ACTIVE.get(id(globals)) if globals is not None else None
    if handler is None:
        return _PYTHON_IMPORT[0](name, globals, locals, fromlist or (), level)
    if level:
        raise ImportError(f"a lazy import must be absolute: `from {'.' * level}{name} import ...`")
    module: types.ModuleType = handler(name, tuple(fromlist or ()))
    return module


@contextlib.contextmanager
def _deferring(namespace: dict[str, Any], handler: Callable[..., Any]) -> Iterator[None]:
    with _LOCK:
        if not _ACTIVE:
            _PYTHON_IMPORT[0] = builtins.__import__
            builtins.__import__ = _hook
        _ACTIVE[id(namespace)] = handler
    try:
        yield
    finally:
        with _LOCK:
            del _ACTIVE[id(namespace)]
            if not _ACTIVE:
                builtins.__import__ = _PYTHON_IMPORT[0]


class LazyModule(types.ModuleType):
    """A module imported on the first read of one of its attributes (`lazy_imports`' names).

    Parameters
    ----------
    name : str
        The module's dotted name (``"tjx.nn"``).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        # Submodules named by the same statement (``import a.b`` binds ``a``; ``a.b`` is lazy too).
        self.__dict__["_lazy_children"] = {}

    def _lazy_child(self, name: str) -> LazyModule:
        children: dict[str, LazyModule] = self.__dict__["_lazy_children"]
        return children.setdefault(name, LazyModule(f"{self.__name__}.{name}"))

    def _lazy_load(self) -> types.ModuleType:
        try:
            return importlib.import_module(self.__name__)
        except ModuleNotFoundError as err:
            parent, _, attr = self.__name__.rpartition(".")
            if err.name != self.__name__ or not parent:
                raise
            try:
                value = getattr(importlib.import_module(parent), attr)
            except (ImportError, AttributeError):
                value = None
            if value is None or isinstance(value, types.ModuleType):
                raise err from None  # a module that is not there (not installed)
            # `from tjx.nn import TransformerConfig` in a lazy block: a name, not a module.
            raise ImportError(
                f"{self.__name__} is not a module: a lazy import names modules only; import "
                f"{parent} lazily and read `.{attr}` from it"
            ) from err

    def __getattr__(self, attr: str) -> Any:
        # Only names this object lacks get here: the module's own, and its known submodules.
        children: dict[str, LazyModule] = self.__dict__["_lazy_children"]
        if attr in children:
            return children[attr]
        return getattr(self._lazy_load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._lazy_load())

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}>"


def _lazy_module(namespace: dict[str, Any], name: str, fromlist: tuple[str, ...]) -> LazyModule:
    top, *parts = name.split(".")
    root = namespace.get(top)
    if fromlist or not isinstance(root, LazyModule) or root.__name__ != top:
        root = LazyModule(top)
    # else `import a.b` after `import a.c` in one block: the one ``a`` knows both submodules.
    inner = root
    for part in parts:
        inner = inner._lazy_child(part)
    for item in fromlist:  # `from a.b import c`: c is read from the returned a.b
        inner._lazy_child(item)
    # `import a.b` binds a; `from a.b import c` and `import a.b as x` read from a.b.
    return inner if fromlist else root


@contextlib.contextmanager
def lazy_imports(namespace: dict[str, Any]) -> Iterator[None]:
    """Defer the module imports written inside the block to the first use of each module.

    Each ``import a.b``, ``import a.b as x`` or ``from a import b`` in the block binds a
    `LazyModule` that imports its module on the first attribute read (``nn.MODEL_KINDS``) and
    forwards every read to it; nothing is imported when the block runs. Only modules can be
    named: a class or function (``from tjx.nn import TransformerConfig``) is read from its
    lazy module instead (``nn.TransformerConfig``). With ``from __future__ import annotations``,
    annotations such as ``nn.TransformerConfig`` cost nothing until evaluated.

    Parameters
    ----------
    namespace : dict
        The importing module's ``globals()``: imports made there are deferred, any other
        module's (another thread's) are Python's own.

    Yields
    ------
    None
    """
    with _deferring(namespace, functools.partial(_lazy_module, namespace)):
        yield


class _Pending:
    """What a `lazy_api` block binds for ``from module import attr`` until the block ends."""

    def __init__(self, module: str, attr: str) -> None:
        self.module, self.attr = module, attr


class _From(types.ModuleType):
    def __getattr__(self, attr: str) -> _Pending:
        return _Pending(self.__name__, attr)


def _lazy_from(name: str, fromlist: tuple[str, ...]) -> _From:
    if not fromlist:
        raise ImportError(f"a lazy_api block takes `from ... import name`, not `import {name}`")
    return _From(name)


@contextlib.contextmanager
def lazy_api(
    namespace: dict[str, Any], *, otherwise: Callable[[str], Any] | None = None
) -> Iterator[None]:
    """Make the names a package's ``__init__`` imports inside the block load on first access.

    Each ``from module import name`` in the block becomes a name of the package that imports
    ``module`` when first read (``tjx.ckpt.CheckpointManager``, ``from tjx.ckpt import ...``)
    and is a plain attribute afterwards; ``dir()`` lists it before. The block installs the
    package's ``__getattr__`` and ``__dir__`` (PEP 562), so it comes once, after the eager imports.

    Parameters
    ----------
    namespace : dict
        The package's ``globals()``.
    otherwise : callable, optional
        ``name -> value`` for a name the block does not import (a name that moved away, raising
        an ImportError that says where); without it, an AttributeError.

    Yields
    ------
    None

    Raises
    ------
    ValueError
        A name that is also its module's last part (``from pkg.rules import rules``): importing
        the submodule binds the module under that name, hiding the lazy one; rename one of them.
    """
    before = set(namespace)
    with _deferring(namespace, _lazy_from):
        yield
    package = namespace["__name__"]
    names: dict[str, _Pending] = {}
    for name in set(namespace) - before:
        pending = namespace[name]
        if isinstance(pending, _Pending):
            names[name] = namespace.pop(name)
    for name, pending in names.items():
        if pending.module == f"{package}.{name}":
            raise ValueError(
                f"{package}.{name} is both a submodule and a lazy name: importing the submodule "
                "would hide the name; rename the submodule"
            )
    for hook in ("__getattr__", "__dir__"):
        if hook in namespace:
            raise ValueError(f"{package} defines {hook} itself: lazy_api installs it")

    def __getattr__(name: str) -> Any:  # noqa: N807 (PEP 562's name)
        pending = names.get(name)
        if pending is None:
            if otherwise is not None:
                return otherwise(name)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(pending.module), pending.attr)
        namespace[name] = value  # later reads are plain attribute reads
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*namespace, *names})

    namespace["__getattr__"] = __getattr__
    namespace["__dir__"] = __dir__
