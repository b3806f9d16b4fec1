"""The module paths 0.14 moved into ``tjx.data.chat`` (``tjx.data.chat_run`` →
``tjx.data.chat.run``) and 0.16 into ``tjx.data.run`` (``tjx.data.run_setup`` →
``tjx.data.run.setup``) were promised to go in 0.17: since 0.17.1 they no longer import, and each
new home still holds the names. Nothing in the repository imports an old path: Pants refuses an
import no target owns (``unowned_dependency_behavior = "error"``)."""

import importlib
import sys
import warnings

import pytest

import tjx.data

#: Old module path → new one (the 15 removed in 0.17.1).
MOVED = {
    "tjx.data.chat_encode": "tjx.data.chat.encode",
    "tjx.data.chat_loader": "tjx.data.chat.loader",
    "tjx.data.chat_packing": "tjx.data.chat.packing",
    "tjx.data.chat_prepare": "tjx.data.chat.prepare",
    "tjx.data.chat_run": "tjx.data.chat.run",
    "tjx.data.chat_sandbox": "tjx.data.chat.sandbox",
    "tjx.data.chat_store": "tjx.data.chat.store",
    "tjx.data.chat_tasks": "tjx.data.chat.tasks",
    "tjx.data.chat_template": "tjx.data.chat.template",
    "tjx.data.run_config": "tjx.data.run.config",
    "tjx.data.run_data": "tjx.data.run.data",
    "tjx.data.run_prepare": "tjx.data.run.prepare",
    "tjx.data.run_rules": "tjx.data.run.rules",
    "tjx.data.run_setup": "tjx.data.run.setup",
    "tjx.data.run_tokenizer": "tjx.data.run.tokenizer",
}

#: Every module path removed in 0.17.1: the moves and the module that aliased them.
REMOVED_MODULES = [*MOVED, "tjx.data.moved"]

#: A public name of `tjx.data` that each new home holds (the homes that export one).
HOME_NAMES = [
    ("tjx.data.chat.encode", "ChatEncoder"),
    ("tjx.data.chat.loader", "ChatLoader"),
    ("tjx.data.chat.prepare", "prepare_chat_data"),
    ("tjx.data.chat.run", "ChatRunData"),
    ("tjx.data.chat.store", "write_sequences"),
    ("tjx.data.chat.tasks", "reverse_rows"),
    ("tjx.data.chat.template", "ChatTemplate"),
    ("tjx.data.run.config", "DataConfig"),
    ("tjx.data.run.data", "RunData"),
    ("tjx.data.run.prepare", "prepare_run_data"),
    ("tjx.data.run.rules", "check_data_config"),
    ("tjx.data.run.setup", "run_loader"),
    ("tjx.data.run.tokenizer", "run_tokenizer"),
]


@pytest.mark.parametrize("old", REMOVED_MODULES)
def test_the_paths_that_were_to_go_in_0_17_no_longer_import(old):
    sys.modules.pop(old, None)
    with pytest.raises(ModuleNotFoundError) as raised:
        importlib.import_module(old)
    assert raised.value.name == old


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_each_moved_module_imports_from_its_subpackage(old, new):
    module = importlib.import_module(new)
    assert module.__name__ == new
    package, _, name = new.rpartition(".")
    assert getattr(importlib.import_module(package), name) is module


@pytest.mark.parametrize(("home", "name"), HOME_NAMES)
def test_tjx_data_s_public_names_are_their_new_home_s(home, name):
    assert getattr(tjx.data, name) is getattr(importlib.import_module(home), name)


def test_tjx_data_run_tokenizer_is_still_the_function_not_a_module():
    # The old module path of the same name is gone; the package's attribute is the function.
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tjx.data.run_tokenizer")
    from tjx.data import run_tokenizer
    from tjx.data.run import tokenizer

    assert callable(tjx.data.run_tokenizer)
    assert tjx.data.run_tokenizer is run_tokenizer is tokenizer.run_tokenizer


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
