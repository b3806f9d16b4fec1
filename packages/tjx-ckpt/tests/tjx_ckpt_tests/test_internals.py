"""Fingerprints, path naming, JSON conversion and metadata."""

from __future__ import annotations

import dataclasses
import enum
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from tjx.ckpt import collect_metadata, fingerprint, to_json
from tjx.ckpt.fingerprint import fingerprint_numpy, fingerprints, global_fingerprints
from tjx.ckpt.metadata import git_commit, package_versions
from tjx.ckpt.treepaths import flatten, natural_key, nest, unflatten_like


def _reference(x: np.ndarray) -> list[int]:
    # Python big-int arithmetic, reduced mod 2**32 at the end: independent of numpy wrapping.
    x = np.ascontiguousarray(x)
    if x.dtype == np.bool_:
        words = [int(v) for v in x.reshape(-1)]
    elif x.dtype.itemsize == 8:
        words = []
        for v in x.view(np.uint64).reshape(-1):
            words += [int(v) & 0xFFFFFFFF, int(v) >> 32]
    else:
        words = [int(v) for v in x.view(f"uint{8 * x.dtype.itemsize}").reshape(-1)]
    s1 = sum(words) % 2**32
    s2 = sum(w * (2 * i + 1) for i, w in enumerate(words)) % 2**32
    return [s1, s2]


@pytest.mark.parametrize(
    "dtype",
    [
        np.float32,
        jnp.bfloat16,
        np.float16,
        np.int8,
        np.uint32,
        np.int32,
        np.bool_,
        jnp.float8_e4m3fn,
    ],
)
def test_device_and_host_fingerprints_agree_with_reference(dtype, mesh8) -> None:
    rng = np.random.default_rng(7)
    host = (rng.normal(size=(16, 24)) * 50).astype(dtype)
    expected = _reference(host)
    assert fingerprint_numpy(host) == expected
    sharded = jax.device_put(jnp.asarray(host), NamedSharding(mesh8, PartitionSpec(None, "fsdp")))
    got = fingerprints({"a": jnp.asarray(host), "b": sharded, "c": host})
    assert got == {"a": expected, "b": expected, "c": expected}


def test_fingerprint_of_64_bit_host_arrays_and_uncovered_dtypes() -> None:
    x = np.random.default_rng(1).integers(-(2**62), 2**62, size=(5, 3), dtype=np.int64)
    assert fingerprint_numpy(x) == _reference(x)
    assert fingerprint_numpy(np.ones(3, np.complex64)) is None
    assert fingerprints({"c": jnp.ones(3, jnp.complex64)}) == {"c": None}


@pytest.mark.parametrize(
    ("shape", "spec"),
    [
        ((16, 24), (("data", "tensor"),)),
        ((16, 24), (None, "data")),
        ((8, 4, 6), ("data", None, "tensor")),
        ((6, 4, 8), (None, "tensor", "data")),
        ((8, 6), ("tensor",)),  # replicated over "data": each block counted once
        ((5, 3), ()),
        ((), ()),
        ((0, 8), (None, "data")),
    ],
)
def test_fingerprints_of_sharded_arrays_launch_nothing(shape, spec, mesh4x2) -> None:
    host = np.random.default_rng(11).normal(size=shape).astype(np.float32)
    x = jax.device_put(jnp.asarray(host), NamedSharding(mesh4x2, PartitionSpec(*spec)))
    expected = _reference(host)
    before = global_fingerprints._cache_size()
    assert fingerprints({"x": x}) == {"x": expected}
    # The host path ran: no collective program was compiled (or launched) for it.
    assert global_fingerprints._cache_size() == before
    # The one-computation path for arrays spanning several processes agrees.
    np.testing.assert_array_equal(np.asarray(global_fingerprints((x, x))), [expected] * 2)


def test_64_bit_and_bool_device_arrays(mesh8) -> None:
    rng = np.random.default_rng(5)
    wide = rng.integers(-(2**62), 2**62, size=(8, 3), dtype=np.int64)
    flags = rng.random((8, 5)) > 0.5
    with jax.enable_x64(True):
        sharded = jax.device_put(wide, NamedSharding(mesh8, PartitionSpec("fsdp")))
        assert sharded.dtype == jnp.int64
        assert fingerprints({"w": sharded}) == {"w": _reference(wide)}
        scalar = jnp.asarray(np.float64(np.pi))
        assert fingerprints({"s": scalar})["s"] == _reference(np.float64(np.pi))
        got = np.asarray(global_fingerprints((sharded, scalar)))
        assert got.tolist() == [_reference(wide), _reference(np.float64(np.pi))]
    on_mesh = jax.device_put(flags, NamedSharding(mesh8, PartitionSpec("fsdp")))
    assert fingerprints({"b": on_mesh}) == {"b": _reference(flags)}
    assert np.asarray(global_fingerprints((on_mesh,))).tolist() == [_reference(flags)]
    assert global_fingerprints(()).shape == (0, 2)


def test_arrays_spanning_processes_take_one_device_computation(monkeypatch, mesh8) -> None:
    # Multi-host arrays cannot be read on one host; pretend these are such arrays.
    monkeypatch.setattr(fingerprint, "_on_this_host", lambda x: False)
    rng = np.random.default_rng(9)
    a = rng.normal(size=(16, 4)).astype(np.float32)
    b = rng.integers(0, 2**31, size=(8,), dtype=np.int32)
    sharded = jax.device_put(a, NamedSharding(mesh8, PartitionSpec("fsdp")))
    before = fingerprint.global_fingerprints._cache_size()
    got = fingerprints({"a": sharded, "b": jnp.asarray(b), "c": b})
    assert got == {"a": _reference(a), "b": _reference(b), "c": _reference(b)}
    assert fingerprint.global_fingerprints._cache_size() == before + 1  # one program for both


def test_fingerprint_sees_a_change_and_a_swap() -> None:
    x = np.random.default_rng(3).normal(size=(64,)).astype(np.float32)
    base = fingerprint_numpy(x)
    changed = x.copy()
    changed[10] = np.nextafter(changed[10], np.float32(np.inf))
    swapped = x.copy()
    swapped[[3, 40]] = swapped[[40, 3]]
    assert fingerprint_numpy(changed)[0] != base[0]
    assert fingerprint_numpy(swapped)[0] == base[0] and fingerprint_numpy(swapped)[1] != base[1]


def test_paths_flatten_nest_and_sort() -> None:
    tree = {"b": [np.ones(1), (np.zeros(2), None)], "a": {"x": np.ones(3)}}
    flat = flatten(tree)
    assert list(flat) == ["a/x", "b/0", "b/1/0"]
    assert nest({"a/x": 1, "b/0": 2}) == {"a": {"x": 1}, "b": {"0": 2}}
    back = unflatten_like(tree, {k: k for k in flat})
    assert back == {"b": ["b/0", ("b/1/0", None)], "a": {"x": "a/x"}}
    assert sorted(["blocks/10/w", "blocks/2/w", "a"], key=natural_key) == [
        "a",
        "blocks/2/w",
        "blocks/10/w",
    ]
    with pytest.raises(ValueError, match="bare leaf"):
        flatten(np.ones(2))
    with pytest.raises(ValueError, match="contains '/'"):
        flatten({"a/b": np.ones(1)})
    with pytest.raises(ValueError, match="runs through a leaf"):
        nest({"a": 1, "a/b": 2})
    with pytest.raises(ValueError, match="both a leaf and a subtree"):
        nest({"a/b": 2, "a": 1})


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Cfg:
    lr: float = 1e-3
    dtype: object = jnp.float32
    color: Color = Color.RED
    tags: frozenset = frozenset({"b", "a"})
    path: pathlib.Path = pathlib.Path("/tmp/x")
    n: int = 3
    h: np.ndarray = dataclasses.field(default_factory=lambda: np.float32(0.5))


def test_to_json_converts_configs_and_names_bad_fields() -> None:
    assert to_json(Cfg()) == {
        "lr": 1e-3,
        "dtype": "float32",
        "color": "red",
        "tags": ["a", "b"],
        "path": "/tmp/x",
        "n": 3,
        "h": 0.5,
    }
    assert to_json({"t": (1, np.array(2.5))}) == {"t": [1, 2.5]}
    with pytest.raises(TypeError, match=r"config.opt\[1\]: a object has no JSON form"):
        to_json({"opt": [1, object()]})
    with pytest.raises(TypeError, match="is not a string"):
        to_json({(1, 2): 3})


def test_metadata(monkeypatch, mesh4x2) -> None:
    monkeypatch.setenv("TJX_GIT_COMMIT", "abc123")
    meta = collect_metadata(mesh=mesh4x2, extra={"note": ("x",)})
    assert meta["git_commit"] == "abc123" and meta["mesh_shape"] == {"data": 4, "tensor": 2}
    assert meta["note"] == ["x"] and meta["process_count"] == 1
    assert meta["device_kind"] == jax.devices()[0].device_kind  # a replay compares it
    assert package_versions(("jax", "no-such-dist-xyz")) == {"jax": jax.__version__}
    monkeypatch.delenv("TJX_GIT_COMMIT")
    assert git_commit(cwd="/") is None
