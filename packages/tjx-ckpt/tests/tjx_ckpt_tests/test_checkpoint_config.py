"""A run's checkpoint settings: each is an argument of the manager, declared once with its help
and bounds, and reading them loads neither orbax nor jax."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

from tjx.ckpt import CheckpointConfig, CheckpointManager


def test_each_checkpoint_setting_is_a_managers_argument_with_the_same_default():
    manager = inspect.signature(CheckpointManager.__init__).parameters
    for f in dataclasses.fields(CheckpointConfig):
        assert manager[f.name].default == f.default, f.name


def test_the_managers_options_are_the_settings_and_keep_best_ranks_by_validation_loss(tmp_path):
    assert CheckpointConfig(4, None, False).manager_options() == {
        "keep_last": 4, "keep_best": None, "best_metric": None, "async_save": False,
    }  # fmt: skip
    options = CheckpointConfig(keep_best=2).manager_options()
    assert options["best_metric"] == "val_loss" and options["keep_best"] == 2
    manager = CheckpointManager(tmp_path / "ckpt", **options)  # every key is an argument
    manager.close()


def test_each_setting_declares_its_help_and_bounds():
    meta = {f.name: dict(f.metadata) for f in dataclasses.fields(CheckpointConfig)}
    assert meta == {
        "keep_last": {"min": 1, "help": "newest checkpoints kept"},
        "keep_best": {"min": 1, "help": "also keep the N lowest val_loss; null: off"},
        "async_save": {"help": "write checkpoints in the background"},
    }
    assert CheckpointConfig(keep_best=2) == CheckpointConfig(3, 2, True)


def test_the_settings_load_without_jax():
    code = (
        "import sys\n"
        "from tjx.ckpt import CheckpointConfig\n"
        "CheckpointConfig()\n"
        "assert not {'jax', 'orbax'} & set(sys.modules), sorted(sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_moved_names_still_import_from_tjx_ckpt_and_warn_once():
    """0.14 moved `setting`, standard JSON and the config engine to tjx-core; the old paths live
    one more release. A fresh process, so no earlier read has used up the one warning."""
    code = (
        "import warnings\n"
        "import tjx.ckpt\n"
        "from tjx.ckpt import standard_json as old\n"
        "from tjx.core import config, fields, standard_json\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(2):\n"
        "        assert tjx.ckpt.setting is fields.setting\n"
        "        assert old.dumps is standard_json.dumps_json\n"
        "        assert old.loads is standard_json.loads_json\n"
        "        assert tjx.ckpt.Schema is config.Schema\n"
        "        assert tjx.ckpt.load_yaml is config.load_yaml\n"
        "assert [w.category for w in caught] == [DeprecationWarning] * 5, caught\n"
        "print(caught[0].message)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "(`from tjx.core.fields import setting`)" in result.stdout, result.stdout
