"""Reading a config's YAML strictly: PyYAML's safe loader, except that a key given twice is an
error.

PyYAML keeps the last of two equal keys in one mapping without a word, so a hand-edited config
with a second ``lr:`` would train with whichever came last. A run's ``config.yaml`` (`RunDir`)
and an app's own config files are read here, so both refuse it alike.
"""

from __future__ import annotations

from typing import Any

import yaml  # type: ignore[import-untyped]


class DuplicateKeyError(ValueError):
    """A mapping gives one key twice.

    Attributes
    ----------
    key : object
        The repeated key.
    line : int
        The 1-based line of its second occurrence.
    """

    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"key {key!r} is given twice (line {line}); keep one")
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(key, key_node.start_mark.line + 1)
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_yaml(text: str) -> Any:
    """The data of YAML ``text``, as ``yaml.safe_load`` reads it (no code runs).

    Raises
    ------
    DuplicateKeyError
        A mapping gives a key twice.
    yaml.YAMLError
        ``text`` is not valid YAML.
    """
    return yaml.load(text, Loader=_StrictLoader)
