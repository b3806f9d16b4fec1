"""The module paths 0.14 moved into ``tjx.data.chat`` (``tjx.data.chat_run`` →
``tjx.data.chat.run``) and 0.16 into ``tjx.data.run`` (``tjx.data.run_setup`` →
``tjx.data.run.setup``) still import, until 0.17, with a warning; nothing in tjx-data itself uses
them."""

import importlib
import sys
import warnings
from pathlib import Path

import pytest
from tjx_moved_paths import old_path_importers, shim_modules

import tjx.data
from tjx.data.moved import MOVED

SRC = Path(tjx.data.__file__).parent


def test_every_old_path_has_a_shim_and_every_shim_is_listed():
    assert shim_modules(SRC, "tjx.data") == set(MOVED)
    assert len(MOVED) == 15  # the nine chat_* modules and the six run_* ones


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_once_at_the_importing_line_and_is_the_new_module(old):
    sys.modules.pop(old, None)  # an earlier import in this process would not run the shim again
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}") as record:
        __import__(old)  # an import statement's own call: no frame between it and this line
        module = sys.modules[old]
        again = importlib.import_module(old)
    assert module is again is importlib.import_module(MOVED[old])
    assert len(record) == 1
    assert record[0].filename == __file__  # the line to fix, not the shim's


def test_a_monkeypatch_through_the_old_path_reaches_the_new_module(monkeypatch):
    # Both records of an earlier import go, so this one runs the shim.
    monkeypatch.delitem(sys.modules, "tjx.data.chat_prepare", raising=False)
    monkeypatch.delattr(tjx.data, "chat_prepare", raising=False)
    with pytest.warns(DeprecationWarning, match="tjx.data.chat_prepare moved"):
        from tjx.data import chat_prepare
    from tjx.data.chat import prepare

    monkeypatch.setattr(chat_prepare, "split_rows", None)
    assert prepare.split_rows is None


def test_importing_the_old_run_tokenizer_path_leaves_tjx_data_s_function_of_that_name(monkeypatch):
    # The import system sets an imported module as its package's attribute: without `alias`'s
    # guard, `tjx.data.run_tokenizer` would become the module instead of the function.
    monkeypatch.delitem(sys.modules, "tjx.data.run_tokenizer", raising=False)
    function = tjx.data.run_tokenizer
    with pytest.warns(DeprecationWarning, match="tjx.data.run_tokenizer moved"):
        from tjx.data.run_tokenizer import cache_root, run_tokenizer
    from tjx.data.run import tokenizer

    assert callable(tjx.data.run_tokenizer)
    assert tjx.data.run_tokenizer is function is run_tokenizer is tokenizer.run_tokenizer
    assert cache_root is tokenizer.cache_root
    assert sys.modules["tjx.data.run_tokenizer"] is tokenizer


def test_tjx_data_s_public_names_come_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from tjx.data import (  # noqa: F401
            ChatLoader,
            ChatTemplate,
            DataConfig,
            RunData,
            prepare_chat_run_data,
            prepare_run,
            run_tokenizer,
        )
        from tjx.data.chat.run import ChatRunData  # noqa: F401
        from tjx.data.run.setup import run_loader  # noqa: F401


def test_no_module_of_tjx_data_imports_an_old_path():
    assert old_path_importers(SRC, "tjx.data", MOVED) == {}
