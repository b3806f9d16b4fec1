"""Child process of the concurrent FSDP save test: train and save async on 8 CPU devices.

Usage: python -m tjx_ckpt_tests._fsdp_child DIRECTORY

A state of many FSDP-sharded leaves is updated by a jitted step full of collectives
(all-gathers, all-reduces; the state is donated) while earlier saves are still being written.
Every kept step is then restored onto a 4x2 mesh (fingerprints checked) and compared with a
host copy. Prints ``ok <steps>`` at the end. Run in a subprocess so that a deadlock in XLA:CPU
collectives fails the test on a timeout instead of hanging the suite.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.ckpt import CheckpointManager

LEAVES = 40  # dozens of sharded leaves: the old per-leaf all-reduces deadlocked XLA:CPU
STEPS = 8
SAVE_EVERY = 2


def _initial_state(fsdp: NamedSharding, replicated: NamedSharding) -> dict:
    rng = np.random.default_rng(2026)
    shapes = [(8 * (1 + i % 3), 4 + 4 * (i % 2)) for i in range(LEAVES)]
    params = {f"w{i:02d}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
    mu = {k: rng.normal(size=v.shape).astype(jnp.bfloat16) for k, v in params.items()}
    return {
        "params": jax.device_put(params, fsdp),
        "mu": jax.device_put(mu, fsdp),
        "count": jax.device_put(np.int32(0), replicated),
    }


def main() -> None:
    directory = sys.argv[1]
    mesh = Mesh(np.array(jax.devices()), ("fsdp",))
    fsdp, replicated = NamedSharding(mesh, PartitionSpec("fsdp")), NamedSharding(
        mesh, PartitionSpec()
    )
    state = _initial_state(fsdp, replicated)
    shardings = jax.tree.map(lambda x: x.sharding, state)

    def train_step(s: dict) -> dict:
        params, mu = s["params"], s["mu"]
        mean = sum(jnp.mean(w) for w in params.values())  # all-reduces
        gathered = {k: jax.lax.with_sharding_constraint(w, replicated) for k, w in params.items()}
        new_mu = {
            k: (0.9 * mu[k] + 0.1 * jnp.tanh(g)).astype(mu[k].dtype) for k, g in gathered.items()
        }
        new_params = {k: params[k] - 1e-2 * (new_mu[k].astype(jnp.float32) + mean) for k in params}
        return {"params": new_params, "mu": new_mu, "count": s["count"] + 1}

    step_fn = jax.jit(train_step, out_shardings=shardings, donate_argnums=(0,))
    manager = CheckpointManager(directory, keep_last=2, mesh=mesh)
    for step in range(1, STEPS + 1):
        state = step_fn(state)  # dispatched while the previous save is still being written
        if step % SAVE_EVERY == 0:
            manager.save(step, state=state, data_state={"step": step})
    expected = jax.device_get(state)
    manager.wait_until_finished()

    mesh4x2 = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "tensor"))
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape,
            x.dtype,
            sharding=NamedSharding(mesh4x2, PartitionSpec(*(("data", "tensor")[: x.ndim]))),
        ),
        state,
    )
    steps = manager.all_steps()
    for step in steps:
        restored = manager.restore(step, target=target)  # fingerprints are verified here
        assert restored.data_state == {"step": step}, restored.data_state
        assert int(restored.state["count"]) == step
    got = jax.device_get(restored.state)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    manager.close()
    print("ok", *steps, flush=True)


if __name__ == "__main__":
    main()
