"""tjx.core.config: a run's config as a tree of typed dataclass sections, read strictly.

`Schema` walks the sections (their fields declared with `tjx.core.fields.setting`), reads them from
plain data and ``--set`` text (`apply_overrides`, `parse_override`), checks each value by its
field's metadata (`check_field`, `convert`) and writes them back; `ConfigFiles` reads an app's
presets and YAML files with ``base:`` inheritance; `load_yaml` is PyYAML's safe loader that refuses
a key given twice (`DuplicateKeyError`). Every problem is one `ConfigError` naming the user's key
path. Standard library and PyYAML only: an app's command line is checked before it pays for jax.
"""

from __future__ import annotations

from tjx.core.config.files import ConfigFiles
from tjx.core.config.schema import Schema, kind_at, reworded
from tjx.core.config.text import (
    apply_overrides,
    changed,
    deep_merge,
    flatten_config,
    key_rows,
    key_table,
    parse_override,
    value_text,
)
from tjx.core.config.values import (
    ConfigError,
    check_field,
    check_unchanged,
    choices,
    convert,
    keyed,
    nested_class,
    optional,
    type_name,
)
from tjx.core.config.yaml_io import DuplicateKeyError, load_yaml

__all__ = [
    "ConfigError",
    "ConfigFiles",
    "DuplicateKeyError",
    "Schema",
    "apply_overrides",
    "changed",
    "check_field",
    "check_unchanged",
    "choices",
    "convert",
    "deep_merge",
    "flatten_config",
    "key_rows",
    "key_table",
    "keyed",
    "kind_at",
    "load_yaml",
    "nested_class",
    "optional",
    "parse_override",
    "reworded",
    "type_name",
    "value_text",
]
