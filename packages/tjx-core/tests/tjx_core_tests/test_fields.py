"""`setting` declares a config field: its default (or a factory) and the metadata apps read."""

# `setting` is a field specifier, called in a dataclass body by design.
# ruff: noqa: RUF009

from __future__ import annotations

import dataclasses

import numpy as np

from tjx.core import setting


@dataclasses.dataclass(frozen=True)
class _Inner:
    built = 0  # how many instances were made

    def __post_init__(self) -> None:
        type(self).built += 1


@dataclasses.dataclass(frozen=True)
class _Section:
    lr: float = setting(3e-4, gt=0, help="peak learning rate", resumable=True)
    names: list[str] = setting(list, factory=True, help="a list: one per instance")
    inner: _Inner = setting(_Inner(), help="a frozen section: one instance, shared")


def test_a_setting_carries_its_default_and_every_metadata_key_given() -> None:
    fields = {f.name: f for f in dataclasses.fields(_Section)}
    assert fields["lr"].default == 3e-4
    assert dict(fields["lr"].metadata) == {"gt": 0, "help": "peak learning rate", "resumable": True}
    assert _Section().lr == 3e-4 and _Section(lr=1e-3).lr == 1e-3


def test_a_factory_setting_gives_each_instance_its_own_value() -> None:
    rng = np.random.default_rng(53)
    first, second = _Section(), _Section()
    word = f"w{int(rng.integers(1000))}"
    first.names.append(word)
    assert first.names == [word] and second.names == []
    field = {f.name: f for f in dataclasses.fields(_Section)}["names"]
    assert field.default is dataclasses.MISSING and field.default_factory is list


def test_a_frozen_sections_default_is_one_instance_shared_and_not_built_again() -> None:
    before = _Inner.built
    first, second = _Section(), _Section(lr=1e-3)
    assert first.inner is second.inner and _Inner.built == before
    field = {f.name: f for f in dataclasses.fields(_Section)}["inner"]
    assert field.default is first.inner and field.default_factory is dataclasses.MISSING
