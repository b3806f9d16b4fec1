"""The old paths tjx-nn promised to remove in 0.24 are gone (0.25): the module paths before the 0.20
subpackages (``tjx.nn.hf_io`` → ``tjx.nn.hf.io``), the names the old ``tjx.nn.hf`` /
``tjx.nn.moe`` / ``tjx.nn.preference`` modules held besides their packages' public ones, and the
0.22 aliases (``tjx.nn.fields``, ``tjx.nn.config_checks``, ``tjx.nn.family_config.check_family``).
Each new home still holds what the old path gave. Nothing in the repository imports an old path:
Pants refuses an import no target owns (``unowned_dependency_behavior = "error"``)."""

import importlib
import sys
import warnings

import pytest

#: The module paths 0.20 moved into subpackages, old → new (the 18 removed in 0.25).
MOVED_IN_0_20 = {
    "tjx.nn.hf_config": "tjx.nn.hf.config",
    "tjx.nn.hf_deepseek": "tjx.nn.hf.deepseek",
    "tjx.nn.hf_deepseek_tensors": "tjx.nn.hf.deepseek_tensors",
    "tjx.nn.hf_families": "tjx.nn.hf.families",
    "tjx.nn.hf_family_base": "tjx.nn.hf.family_base",
    "tjx.nn.hf_family_tensors": "tjx.nn.hf.family_tensors",
    "tjx.nn.hf_gemma": "tjx.nn.hf.gemma",
    "tjx.nn.hf_gpt2": "tjx.nn.hf.gpt2",
    "tjx.nn.hf_io": "tjx.nn.hf.io",
    "tjx.nn.hf_llama": "tjx.nn.hf.llama",
    "tjx.nn.hf_moe": "tjx.nn.hf.moe",
    "tjx.nn.hf_phi3": "tjx.nn.hf.phi3",
    "tjx.nn.hf_start": "tjx.nn.hf.start",
    "tjx.nn.moe_config": "tjx.nn.moe.config",
    "tjx.nn.moe_dispatch": "tjx.nn.moe.dispatch",
    "tjx.nn.moe_parallel": "tjx.nn.moe.parallel",
    "tjx.nn.preference_rules": "tjx.nn.preference.rules",
    "tjx.nn.preference_steps": "tjx.nn.preference.steps",
}

#: Every module path removed in 0.25: the 0.20 moves, the module that aliased them, and the 0.22
#: aliases of the config checks.
REMOVED_MODULES = [
    *MOVED_IN_0_20,
    "tjx.nn.moved",
    "tjx.nn.fields",
    "tjx.nn.config_checks",
]

#: A name each removed alias module served → its home now.
ALIAS_HOMES = [
    ("tjx.nn.fields", "setting", "tjx.core.fields"),
    ("tjx.nn.fields", "choice", "tjx.core.config.values"),
    ("tjx.nn.fields", "positive", "tjx.core.config.values"),
    ("tjx.nn.fields", "rate", "tjx.core.config.values"),
    ("tjx.nn.config_checks", "choice", "tjx.core.config.values"),
    ("tjx.nn.config_checks", "positive", "tjx.core.config.values"),
    ("tjx.nn.config_checks", "rate", "tjx.core.config.values"),
    ("tjx.nn.config_checks", "LAYER_KINDS", "tjx.nn.attention_config"),
    ("tjx.nn.config_checks", "check_sizes", "tjx.nn.cross_checks"),
    ("tjx.nn.config_checks", "check_rope", "tjx.nn.cross_checks"),
    ("tjx.nn.config_checks", "check_rope_scaling", "tjx.nn.cross_checks"),
    # check_relative's rule (no window with T5's relative bias) is check_window's.
    ("tjx.nn.config_checks", "check_window", "tjx.nn.cross_checks"),
    ("tjx.nn.config_checks", "check_deepseek_mla", "tjx.nn.cross_checks"),
    ("tjx.nn.config_checks", "check_mla", "tjx.nn.cross_checks"),
    ("tjx.nn.config_checks", "check_family", "tjx.nn.cross_checks"),
    ("tjx.nn.config_checks", "check_unused", "tjx.nn.cross_checks"),
    ("tjx.nn.family_config", "check_family", "tjx.nn.cross_checks"),
]

#: Names the old single modules tjx.nn.hf / moe / preference held besides their packages' public
#: ones: package, name, the module that holds it now.
FORMER_NAMES = [
    ("tjx.nn.hf", "llama_config_from_hf", "tjx.nn.hf.plan"),  # the old module imported it
    ("tjx.nn.hf", "_REFUSED", "tjx.nn.hf.plan"),
    ("tjx.nn.moe", "Array", "tjx.nn.moe.layer"),
    ("tjx.nn.preference", "Batch", "tjx.nn.preference.losses"),
]


@pytest.mark.parametrize("old", REMOVED_MODULES)
def test_the_paths_that_were_to_go_in_0_24_no_longer_import(old):
    sys.modules.pop(old, None)
    with pytest.raises(ModuleNotFoundError) as raised:
        importlib.import_module(old)
    assert raised.value.name == old


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_IN_0_20.items()))
def test_each_moved_module_imports_from_its_subpackage(old, new):
    module = importlib.import_module(new)
    assert module.__name__ == new
    package, _, name = new.rpartition(".")
    assert getattr(importlib.import_module(package), name) is module


@pytest.mark.parametrize(("old", "name", "new"), ALIAS_HOMES)
def test_each_name_a_removed_alias_served_is_in_its_new_home(old, name, new):
    assert hasattr(importlib.import_module(new), name)


def test_family_config_keeps_its_constants_but_not_the_check_family_alias():
    from tjx.nn import cross_checks, family_config

    with pytest.raises(AttributeError):
        _ = family_config.check_family
    with pytest.raises(ImportError):
        from tjx.nn.family_config import check_family  # noqa: F401
    assert family_config.QK_NORM_SCOPES == ("head", "projection")
    assert "norm.plus_one" in family_config.DECODER_ONLY
    assert callable(cross_checks.check_family)


@pytest.mark.parametrize(("package", "name", "home"), FORMER_NAMES)
def test_a_name_only_the_old_module_held_is_no_longer_the_package_s(package, name, home):
    with pytest.raises(AttributeError, match=f"'{package}' has no attribute '{name}'"):
        getattr(importlib.import_module(package), name)
    assert hasattr(importlib.import_module(home), name)


def test_the_packages_keep_their_public_names_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        hf = importlib.import_module("tjx.nn.hf")
        moe = importlib.import_module("tjx.nn.moe")
        preference = importlib.import_module("tjx.nn.preference")
        for package in (hf, moe, preference):
            assert package.__all__
            for name in package.__all__:
                assert getattr(package, name) is not None, (package.__name__, name)
        from tjx.nn.hf import HF_MODEL_TYPES, load_hf  # noqa: F401
        from tjx.nn.moe import MoE, moe_layers  # noqa: F401
        from tjx.nn.preference import check_preference_run, preference_loss_fn  # noqa: F401
    assert hf.load_hf is importlib.import_module("tjx.nn.hf.checkpoints").load_hf
    assert moe.MoE is importlib.import_module("tjx.nn.moe.layer").MoE
    losses = importlib.import_module("tjx.nn.preference.losses")
    assert preference.preference_loss is losses.preference_loss
