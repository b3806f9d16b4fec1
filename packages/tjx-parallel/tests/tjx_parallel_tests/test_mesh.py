"""MeshConfig validation and make_mesh device order."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from tjx.parallel import MESH_AXES, MeshConfig, make_mesh
from tjx.parallel.mesh import _dcn_split


def test_minus_one_takes_the_rest() -> None:
    # (pipeline, data, fsdp, expert, context, tensor)
    assert MeshConfig().resolve(8) == (1, 8, 1, 1, 1, 1)
    assert MeshConfig(data=-1, fsdp=2, tensor=2).resolve(8) == (1, 2, 2, 1, 1, 2)
    assert MeshConfig(data=1, fsdp=-1, tensor=2).resolve(8) == (1, 1, 4, 1, 1, 2)
    assert MeshConfig(data=2, fsdp=2, tensor=2).resolve(8) == (1, 2, 2, 1, 1, 2)
    assert MeshConfig(data=-1, pipeline=4).resolve(8) == (4, 2, 1, 1, 1, 1)
    assert MeshConfig(data=1, fsdp=2, pipeline=-1).resolve(8) == (4, 1, 2, 1, 1, 1)
    assert MeshConfig(data=1, fsdp=2, context=-1).resolve(8) == (1, 1, 2, 1, 4, 1)
    assert MeshConfig(data=-1, expert=4).resolve(8) == (1, 2, 1, 4, 1, 1)
    assert MeshConfig(data=1, expert=-1, tensor=2).resolve(8) == (1, 1, 1, 4, 1, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"data": 0}, "MeshConfig.data must be a positive int or -1"),
        ({"tensor": -2}, "MeshConfig.tensor must be a positive int or -1"),
        ({"fsdp": 1.5}, "MeshConfig.fsdp must be an int"),
        (
            {"data": -1, "fsdp": -1},
            "MeshConfig: at most one of pipeline, data, fsdp, expert, context, tensor may be -1",
        ),
        ({"pipeline": 0}, "MeshConfig.pipeline must be a positive int or -1"),
        ({"context": 0}, "MeshConfig.context must be a positive int or -1"),
        ({"expert": 0}, "MeshConfig.expert must be a positive int or -1"),
        ({"context_strategy": "tree"}, "MeshConfig.context_strategy must be one of"),
        ({"context": 2, "pipeline": 2}, "context parallelism \\(context=2\\) with pipeline"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MeshConfig(**kwargs)


def test_product_mismatch_names_sizes() -> None:
    with pytest.raises(ValueError, match=r"fsdp=2, expert=1, context=1, tensor=1 has 4 dev"):
        make_mesh(MeshConfig(data=2, fsdp=2, tensor=1))
    with pytest.raises(ValueError, match=r"data=1, fsdp=4, expert=1, context=1, tensor=1 has 16"):
        make_mesh(MeshConfig(data=1, fsdp=4, pipeline=4))
    with pytest.raises(ValueError, match=r"context parallelism \(context=2\) with pipeline stages"):
        make_mesh(MeshConfig(data=1, context=2, pipeline=-1))
    with pytest.raises(ValueError, match="fixed axes multiply to 3, which does not divide the 8"):
        make_mesh(MeshConfig(data=-1, tensor=3))
    with pytest.raises(ValueError, match="at least one device"):
        make_mesh(MeshConfig(), devices=[])


def test_mesh_axes_and_tensor_groups_are_neighbours() -> None:
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    assert mesh.axis_names == MESH_AXES and dict(mesh.shape) == {
        "pipeline": 1,
        "data": 2,
        "fsdp": 2,
        "expert": 1,
        "context": 1,
        "tensor": 2,
    }
    assert {d.id for d in mesh.devices.flat} == {d.id for d in jax.devices()}
    ids = np.vectorize(lambda d: d.id)(mesh.devices)
    # innermost (tensor) groups are consecutive devices: on GPU, neighbours on one host / NVLink
    assert np.all(np.abs(np.diff(ids, axis=-1)) == 1)
    sub = make_mesh(MeshConfig(data=-1), devices=jax.devices()[:2])
    assert dict(sub.shape) == {
        "pipeline": 1, "data": 2, "fsdp": 1, "expert": 1, "context": 1, "tensor": 1
    }  # fmt: skip
    staged = make_mesh(MeshConfig(data=2, fsdp=1, pipeline=4))
    # stage k holds a block of consecutive devices: the outermost axis
    assert dict(staged.shape) == {
        "pipeline": 4, "data": 2, "fsdp": 1, "expert": 1, "context": 1, "tensor": 1
    }  # fmt: skip
    assert [sorted(d.id for d in staged.devices[k].flat) for k in range(4)] == [
        [2 * k, 2 * k + 1] for k in range(4)
    ]


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    id: int
    process_index: int
    platform: str = "cpu"
    device_kind: str = "cpu"


def test_multi_process_keeps_tensor_inside_a_host() -> None:
    # 2 processes x 4 devices; ids interleaved so an order-blind reshape would mix hosts
    devices = [FakeDevice(i, i % 2) for i in range(8)]
    for sizes in [(1, 2, 2, 1, 1, 2), (1, 1, 2, 1, 1, 4), (1, 4, 1, 1, 1, 2), (2, 2, 1, 1, 1, 2),
                  (1, 1, 1, 1, 4, 2), (1, 1, 1, 4, 1, 2)]:  # fmt: skip
        ici, dcn = _dcn_split(sizes, 2)
        assert dcn[-1] == 1 and np.prod(dcn) == 2
        assert [i * d for i, d in zip(ici, dcn, strict=False)] == list(sizes)
        pipeline, data, fsdp, expert, context, tensor = sizes
        config = MeshConfig(
            data=data, fsdp=fsdp, tensor=tensor, pipeline=pipeline, context=context, expert=expert
        )
        mesh = make_mesh(config, devices=devices)
        procs = np.vectorize(lambda d: d.process_index)(mesh.devices)
        # every tensor group (last axis) lives on one process; hosts split the outer axes
        assert np.all(procs == procs[..., :1])
        assert sorted(d.id for d in mesh.devices.flat) == list(range(8))
    assert _dcn_split((1, 1, 1, 1, 1, 8), 2) is None
    # hosts on pipeline first, then data, fsdp, expert; context last of the outer axes
    assert _dcn_split((2, 1, 1, 1, 1, 4), 2) == ([1, 1, 1, 1, 1, 4], [2, 1, 1, 1, 1, 1])
    assert _dcn_split((1, 1, 1, 1, 2, 4), 2) == ([1, 1, 1, 1, 1, 4], [1, 1, 1, 1, 2, 1])
    assert _dcn_split((1, 2, 1, 2, 1, 2), 2) == ([1, 1, 1, 2, 1, 2], [1, 2, 1, 1, 1, 1])
    assert _dcn_split((1, 1, 1, 2, 2, 2), 2) == ([1, 1, 1, 1, 2, 2], [1, 1, 1, 2, 1, 1])
    with pytest.raises(ValueError, match="cannot keep the tensor axis inside a host"):
        make_mesh(MeshConfig(data=1, fsdp=1, tensor=8), devices=devices)
