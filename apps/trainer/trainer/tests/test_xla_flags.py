"""train.gpu_autotune: flags appended to XLA_FLAGS before JAX starts, never over the user's."""

from __future__ import annotations

import pytest

from trainer.cli import main
from trainer.start.xla_flags import AUTOTUNE_FLAGS, apply_gpu_autotune


def test_off_appends_the_level_and_default_sets_nothing():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert apply_gpu_autotune("default", env) == []
    assert env == {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert apply_gpu_autotune("off", env) == ["--xla_gpu_autotune_level=0"]
    assert env["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=8 --xla_gpu_autotune_level=0"
    )
    empty: dict[str, str] = {}
    assert apply_gpu_autotune("off", empty) == list(AUTOTUNE_FLAGS["off"])
    assert empty == {"XLA_FLAGS": "--xla_gpu_autotune_level=0"}


def test_a_flag_the_user_set_wins():
    env = {"XLA_FLAGS": "--xla_gpu_autotune_level=2"}
    assert apply_gpu_autotune("off", env) == []
    assert env == {"XLA_FLAGS": "--xla_gpu_autotune_level=2"}


def test_a_bad_value_is_one_config_line(capsys, in_tmp):
    assert main(["--config", "tiny", "--set", "train.gpu_autotune=fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.gpu_autotune" in err[0] and "'off'" in err[0]
    with pytest.raises(ValueError, match="train.gpu_autotune"):
        apply_gpu_autotune("fast", {})
