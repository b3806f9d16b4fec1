"""A moved name keeps working at its old path for one release and warns once, naming the new one."""

from __future__ import annotations

import warnings

import pytest

from tjx.core import moved
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
