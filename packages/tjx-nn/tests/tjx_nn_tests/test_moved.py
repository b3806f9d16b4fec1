"""The module paths 0.20 moved into subpackages (``tjx.nn.hf_io`` → ``tjx.nn.hf.io``) still import,
for one release, with a warning; nothing in tjx-nn itself uses them."""

import importlib
import sys
import warnings
from pathlib import Path

import pytest
from tjx_moved_paths import old_path_importers, shim_modules

import tjx.nn
from tjx.nn.hf import checkpoints
from tjx.nn.moe import layer
from tjx.nn.moved import MOVED
from tjx.nn.preference import losses

SRC = Path(tjx.nn.__file__).parent


def test_every_old_path_has_a_shim_and_every_shim_is_listed():
    assert shim_modules(SRC, "tjx.nn") == set(MOVED)
    assert len(MOVED) == 18  # 13 hf_*, 3 moe_*, 2 preference_* (hf, moe, preference: packages)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_once_and_is_the_new_module(old):
    sys.modules.pop(old, None)  # an earlier import in this process would not run the shim again
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}") as record:
        module = importlib.import_module(old)
        again = importlib.import_module(old)
    assert module is again is importlib.import_module(MOVED[old])
    assert len(record) == 1


@pytest.mark.parametrize(
    ("package", "home", "name"),
    [
        ("tjx.nn.hf", checkpoints, "llama_config_from_hf"),  # imported by the old tjx.nn.hf
        ("tjx.nn.hf", checkpoints, "_REFUSED"),
        ("tjx.nn.moe", layer, "Array"),
        ("tjx.nn.preference", losses, "Batch"),
    ],
)
def test_a_name_the_old_module_held_reads_from_its_package_with_a_warning(package, home, name):
    with pytest.warns(DeprecationWarning, match=f"{package}.{name} is {home.__name__}.{name}"):
        value = getattr(importlib.import_module(package), name)
    assert value is getattr(home, name)


def test_a_name_no_old_module_held_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="'tjx.nn.hf' has no attribute 'nothing'"):
        _ = importlib.import_module("tjx.nn.hf").nothing


def test_the_package_s_public_names_come_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from tjx.nn.hf import HF_MODEL_TYPES, load_hf  # noqa: F401
        from tjx.nn.moe import MoE, moe_layers  # noqa: F401
        from tjx.nn.preference import check_preference_run, preference_loss_fn  # noqa: F401


def test_no_module_of_tjx_nn_imports_an_old_path():
    assert old_path_importers(SRC, "tjx.nn", MOVED) == {}


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("tjx.nn.fields", "choice", "tjx.core.config.values"),
        ("tjx.nn.fields", "positive", "tjx.core.config.values"),
        ("tjx.nn.fields", "rate", "tjx.core.config.values"),
        ("tjx.nn.family_config", "check_family", "tjx.nn.configs"),
        ("tjx.nn.config_checks", "choice", "tjx.core.config.values"),
        ("tjx.nn.config_checks", "rate", "tjx.core.config.values"),
        ("tjx.nn.config_checks", "check_sizes", "tjx.nn.configs"),
        ("tjx.nn.config_checks", "check_unused", "tjx.nn.configs"),
        ("tjx.nn.config_checks", "LAYER_KINDS", "tjx.nn.configs"),
    ],
)
def test_a_config_check_read_from_its_old_module_is_its_new_home_s_with_one_warning(old, name, new):
    module = importlib.import_module(old)
    match = f"{old}.{name} moved to {new}.{name}"
    with pytest.warns(DeprecationWarning, match=match) as record:
        first = getattr(module, name)
        again = getattr(module, name)
    assert first is again is getattr(importlib.import_module(new), name)
    assert len(record) == 1


def test_every_name_config_checks_held_reads_from_its_new_home():
    from tjx.nn import config_checks

    for name, new in config_checks.MOVED_TO.items():
        assert hasattr(importlib.import_module(new), name), (name, new)
