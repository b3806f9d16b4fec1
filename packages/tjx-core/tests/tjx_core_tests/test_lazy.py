"""Lazy imports: written as imports, nothing loaded until a name is used, then the real objects."""

from __future__ import annotations

import builtins
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tjx.core.lazy import LazyModule, lazy_api, lazy_imports

_FILES = {
    "lzpkg/__init__.py": """
        from tjx.core.lazy import lazy_api
        from lzpkg.light import LIGHT

        def _moved(name):
            raise ImportError(f"{name} moved to elsewhere")

        with lazy_api(globals(), otherwise=_moved):
            from lzpkg.heavy import HEAVY
            from lzpkg.heavy import twice as double
    """,
    "lzpkg/light.py": "LIGHT = 1\n",
    "lzpkg/heavy.py": """
        import lzpkg.loaded as loaded
        loaded.names.append(__name__)
        HEAVY = 2
        def twice(x): return 2 * x
    """,
    "lzpkg/loaded.py": "names = []\n",
    "lzpkg/sub/__init__.py": "",
    "lzpkg/sub/deep.py": """
        import lzpkg.loaded as loaded
        loaded.names.append(__name__)
        DEEP = 3
    """,
    "lzuser.py": """
        from __future__ import annotations
        from tjx.core.lazy import lazy_imports

        with lazy_imports(globals()):
            import lzpkg.sub.deep
            import lzpkg.sub.deep as deep_alias
            from lzpkg import heavy
            from lzpkg.sub import deep

        def value() -> heavy.Missing:  # an annotation: never evaluated here
            return heavy.HEAVY + deep.DEEP
    """,
    "lzbad.py": """
        from tjx.core.lazy import lazy_imports

        with lazy_imports(globals()):
            from lzpkg.heavy import HEAVY
    """,
    "lzclash/__init__.py": """
        from tjx.core.lazy import lazy_api

        with lazy_api(globals()):
            from lzclash.rules import rules
    """,
    "lzclash/rules.py": "def rules(): pass\n",
}


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The modules above on sys.path, forgotten afterwards; yields the list of heavy loads."""
    for name, text in _FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    import lzpkg.loaded  # pants: no-infer-dep

    yield lzpkg.loaded.names
    for mod in [m for m in sys.modules if m.startswith(("lzpkg", "lzuser", "lzbad", "lzclash"))]:
        del sys.modules[mod]


def test_a_package_api_loads_each_name_on_first_access_and_keeps_it(tree: list[str]) -> None:
    import lzpkg  # pants: no-infer-dep

    assert lzpkg.LIGHT == 1 and tree == []  # the eager name, nothing heavy yet
    assert {"HEAVY", "double", "LIGHT"} <= set(dir(lzpkg)) and tree == []
    assert lzpkg.double(4) == 8 and tree == ["lzpkg.heavy"]
    from lzpkg import HEAVY  # pants: no-infer-dep

    assert HEAVY == 2 and vars(lzpkg)["HEAVY"] == 2  # a plain attribute from now on
    assert tree == ["lzpkg.heavy"]


def test_a_name_the_package_lacks_goes_to_otherwise(tree: list[str]) -> None:
    import lzpkg  # pants: no-infer-dep

    with pytest.raises(ImportError, match="gone moved to elsewhere"):
        lzpkg.gone  # noqa: B018
    assert tree == []


def test_lazy_modules_load_on_first_attribute_and_read_as_the_modules(tree: list[str]) -> None:
    import lzuser  # pants: no-infer-dep

    assert isinstance(lzuser.heavy, LazyModule) and isinstance(lzuser.deep, LazyModule)
    assert tree == []
    assert "lzpkg.heavy" in repr(lzuser.heavy) and tree == []
    assert lzuser.value() == 5
    assert tree == ["lzpkg.heavy", "lzpkg.sub.deep"]
    assert lzuser.lzpkg.sub.deep.DEEP == 3 and lzuser.deep_alias.DEEP == 3  # `import a.b (as x)`
    assert "DEEP" in dir(lzuser.deep)


def test_two_submodules_of_one_package_in_one_block_are_both_known(tree: list[str]) -> None:
    namespace = {"__name__": "lztwo"}
    with lazy_imports(namespace):
        exec("import lzpkg.sub.deep\nimport lzpkg.heavy", namespace)
    lzpkg = namespace["lzpkg"]
    assert isinstance(lzpkg.sub.deep, LazyModule) and tree == []  # nothing loaded to find it
    assert lzpkg.sub.deep.DEEP == 3 and lzpkg.heavy.HEAVY == 2


def test_a_lazy_import_of_a_name_not_a_module_says_how_to_write_it(tree: list[str]) -> None:
    import lzbad  # pants: no-infer-dep

    with pytest.raises(ImportError, match=r"lzpkg.heavy.HEAVY is not a module.*read `.HEAVY`"):
        lzbad.HEAVY.real  # noqa: B018


def test_a_lazy_module_that_is_not_there_is_python_s_error_at_first_use(tree: list[str]) -> None:
    namespace = {"__name__": "lzmissing"}
    with lazy_imports(namespace):
        exec("import lzpkg.absent\nfrom lzpkg import gone", namespace)
    with pytest.raises(ModuleNotFoundError, match="No module named 'lzpkg.absent'"):
        namespace["lzpkg"].absent.x  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ModuleNotFoundError, match="No module named 'lzpkg.gone'"):
        namespace["gone"].x  # type: ignore[attr-defined]  # noqa: B018


def test_a_lazy_name_that_is_also_its_submodule_is_refused_at_import(tree: list[str]) -> None:
    with pytest.raises(ValueError, match="lzclash.rules is both a submodule and a lazy name"):
        import lzclash  # noqa: F401  # pants: no-infer-dep


def test_only_the_blocks_own_module_is_deferred_and_the_hook_is_put_back() -> None:
    python_import = builtins.__import__
    seen: list[object] = []

    # Another module's import (its own globals) while the block runs: Python's own.
    other = {"seen": seen}
    with lazy_imports(globals()):
        thread = threading.Thread(target=exec, args=("import json; seen.append(json)", other))
        thread.start()
        thread.join()
        import tjx_core_never_exists as never  # type: ignore[import-not-found]  # pants: no-infer-dep
    assert builtins.__import__ is python_import
    assert isinstance(never, LazyModule)  # deferred: a missing module fails at first use only
    assert seen and not isinstance(seen[0], LazyModule) and hasattr(seen[0], "dumps")


def test_a_relative_or_plain_import_in_the_wrong_block_is_an_error() -> None:
    namespace = {"__name__": "somepkg"}
    with pytest.raises(ImportError, match="`from ... import name`, not"), lazy_api(namespace):
        exec("import json", namespace)
    namespace = {"__name__": "somepkg"}
    with pytest.raises(ImportError, match="must be absolute"), lazy_imports(namespace):
        exec("from . import x", namespace)
    assert builtins.__import__ is not None


def test_an_unknown_name_is_an_attribute_error_and_a_second_block_is_refused() -> None:
    namespace: dict[str, object] = {"__name__": "lzapi"}
    with lazy_api(namespace):
        exec("from json import dumps", namespace)
    getattr_ = namespace["__getattr__"]
    assert callable(getattr_) and getattr_("dumps")("x") == '"x"'
    with pytest.raises(AttributeError, match="module 'lzapi' has no attribute 'loads'"):
        getattr_("loads")
    with pytest.raises(ValueError, match="lzapi defines __getattr__ itself"), lazy_api(namespace):
        pass
    with lazy_imports(namespace):
        exec("import tjx_core_no_such_top", namespace)
    with pytest.raises(ModuleNotFoundError, match="tjx_core_no_such_top"):
        namespace["tjx_core_no_such_top"].x  # type: ignore[attr-defined]  # noqa: B018
