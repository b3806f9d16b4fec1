"""Expert parallelism's collectives: the exchange sends blocks to their devices and back (both
transports; the ragged one through an emulation of ``ragged_all_to_all``'s documented semantics,
which XLA:CPU lacks), the split checks, the hidden axis's partial sums."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import P, lax
from jax.sharding import Mesh

from tjx import parallel
from tjx.parallel import experts as experts_mod

SIZE, SLOT, D = 4, 5, 3


def _emulated_ragged_all_to_all(operand, output, input_offsets, send, output_offsets, recv, *,
                                axis_name):  # fmt: skip
    """``lax.ragged_all_to_all`` as its docstring defines it, from ``all_to_all``: slice ``j``
    (``operand[input_offsets[j]:+send[j]]``) is written at ``output_offsets[j]`` of device
    ``j``'s ``output``."""
    m = operand.shape[0]
    r = jnp.arange(m)
    blocks = jnp.where(
        (r[None, :] < send[:, None])[..., None],
        operand[jnp.clip(input_offsets[:, None] + r[None, :], 0, m - 1)],
        0,
    )  # [n, m, d]: block j = the slice for device j, padded
    got = lax.all_to_all(blocks, axis_name, 0, 0, tiled=True)  # got[i]: from device i
    at = lax.all_to_all(output_offsets, axis_name, 0, 0, tiled=True)  # where i's slice goes here
    rows = at[:, None] + r[None, :]
    rows = jnp.where(r[None, :] < recv[:, None], rows, output.shape[0])  # beyond: dropped
    return output.at[rows.reshape(-1)].set(got.reshape(-1, operand.shape[-1]), mode="drop")


@pytest.mark.parametrize("transport", ["padded", "ragged"])
def test_the_exchange_delivers_each_block_to_its_device_and_back(transport, monkeypatch):
    if transport == "ragged":
        monkeypatch.setattr(lax, "ragged_all_to_all", _emulated_ragged_all_to_all)
    mesh = Mesh(np.asarray(jax.devices()[:SIZE]), ("expert",))  # automatic axes, as make_mesh
    comm = parallel.ExpertComm("expert", SIZE, transport=transport)
    rng = np.random.default_rng(0)
    # send[i, j]: rows device i sends device j (at most SLOT, some none); m = 8 rows each
    m = 8
    send = np.zeros((SIZE, SIZE), np.int32)
    for i in range(SIZE):
        while send[i].sum() != m or send[i].max() > SLOT:
            send[i] = rng.multinomial(m, rng.dirichlet(np.ones(SIZE) * 0.5))
    rows = rng.normal(size=(SIZE, m, D)).astype(np.float32)
    rows[:, :, 0] = np.arange(m)[None] + 100 * np.arange(SIZE)[:, None]  # tag: source, row

    def f(rows, send):
        rows, send = rows[0], send[0]
        buf, recv = comm.exchange(rows, send, SLOT)
        back = comm.exchange_back(buf * 2, send, recv, SLOT, m)
        return buf[None], recv[None], back[None]

    g = jax.jit(
        jax.shard_map(f, mesh=mesh, in_specs=(P("expert"), P("expert")), out_specs=P("expert"))
    )
    buf, recv, back = (np.asarray(a) for a in g(jnp.asarray(rows), jnp.asarray(send)))
    np.testing.assert_array_equal(recv, send.T)  # recv[j, i] = rows i sent j
    offsets = np.cumsum(send, 1) - send
    for j in range(SIZE):
        for i in range(SIZE):
            got = buf[j, i * SLOT : i * SLOT + send[i, j]]
            want = rows[i, offsets[i, j] : offsets[i, j] + send[i, j]]
            np.testing.assert_array_equal(got, want)  # source i's rows at i·slot, in order
    assert (send == 0).any()  # a device that sends another nothing
    np.testing.assert_array_equal(back, 2 * rows)  # every row home, processed


def test_check_expert_split_names_the_mesh_field():
    mesh = parallel.make_mesh(parallel.MeshConfig(data=2, expert=4))
    parallel.check_expert_split(8, mesh)
    with pytest.raises(ValueError) as err:
        parallel.check_expert_split(6, mesh)
    assert str(err.value) == (
        "MeshConfig.expert: 4 devices do not divide the model's num_experts (6); allowed: a "
        "divisor of 6"
    )
    parallel.check_expert_split(0, mesh)  # a model without experts
    with pytest.raises(ValueError, match=r"^mesh\.expert: 4 devices do not divide"):
        parallel.check_expert_split(6, mesh, section="mesh")  # an app's own key


def test_expert_parallel_refuses_a_bad_transport_or_rules_without_the_expert_axis():
    mesh = parallel.make_mesh(parallel.MeshConfig(data=2, expert=4))
    with pytest.raises(ValueError, match="transport must be one of"):
        parallel.expert_parallel(mesh, parallel.rules("dp"), transport="nccl")
    with pytest.raises(ValueError, match="map 'experts' to \\('data',\\)"):
        parallel.expert_parallel(mesh, parallel.rules("dp", experts="data"))


def test_the_comm_sums_partials_over_the_tensor_axis_and_picks_its_transport():
    mesh = parallel.make_mesh(parallel.MeshConfig(data=1, expert=4, tensor=2))
    ep = parallel.expert_parallel(mesh, parallel.rules("tp"))
    specs = [P("expert", None, "tensor"), P("expert", "tensor", None)]
    comm = ep.comm(specs)
    assert (comm.axis, comm.size, comm.partial, comm.transport) == ("expert", 4, ("tensor",),
                                                                    "padded")  # fmt: skip
    assert experts_mod.TRANSPORTS == ("auto", "ragged", "padded")
    assert (
        parallel.expert_parallel(mesh, parallel.rules("tp"), transport="ragged")
        .comm(specs)
        .transport
        == "ragged"
    )
