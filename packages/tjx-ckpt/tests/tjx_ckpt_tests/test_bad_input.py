"""Bad input gets one clear error, and the run's checkpoints stay byte-for-byte untouched."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from tjx.ckpt import (
    CheckpointError,
    CheckpointManager,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    restore_params,
)
from tjx.ckpt.durable import FILE_SIZES
from tjx_ckpt_tests._states import make_params, make_state, tree_digest


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    with CheckpointManager(tmp_path / "run", keep_last=None) as manager:
        for step in (1, 2):
            manager.save(step, state=make_state(step, layers=2), data_state={"i": step})
    return tmp_path / "run"


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CheckpointNotFoundError, match="nope does not exist"):
        restore_params(missing, target=make_params(0))
    with pytest.raises(FileNotFoundError):
        CheckpointManager(missing, read_only=True)
    assert not missing.exists()


def test_empty_directory_and_missing_step(tmp_path: Path, run_dir: Path) -> None:
    empty = CheckpointManager(tmp_path / "empty")
    with empty, pytest.raises(CheckpointNotFoundError, match="no complete checkpoint"):
        empty.restore()
    manager = CheckpointManager(run_dir, read_only=True)
    with manager, pytest.raises(CheckpointNotFoundError, match=r"step 9 .*\[1, 2\]"):
        manager.restore(9)


def test_checkpoint_of_another_model(run_dir: Path) -> None:
    before = tree_digest(run_dir)
    wider = jax.eval_shape(lambda: make_state(0, layers=2))
    wider["params"]["blocks"][0]["attn"]["kernel"] = jax.ShapeDtypeStruct((64, 48), jnp.float32)
    with CheckpointManager(run_dir) as manager:
        with pytest.raises(CheckpointMismatchError) as err:
            manager.restore(target=wider)
        assert (
            "params/blocks/0/attn/kernel: shape (64, 32) in checkpoint, (64, 48) expected"
            in str(err.value)
        )
        deeper = jax.eval_shape(lambda: make_state(0, layers=3))
        with pytest.raises(
            CheckpointMismatchError,
            match=r"blocks/2/attn/kernel: expected by the " r"target but not in the checkpoint",
        ):
            manager.restore(target=deeper)
        fewer = jax.eval_shape(lambda: make_state(0, layers=2))
        del fewer["params"]["embed"]
        with pytest.raises(
            CheckpointMismatchError, match="params/embed: in the checkpoint but not in the target"
        ):
            manager.restore(target=fewer)
        cast = jax.eval_shape(lambda: make_state(0, layers=2))
        cast["step"] = jax.ShapeDtypeStruct((), jnp.float32)
        with pytest.raises(
            CheckpointMismatchError, match="step: dtype int32 in checkpoint, float32"
        ):
            manager.restore(target=cast)
    with pytest.raises(CheckpointMismatchError, match="no 'ema' subtree"):
        restore_params(run_dir, target=make_params(0), subtree="ema")
    assert tree_digest(run_dir) == before


def test_mismatch_in_params_only_restore_leaves_files_alone(run_dir: Path) -> None:
    before = tree_digest(run_dir)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"params/blocks/0/attn/kernel: shape \(64, 32\) "
        r"in checkpoint, \(32, 16\) expected \(and 6 more",
    ):
        restore_params(run_dir, target=make_params(0, d=16))
    assert tree_digest(run_dir) == before


def test_other_mismatches_are_named(tmp_path: Path) -> None:
    state = {"rng": jax.random.key(1, impl="rbg"), "tokens": 4096, "w": jnp.ones(2)}
    with CheckpointManager(tmp_path, async_save=False) as manager:
        manager.save(1, state=state)
        other_impl = dict(state, rng=jax.random.key(1, impl="unsafe_rbg"))
        with pytest.raises(CheckpointMismatchError, match="rng: PRNG impl rbg in checkpoint"):
            manager.restore(target=other_impl)
        with pytest.raises(
            CheckpointMismatchError, match="tokens: int64.. in checkpoint, a Python"
        ):
            manager.restore(target=dict(state, tokens=1.5))
        with pytest.raises(TypeError, match="w: a target leaf must be"):
            manager.restore(target=dict(state, w="weights"))
        assert manager.restore(target=dict(state, tokens=0)).state["tokens"] == 4096
    with (
        CheckpointManager(tmp_path, read_only=True) as reader,
        pytest.raises(CheckpointError, match="read_only"),
    ):
        reader.save(2, state=state)


def test_a_newer_format_is_refused_not_skipped(run_dir: Path) -> None:
    manifest_file = run_dir / "2" / "manifest" / "metadata"
    manifest = json.loads(manifest_file.read_text())
    manifest["format_version"] = 99
    manifest_file.write_text(json.dumps(manifest))
    # As a later tjx-ckpt would have committed it: its file list says the new size.
    sizes_file = run_dir / "2" / FILE_SIZES
    sizes = json.loads(sizes_file.read_text())
    sizes["files"]["manifest/metadata"] = manifest_file.stat().st_size
    sizes_file.write_text(json.dumps(sizes))
    before = tree_digest(run_dir)
    with pytest.raises(CheckpointMismatchError, match="format version 99.*upgrade tjx-ckpt"):
        restore_params(run_dir, target=make_params(0))
    assert tree_digest(run_dir) == before
