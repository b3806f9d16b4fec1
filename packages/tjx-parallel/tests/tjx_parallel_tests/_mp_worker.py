"""One process of the two-process test: `python _mp_worker.py PID NPROC PORT OUT_DIR`.

Trains the tiny GPT a few steps on a (data=2 across processes, fsdp=2 inside) mesh, process 0
writes losses and final params, then both keep stepping until the parent kills one of them.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from tjx.parallel import (
    MeshConfig,
    barrier,
    batch_sharding,
    host_local_to_global,
    initialize,
    is_primary,
    jit_train_step,
    make_mesh,
    rules,
    shard_init,
    state_shardings,
)

STEPS, GLOBAL_BATCH = 3, 8


def main() -> None:
    pid, nproc, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    info = initialize(f"127.0.0.1:{port}", nproc, pid, timeout_s=60, heartbeat_timeout_s=5)
    import jax  # importing is fine; no JAX computation may run before initialize()
    from flax import nnx
    from jax import P
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding

    from tjx_parallel_tests._tiny_gpt import TX, make_batch, make_model, make_step

    assert info.num_processes == nproc and jax.process_count() == nproc
    mesh = make_mesh(MeshConfig(data=nproc, fsdp=-1))
    axis_rules = rules("fsdp")
    graphdef, params = nnx.split(shard_init(lambda: make_model(0), mesh, axis_rules))
    param_sh = state_shardings(params, mesh, axis_rules)
    opt_sh = state_shardings(jax.eval_shape(TX.init, params), mesh, axis_rules)
    opt_state = jax.jit(TX.init, out_shardings=opt_sh)(params)
    step = jit_train_step(
        make_step(graphdef),
        (param_sh, opt_sh, batch_sharding(mesh)),
        (param_sh, opt_sh, NamedSharding(mesh, P())),
        donate_argnums=(0, 1),
    )
    rows = GLOBAL_BATCH // nproc
    losses = []
    for i in range(STEPS):
        batch = make_batch(10 + i, GLOBAL_BATCH)
        local = {k: v[pid * rows : (pid + 1) * rows] for k, v in batch.items()}
        params, opt_state, loss = step(params, opt_state, host_local_to_global(local, mesh))
        losses.append(float(loss))
    flat = multihost_utils.process_allgather(jax.tree.leaves(params), tiled=True)
    if is_primary():
        np.savez(os.path.join(out_dir, "result.npz"), *flat, losses=np.asarray(losses))
    barrier("trained", timeout_s=60)
    open(os.path.join(out_dir, f"ready{pid}"), "w").close()
    deadline = time.time() + 90
    while time.time() < deadline:  # keep the collectives going until a peer disappears
        params, opt_state, loss = step(params, opt_state, host_local_to_global(local, mesh))
        float(loss)
        time.sleep(0.05)
    sys.exit(3)  # survived: the test fails on this code


if __name__ == "__main__":
    main()
