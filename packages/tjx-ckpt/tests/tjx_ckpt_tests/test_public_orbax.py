"""tjx-ckpt uses orbax's public API, but for one module: what it takes from orbax is still where
orbax exports it, so an orbax upgrade that moves one fails here, naming it, and only
``tjx/ckpt/orbax_internals.py`` reaches into ``orbax.checkpoint._src`` (orbax has no public way to
give its arrays tensorstore's s3 store, nor to build its array handler's metadata store), for the
symbols named below."""

from __future__ import annotations

import importlib
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
    "path.atomicity.CommitFileTemporaryPath",
    "options.AtomicityOptions",
    "options.AtomicityMode.COMMIT_FILE",
]
#: The private orbax functions ``orbax_internals`` replaces for s3:// paths.
PRIVATE = [
    "orbax.checkpoint._src.serialization.tensorstore_utils._normalize_path",
    "orbax.checkpoint._src.serialization.tensorstore_utils._use_gcs_driver",
    "orbax.checkpoint._src.path.gcs_utils.get_kvstore_for_gcs",
]


@pytest.mark.parametrize("name", USED)
def test_each_orbax_name_is_public(name: str) -> None:
    value = ocp
    for part in name.split("."):
        assert hasattr(value, part), f"orbax {ocp.__version__} no longer exports ocp.{name}"
        value = getattr(value, part)


def test_only_orbax_internals_imports_orbax_internals() -> None:
    package = pathlib.Path(tjx.ckpt.__file__).parent
    for path in sorted(package.glob("*.py")):
        if path.name != "orbax_internals.py":
            assert "orbax.checkpoint._src" not in path.read_text(), path.name


@pytest.mark.parametrize("name", PRIVATE)
def test_each_private_orbax_function_orbax_internals_replaces_is_still_there(name: str) -> None:
    module, _, attr = name.rpartition(".")
    assert callable(
        getattr(importlib.import_module(module), attr)
    ), f"orbax {ocp.__version__} moved {name}: tjx.ckpt.orbax_internals must follow it"
    from tjx.ckpt import orbax_internals

    assert [f"{m.__name__}.{n}" for m, n in orbax_internals.PATCHED] == PRIVATE


def test_the_private_array_metadata_store_is_still_there() -> None:
    """``options.state_handler`` builds orbax's array handler with it (its ``array_metadatas/``
    files), as orbax's default handler does; ``orbax_internals`` names it."""
    from orbax.checkpoint._src.metadata import array_metadata_store

    from tjx.ckpt import orbax_internals

    assert callable(
        array_metadata_store.Store
    ), f"orbax {ocp.__version__} moved its array metadata store: orbax_internals must follow"
    assert orbax_internals.ArrayMetadataStore is array_metadata_store.Store
