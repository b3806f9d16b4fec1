"""Named types of the plain data that crosses the trainer's seams: a config as YAML holds it, and
the JSON-like records a run writes or reports. One name per idea, so that a signature says which
blob it takes; the values are whatever YAML and JSON hold, hence ``Any`` here and nowhere else.

Standard library only: the command line imports it before JAX (``python -m trainer --help``).
"""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["ConfigData", "Record"]

#: Plain config data: the mapping of keys a preset, ``config.yaml``, ``--set`` or
#: `trainer.config.typed.Config.to_dict` holds (sections are nested mappings).
ConfigData: TypeAlias = dict[str, Any]
#: A JSON-like record the trainer writes or reports: ``final.json``, a plan's figures, the
#: scalars of a metrics line, a checkpoint's ``init.json``.
Record: TypeAlias = dict[str, Any]
