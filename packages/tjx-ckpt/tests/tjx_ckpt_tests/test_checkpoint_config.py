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
