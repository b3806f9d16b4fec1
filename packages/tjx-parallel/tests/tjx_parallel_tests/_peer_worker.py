"""One process of the dead-peer tests: `python _peer_worker.py PID NPROC PORT OUT_DIR MODE`.

Joins the run (jax's own heartbeat timeout left at 100 s), starts the peer watch with a short
silence, runs one cross-process collective and meets the others at a barrier, then:
``block``: keeps running collectives (with gloo the survivor's collective raises when a peer
dies, or blocks when a peer is stopped) and exits 3 if it is still alive after 90 s;
``finish``: process 1 leaves the watch as done and exits normally while process 0 goes on for
longer than the silence, then both exit 0.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from tjx.parallel import barrier, initialize, watch_peers

SILENCE_S, INTERVAL_S = 4.0, 0.5


def main() -> None:
    pid, nproc, port, out_dir, mode = sys.argv[1:6]
    initialize(f"127.0.0.1:{port}", int(nproc), int(pid), timeout_s=60)
    watch = watch_peers(silence_s=SILENCE_S, interval_s=INTERVAL_S)
    import jax  # no JAX computation may run before initialize()
    import jax.numpy as jnp
    from jax import P
    from jax.sharding import NamedSharding

    mesh = jax.make_mesh((jax.device_count(),), ("d",))
    x = jax.make_array_from_process_local_data(
        NamedSharding(mesh, P("d")), np.ones((jax.local_device_count(), 64), np.float32)
    )
    total = jax.jit(lambda a: jnp.sum(a), out_shardings=NamedSharding(mesh, P()))
    assert float(total(x)) == 64.0 * jax.device_count()
    with watch:  # an error waits for the watch's verdict first; a normal end marks us done
        barrier("ready", timeout_s=60)
        open(os.path.join(out_dir, f"ready{pid}"), "w").close()
        if mode == "finish":
            if pid == "0":
                time.sleep(SILENCE_S + 3)  # final files: longer than the silence; 1 is gone
            open(os.path.join(out_dir, f"finished{pid}"), "w").close()
            return
        deadline = time.time() + 90
        while time.time() < deadline:  # gloo raises here at once when the peer's socket drops
            float(total(x))
            time.sleep(0.05)
    sys.exit(3)  # survived: the test fails on this code


if __name__ == "__main__":
    main()
