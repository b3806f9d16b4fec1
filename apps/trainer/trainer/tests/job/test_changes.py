"""What changed since a run was saved: dotted keys, the allow-list, the wording."""

from __future__ import annotations

import pytest

from tjx.core.config import flatten_config
from trainer.config.changes import ConfigChanges, config_changes, describe_changes, key_matches

SAVED = {
    "name": "a",
    "model": {"d_model": 32, "layers": [1, 2]},
    "optimizer": {"lr": 0.005, "schedule": {"name": "cosine", "warmup": 10}},
    "train": {"steps": 600},
}
CHANGEABLE = ("name", "optimizer.lr", "optimizer.schedule.", "train.steps")


def test_flatten_config() -> None:
    assert flatten_config(SAVED) == {
        "name": "a",
        "model.d_model": 32,
        "model.layers": [1, 2],  # a list is a leaf
        "optimizer.lr": 0.005,
        "optimizer.schedule.name": "cosine",
        "optimizer.schedule.warmup": 10,
        "train.steps": 600,
    }
    assert flatten_config({"a": {}, "b": None}) == {"b": None}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("train.steps", True),
        ("optimizer.schedule.warmup", True),  # inside an allowed section
        ("optimizer.schedule", False),  # the section's own name is not inside it
        ("train.steps_extra", False),  # a name that merely starts like an allowed key
        ("model.d_model", False),
        ("model.some_future_field", False),  # unknown keys must match
    ],
)
def test_key_matches(key: str, expected: bool) -> None:
    assert key_matches(key, CHANGEABLE) is expected


def test_the_same_config_has_no_changes() -> None:
    changes = config_changes(SAVED, dict(SAVED), changeable=CHANGEABLE)
    assert changes == ConfigChanges({}, {}) and not changes


def test_changes_are_split_by_the_allow_list() -> None:
    new = {
        "name": "b",
        "model": {"d_model": 64, "layers": [1, 2, 3]},
        "optimizer": {"lr": 1e-4, "schedule": {"name": "wsd", "warmup": 10}},
        "train": {"steps": 600, "seed": 1},  # a key the saved config lacks
    }
    changes = config_changes(SAVED, new, changeable=CHANGEABLE)
    assert changes
    assert changes.allowed == {
        "name": ("a", "b"),
        "optimizer.lr": (0.005, 1e-4),
        "optimizer.schedule.name": ("cosine", "wsd"),
    }
    assert changes.refused == {
        "model.d_model": (32, 64),
        "model.layers": ([1, 2], [1, 2, 3]),
        "train.seed": (None, 1),
    }
    assert list(changes.refused) == sorted(changes.refused)  # in key order


def test_what_may_change_can_be_a_test_of_each_key() -> None:
    new = {**SAVED, "name": "b", "model": {"d_model": 64, "layers": [1, 2]}}
    changes = config_changes(SAVED, new, changeable=lambda key: not key.startswith("model."))
    assert changes.allowed == {"name": ("a", "b")}
    assert changes.refused == {"model.d_model": (32, 64)}


def test_a_removed_key_is_a_change() -> None:
    new = {**SAVED, "model": {"d_model": 32}}
    assert config_changes(SAVED, new, changeable=()).refused == {"model.layers": ([1, 2], None)}


def test_describe_changes() -> None:
    diff = {"model.d_model": (32, 64), "data.source": ("shakespeare", "./x.txt")}
    assert describe_changes(diff) == "model.d_model 32 → 64, data.source 'shakespeare' → './x.txt'"
    assert describe_changes({}) == ""
