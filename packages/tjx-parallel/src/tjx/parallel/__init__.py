"""tjx.parallel: device meshes, logical-axis sharding rules and multi-host setup for JAX.

Multi-host runs: :func:`initialize` joins, :func:`disagreements` checks that every process was
started alike, :func:`watch_peers` ends the survivors of a dead peer, and :func:`stop_on_signals`
with :func:`stop_agreement` stops every process at the same step boundary on a preemption signal.
"""

from tjx.parallel.agreement import (
    Disagreement,
    StopAgreement,
    coordination_exchange,
    digest_words,
    disagreements,
    process_values,
    stop_agreement,
)
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
from tjx.parallel.pipeline import (
    PIPELINE_AXIS,
    check_pipeline,
    microbatch,
    pipeline_loss,
    unmicrobatch,
)
from tjx.parallel.preemption import (
    STOP_MESSAGE,
    StopFlag,
    exit_now,
    stop_on_signals,
    write_stderr,
)
from tjx.parallel.rules import LOGICAL_AXES, STRATEGIES, AxisRules, rules
from tjx.parallel.schedule import SCHEDULES, Schedule, bubble_formula, make_schedule
from tjx.parallel.sharding import (
    batch_sharding,
    host_local_to_global,
    logical_specs,
    logical_to_sharding,
    place_batch,
    shard_batch,
    shard_init,
    state_shardings,
    with_logical_constraint,
)
from tjx.parallel.train_step import jit_train_step

__version__ = "0.3.0"

__all__ = [
    "LOGICAL_AXES",
    "MESH_AXES",
    "PIPELINE_AXIS",
    "SCHEDULES",
    "STOP_MESSAGE",
    "STRATEGIES",
    "AxisRules",
    "Disagreement",
    "DistributedInfo",
    "MeshConfig",
    "PeerWatch",
    "Schedule",
    "StopAgreement",
    "StopFlag",
    "__version__",
    "barrier",
    "batch_sharding",
    "bubble_formula",
    "check_pipeline",
    "coordination_exchange",
    "digest_words",
    "disagreements",
    "exit_now",
    "host_local_to_global",
    "initialize",
    "is_primary",
    "jit_train_step",
    "logical_specs",
    "logical_to_sharding",
    "make_mesh",
    "make_schedule",
    "microbatch",
    "pipeline_loss",
    "place_batch",
    "process_values",
    "resolve_distributed",
    "rules",
    "runtime_client",
    "shard_batch",
    "shard_init",
    "state_shardings",
    "stop_agreement",
    "stop_on_signals",
    "unmicrobatch",
    "watch_peers",
    "with_logical_constraint",
    "write_stderr",
]
