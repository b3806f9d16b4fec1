"""A moved name keeps working at its old path for one release and warns once, naming the new one."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

from tjx.core import moved, moved_out, moved_to_trainer
from tjx.core.fields import setting


def test_a_moved_name_is_the_new_object_and_warns_once_naming_the_new_import() -> None:
    getattr_ = moved("old.place", {"setting": "tjx.core.fields", "old": "tjx.core.fields:setting"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert getattr_("setting") is setting
        assert getattr_("setting") is setting
        assert getattr_("old") is setting
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]
    assert "old.place.setting moved to tjx.core.fields.setting" in str(caught[0].message)
    assert "`from tjx.core.fields import setting`" in str(caught[1].message)


def test_a_name_that_never_existed_is_an_attribute_error() -> None:
    getattr_ = moved("old.place", {"setting": "tjx.core.fields"})
    with pytest.raises(AttributeError, match="module 'old.place' has no attribute 'nope'"):
        getattr_("nope")


def test_a_moved_module_path_is_the_new_module_and_warns_once_at_the_importing_line(
    tmp_path, monkeypatch
) -> None:
    (tmp_path / "old_place.py").write_text(
        "from tjx.core.deprecation import module_moved\n"
        "module_moved(__name__, 'tjx.core.fields', since='tjx-core 0.2', removed_in='0.3')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "old_place", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # An import statement's own call: no frame between it and here. The module is the one this
        # test wrote, not a dependency.
        __import__("old_place")  # pants: no-infer-dep
        old = sys.modules["old_place"]
        again = importlib.import_module("old_place")
    assert old is again is importlib.import_module("tjx.core.fields")
    assert [w.category for w in caught] == [DeprecationWarning]
    assert str(caught[0].message) == (
        "old_place moved to tjx.core.fields in tjx-core 0.2: import from "
        "tjx.core.fields; the old path goes in 0.3"
    )
    assert caught[0].filename == __file__


def test_an_old_module_path_that_is_also_a_name_of_its_package_leaves_that_name(
    tmp_path, monkeypatch
) -> None:
    # `pkg.tool` is a function of `pkg` and a moved module path: importing the path would let the
    # import system set the module over the function.
    package = tmp_path / "kept_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("def tool():\n    return 7\n")
    (package / "tool.py").write_text(
        "from tjx.core.deprecation import module_moved\n"
        "module_moved(__name__, 'tjx.core.fields', since='tjx-core 0.2', removed_in='0.3')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("kept_pkg", "kept_pkg.tool"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    pkg = importlib.import_module("kept_pkg")
    function = pkg.tool
    with pytest.warns(DeprecationWarning, match="kept_pkg.tool moved to tjx.core.fields"):
        module = importlib.import_module("kept_pkg.tool")
    assert module is importlib.import_module("tjx.core.fields")
    assert pkg.tool is function and pkg.tool() == 7
    pkg.other = module  # other names are set as ever
    assert pkg.other is module


def test_a_name_moved_out_to_an_app_is_an_import_error_naming_its_new_home() -> None:
    fallback = moved("old.place", {"setting": "tjx.core.fields"})
    where = {"RunDir": "in the app: `from app import RunDir`"}
    getattr_ = moved_out("old.place", where, since="pkg 0.2", otherwise=fallback)
    message = "old.place.RunDir moved out of old.place in pkg 0.2: in the app: `from app import"
    with pytest.raises(ImportError, match=message) as err:
        getattr_("RunDir")
    assert not isinstance(err.value, AttributeError)  # `from old.place import RunDir` shows it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert getattr_("setting") is setting  # the other names: the fallback's
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        getattr_("nope")
    with pytest.raises(AttributeError, match="module 'x' has no attribute 'nope'"):
        moved_out("x", {}, since="pkg 0.2")("nope")


def test_moved_to_trainer_names_each_names_import_from_the_trainer_module() -> None:
    targets = moved_to_trainer("step plan", "trainer.plan", ("A", "b"))
    assert targets == {
        "A": "a training run's step plan is the trainer app's: `from trainer.plan import A`",
        "b": "a training run's step plan is the trainer app's: `from trainer.plan import b`",
    }
    with pytest.raises(ImportError, match="moved out of m in pkg 0.3: a training run's step plan"):
        moved_out("m", targets, since="pkg 0.3")("b")
