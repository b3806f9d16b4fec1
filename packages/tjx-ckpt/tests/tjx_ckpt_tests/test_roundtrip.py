"""A full train state round-trips bit-exact, with its data state, config and metadata."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.ckpt import (
    CheckpointError,
    CheckpointManager,
    CorruptCheckpointError,
    StepExistsError,
    __version__,
)
from tjx_ckpt_tests._states import assert_bit_exact, make_state


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    d_model: int = 32
    dtype: type = jnp.bfloat16
    schedule: tuple = ("cosine", 10)


def test_full_train_state_round_trips_bit_exact(tmp_path: Path, mesh8) -> None:
    sharding = jax.sharding.NamedSharding(mesh8, jax.sharding.PartitionSpec("fsdp"))
    state = make_state(5, sharding=sharding)
    data_state = {"epoch": 1, "offset": np.int64(12345), "order_seed": 7}
    with CheckpointManager(tmp_path / "run", mesh=mesh8, metadata={"run": "t"}) as manager:
        assert manager.save(
            5,
            state=state,
            data_state=data_state,
            config=TinyConfig(),
            metrics={"loss": np.float32(2.5)},
        )
        manager.wait_until_finished()
        restored = manager.restore(
            target=jax.tree.map(lambda x: x, make_state(0, sharding=sharding))
        )
    assert restored.step == 5
    assert_bit_exact(restored.state, state)
    assert restored.state["params"]["blocks"][0]["mlp"]["kernel"].dtype == jnp.bfloat16
    assert restored.state["params"]["embed"].sharding == sharding
    assert isinstance(restored.state["tokens_seen"], int)
    assert isinstance(restored.state["opt_state"][2]["skipped"], np.ndarray)
    assert restored.data_state == {"epoch": 1, "offset": 12345, "order_seed": 7}
    assert restored.config == {"d_model": 32, "dtype": "bfloat16", "schedule": ["cosine", 10]}
    assert restored.metrics == {"loss": 2.5}
    meta = restored.metadata
    assert meta["mesh_shape"] == {"fsdp": 8} and meta["run"] == "t"
    assert meta["device_count"] == 8 and meta["versions"]["jax"] == jax.__version__
    assert meta["versions"]["tjx-ckpt"] == __version__  # the writer's own version
    assert "time" in meta and "git_commit" in meta


def test_restore_with_abstract_target_and_without_target(tmp_path: Path) -> None:
    state = make_state(3)
    with CheckpointManager(tmp_path, async_save=False) as manager:
        manager.save(3, state=state)
        from_abstract = manager.restore(target=jax.eval_shape(lambda: make_state(0)))
        untargeted = manager.restore()
    assert_bit_exact(from_abstract.state, state)
    # Without a target: nested dicts keyed by path component, typed keys re-wrapped.
    raw = untargeted.state
    assert set(raw) == {"params", "opt_state", "step", "rng", "legacy_rng", "tokens_seen"}
    np.testing.assert_array_equal(
        np.asarray(raw["opt_state"]["0"]["mu"]["blocks"]["1"]["attn"]["kernel"]),
        np.asarray(state["opt_state"][0].mu["blocks"][1]["attn"]["kernel"]),
    )
    assert jax.dtypes.issubdtype(raw["rng"].dtype, jax.dtypes.prng_key)
    assert raw["tokens_seen"] == state["tokens_seen"]
    assert untargeted.data_state is None and untargeted.config is None


def test_prng_key_impl_is_kept_and_checked(tmp_path: Path) -> None:
    key = jax.random.key(3, impl="rbg")
    with CheckpointManager(tmp_path, async_save=False) as manager:
        manager.save(1, state={"rng": key, "x": jnp.arange(3.0)})
        out = manager.restore(target={"rng": jax.random.key(0, impl="rbg"), "x": jnp.zeros(3)})
        assert str(jax.random.key_impl(out.state["rng"])) == "rbg"
        np.testing.assert_array_equal(
            jax.random.key_data(out.state["rng"]), jax.random.key_data(key)
        )
        # The raw uint32 key data can be taken as a legacy key too.
        raw = manager.restore(target={"rng": jnp.zeros((4,), jnp.uint32), "x": jnp.zeros(3)})
        np.testing.assert_array_equal(raw.state["rng"], jax.random.key_data(key))
        from tjx.ckpt import CheckpointMismatchError

        with pytest.raises(CheckpointMismatchError, match="rng: shape"):
            manager.restore(target={"rng": jax.random.key(0), "x": jnp.zeros(3)})


def test_save_every_force_and_step_exists(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, save_every=4, keep_last=None)
    state = {"w": jnp.ones((2, 2))}
    saved = [s for s in range(1, 10) if manager.save(s, state=state)]
    assert saved == [4, 8]
    assert manager.save(9, state=state, force=True)
    manager.wait_until_finished()
    assert manager.all_steps() == [4, 8, 9] and manager.latest_step() == 9
    with pytest.raises(StepExistsError, match="step 8"):
        manager.save(8, state=state, force=True)
    manager.close()


def test_async_save_is_not_affected_by_later_mutation(tmp_path: Path) -> None:
    host = np.arange(6, dtype=np.float32)
    data_state = {"pos": [1, 2]}
    with CheckpointManager(tmp_path) as manager:
        manager.save(1, state={"h": host}, data_state=data_state)
        host[:] = -1
        data_state["pos"].append(3)
        out = manager.restore(1, target={"h": np.zeros(6, np.float32)})
    np.testing.assert_array_equal(out.state["h"], np.arange(6, dtype=np.float32))
    assert out.data_state == {"pos": [1, 2]}


def test_on_disk_layout_is_json_and_arrays(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, async_save=False) as manager:
        manager.save(
            7, state={"params": {"w": jnp.ones((4,))}}, data_state={"i": 1}, config={"lr": 0.1}
        )
    step_dir = tmp_path / "7"
    assert {p.name for p in step_dir.iterdir()} >= {"state", "data_state", "config", "manifest"}
    manifest = json.loads((step_dir / "manifest" / "metadata").read_text())
    assert manifest["format"] == "tjx-ckpt" and manifest["step"] == 7
    assert manifest["leaves"]["params/w"]["shape"] == [4]
    assert json.loads((step_dir / "config" / "metadata").read_text()) == {"lr": 0.1}


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match="best_mode"):
        CheckpointManager(tmp_path, best_mode="lowest")
    with pytest.raises(ValueError, match="best_metric"):
        CheckpointManager(tmp_path, keep_best=2)
    with pytest.raises(ValueError, match="save_every"):
        CheckpointManager(tmp_path, save_every=-1)
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        CheckpointManager(file)
    with CheckpointManager(tmp_path / "run") as manager:
        with pytest.raises(TypeError, match="config.fn"):
            manager.save(1, state={"w": jnp.ones(2)}, config={"fn": print})
        with pytest.raises(TypeError, match="w: cannot checkpoint"):
            manager.save(1, state={"w": "text"})
        with pytest.raises(ValueError, match="no array leaves"):
            manager.save(1, state={"w": None})
        assert manager.all_steps() == []


def test_restore_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading a stranger's checkpoint must not run code: no pickle anywhere on the load path
    # (numpy's allow_pickle loading and every orbax reader included would go through these).
    import pickle

    state = make_state(4, layers=1)
    with CheckpointManager(tmp_path, async_save=False) as manager:
        manager.save(4, state=state, data_state={"pos": 4}, config={"d": 1})
    calls: list[str] = []

    def refuse(name: str):
        def fail(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise AssertionError(f"pickle.{name} called on the restore path")

        return fail

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse(name))
    with CheckpointManager(tmp_path, read_only=True) as manager:
        restored = manager.restore(target=jax.eval_shape(lambda: make_state(0, layers=1)))
        params = manager.restore_params(
            target=jax.eval_shape(lambda: make_state(0, layers=1))["params"]
        )
    assert calls == []
    assert_bit_exact(restored.state, state)
    assert_bit_exact(params, state["params"])
    assert restored.data_state == {"pos": 4} and restored.config == {"d": 1}


def test_a_steps_loader_state_reads_alone_without_its_arrays(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "run", async_save=False)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        manager.data_state()
    manager.save(3, state=make_state(3), data_state={"epoch": 0, "step": 3})
    manager.save(5, state=make_state(5), data_state={"epoch": 1, "step": 5, "digest": "ab"})
    manager.save(6, state=make_state(6))
    manager.close()
    run = tmp_path / "run"
    # Every step's array files emptied: the loader states still read, so none was opened.
    for step in (3, 5, 6):
        for path in (run / str(step) / "state").iterdir():
            if path.is_dir():
                for leaf in path.rglob("*"):
                    if leaf.is_file():
                        leaf.write_bytes(b"")
    reader = CheckpointManager(run, read_only=True)
    assert reader.data_state() is None  # the newest step saved none
    assert reader.data_state(5) == {"epoch": 1, "step": 5, "digest": "ab"}
    assert reader.data_state(3) == {"epoch": 0, "step": 3}
    with pytest.raises(CheckpointError, match="no complete step 4"):
        reader.data_state(4)
    with pytest.raises(CheckpointError):  # and the arrays really are unreadable
        reader.restore(5)
    for item in (run / "5" / "data_state").iterdir():
        item.write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match="step 5 .*loader state cannot be read"):
        reader.data_state(5)
