"""tjx-ckpt uses orbax's public API only: what it takes from orbax is still where orbax exports
it, so an orbax upgrade that moves one fails here, naming it, and no module reaches into
``orbax.checkpoint._src``."""

from __future__ import annotations

import pathlib

import orbax.checkpoint as ocp
import pytest

import tjx.ckpt

#: Each public orbax name tjx-ckpt uses beyond the manager and its args.
USED = [
    "path.atomicity.AtomicRenameTemporaryPath",
    "path.atomicity.COMMIT_SUCCESS_FILE",
    "path.atomicity.TMP_DIR_SUFFIX",
    "path.step.Metadata",
    "path.step.standard_name_format",
    "metadata.get_step_metadata",
]


@pytest.mark.parametrize("name", USED)
def test_each_orbax_name_is_public(name: str) -> None:
    value = ocp
    for part in name.split("."):
        assert hasattr(value, part), f"orbax {ocp.__version__} no longer exports ocp.{name}"
        value = getattr(value, part)


def test_no_module_imports_orbax_internals() -> None:
    package = pathlib.Path(tjx.ckpt.__file__).parent
    for path in sorted(package.glob("*.py")):
        assert "orbax.checkpoint._src" not in path.read_text(), path.name
