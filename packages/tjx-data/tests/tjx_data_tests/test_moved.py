"""The module paths 0.14 moved into ``tjx.data.chat`` (``tjx.data.chat_run`` →
``tjx.data.chat.run``) still import, for one release, with a warning; nothing in tjx-data itself
uses them."""

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
    assert len(MOVED) == 9  # the nine chat_* modules


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


def test_tjx_data_s_public_names_come_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from tjx.data import ChatLoader, ChatTemplate, prepare_chat_run_data  # noqa: F401
        from tjx.data.chat.run import ChatRunData  # noqa: F401


def test_no_module_of_tjx_data_imports_an_old_path():
    assert old_path_importers(SRC, "tjx.data", MOVED) == {}
