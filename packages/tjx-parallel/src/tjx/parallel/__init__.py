"""tjx.parallel: device meshes, logical-axis sharding rules and multi-host setup for JAX."""

from tjx.parallel.distributed import (
    DistributedInfo,
    barrier,
    initialize,
    is_primary,
    resolve_distributed,
    runtime_client,
)
from tjx.parallel.mesh import MESH_AXES, MeshConfig, make_mesh
from tjx.parallel.peers import PeerWatch, watch_peers
from tjx.parallel.rules import LOGICAL_AXES, STRATEGIES, AxisRules, rules
from tjx.parallel.sharding import (
    batch_sharding,
    host_local_to_global,
    logical_specs,
    logical_to_sharding,
    shard_batch,
    shard_init,
    state_shardings,
    with_logical_constraint,
)
from tjx.parallel.train_step import jit_train_step

__version__ = "0.1.0"

__all__ = [
    "LOGICAL_AXES",
    "MESH_AXES",
    "STRATEGIES",
    "AxisRules",
    "DistributedInfo",
    "MeshConfig",
    "PeerWatch",
    "__version__",
    "barrier",
    "batch_sharding",
    "host_local_to_global",
    "initialize",
    "is_primary",
    "jit_train_step",
    "logical_specs",
    "logical_to_sharding",
    "make_mesh",
    "resolve_distributed",
    "rules",
    "runtime_client",
    "shard_batch",
    "shard_init",
    "state_shardings",
    "watch_peers",
    "with_logical_constraint",
]
