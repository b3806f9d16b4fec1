"""The strict YAML reader: what yaml.safe_load reads, except a key given twice."""

from __future__ import annotations

import random

import pytest
import yaml

from tjx.core.config import DuplicateKeyError, load_yaml


def test_reads_what_safe_load_reads() -> None:
    rng = random.Random()
    data = {
        "name": f"run{rng.randrange(10**6)}",
        "optimizer": {"lr": rng.random(), "betas": [rng.random(), rng.random()], "eps": None},
        "train": {"steps": rng.randrange(1, 10**6), "flag": rng.random() < 0.5},
    }
    text = yaml.safe_dump(data, sort_keys=False)
    assert load_yaml(text) == yaml.safe_load(text) == data


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("lr: 1\nsteps: 2\nlr: 3\n", "lr", 3),
        ("optimizer:\n  lr: 1\n  lr: 2\ntrain: {}\n", "lr", 3),  # inside a section
        ("a: {b: 1, b: 2}\n", "b", 1),  # flow style
    ],
)
def test_a_key_given_twice_names_it_and_its_line(text: str, key: str, line: int) -> None:
    assert yaml.safe_load(text) is not None  # PyYAML itself keeps the last one silently
    with pytest.raises(DuplicateKeyError) as err:
        load_yaml(text)
    assert (err.value.key, err.value.line) == (key, line)
    assert str(err.value) == f"key {key!r} is given twice (line {line}); keep one"
    assert isinstance(err.value, ValueError)


def test_no_code_runs() -> None:
    with pytest.raises(yaml.YAMLError):
        load_yaml("!!python/object/apply:os.system ['true']\n")
