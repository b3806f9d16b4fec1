"""tjx.core: the ideas every tjx package shares, one copy each.

- `setting` (``tjx.core.fields``): how a config field is declared, its default and metadata;
- `LOGICAL_AXES` (``tjx.core.axes``): the logical axis names models use and sharding rules map;
- standard JSON (``tjx.core.standard_json``): NaN and infinities written as ``null`` named in a
  ``"nonfinite"`` entry, and read back (`dumps_json`, `loads_json`, ...);
- `warning_lines` (``tjx.core.console``): Python's warnings shown as one ``prog: warning: ...``
  line each, for a command's terminal;
- `moved`, `module_moved` (``tjx.core.deprecation``): an old import path (a name, a whole module)
  that warns once for one release; `moved_out`: a name that left for an app, an ImportError
  naming its new home (`moved_to_trainer`: the messages of names that went to the trainer);
- `lazy_imports`, `lazy_api` (``tjx.core.lazy``, imported on its own): imports written as imports,
  loaded on first use: the one lazy-import idiom of every package and app;
- the config engine (``tjx.core.config``, imported on its own): `Schema`, `ConfigError`,
  `ConfigFiles`, `load_yaml`... a run's config as typed dataclass sections, read strictly.

``import tjx.core`` needs the standard library only (``tjx.core.config`` adds PyYAML); every
other tjx package may import it (the bottom floor of docs/architecture.md's DAG).
"""

from __future__ import annotations

from tjx.core.axes import LOGICAL_AXES
from tjx.core.console import warning_line, warning_lines
from tjx.core.deprecation import module_moved, moved, moved_out, moved_to_trainer
from tjx.core.fields import setting
from tjx.core.standard_json import (
    NONFINITE_KEY,
    dumps_json,
    from_standard_json,
    loads_json,
    to_standard_json,
)

__version__ = "0.7.0"

__all__ = [
    "LOGICAL_AXES",
    "NONFINITE_KEY",
    "__version__",
    "dumps_json",
    "from_standard_json",
    "loads_json",
    "module_moved",
    "moved",
    "moved_out",
    "moved_to_trainer",
    "setting",
    "to_standard_json",
    "warning_line",
    "warning_lines",
]
