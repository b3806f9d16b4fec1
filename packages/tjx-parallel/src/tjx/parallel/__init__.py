"""tjx.parallel: device meshes, logical-axis sharding rules and multi-host setup for JAX.

Multi-host runs: :func:`join` joins (:func:`initialize`) and checks that every process was started
alike (:func:`require_agreement`, over :func:`disagreements`), :func:`watch_peers` ends the
survivors of a dead peer, and :func:`stop_on_signals` with :func:`stop_agreement` stops every
process at the same step boundary on a preemption signal.
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
from tjx.parallel.arguments import DistributedArgumentError, check_distributed_args
from tjx.parallel.distributed import (
    DistributedInfo,
    barrier,
    initialize,
    is_primary,
    resolve_distributed,
    runtime_client,
)
from tjx.parallel.joining import (
    NUM_PROCESSES,
    DisagreementError,
    DistributedSetupError,
    JoinError,
    NotJoinedError,
    join,
    require_agreement,
)
from tjx.parallel.mesh import (
    BATCH_AXES,
    MESH_AXES,
    MeshConfig,
    batch_ways,
    check_batch_split,
    make_mesh,
)
from tjx.parallel.opt_state import shard_opt_init
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
    on_mesh,
    place_batch,
    shard_batch,
    shard_init,
    state_shardings,
    with_logical_constraint,
)
from tjx.parallel.train_step import jit_train_step

__version__ = "0.5.0"

__all__ = [
    "BATCH_AXES",
    "LOGICAL_AXES",
    "MESH_AXES",
    "NUM_PROCESSES",
    "PIPELINE_AXIS",
    "SCHEDULES",
    "STOP_MESSAGE",
    "STRATEGIES",
    "AxisRules",
    "Disagreement",
    "DisagreementError",
    "DistributedArgumentError",
    "DistributedInfo",
    "DistributedSetupError",
    "JoinError",
    "MeshConfig",
    "NotJoinedError",
    "PeerWatch",
    "Schedule",
    "StopAgreement",
    "StopFlag",
    "__version__",
    "barrier",
    "batch_sharding",
    "batch_ways",
    "bubble_formula",
    "check_batch_split",
    "check_distributed_args",
    "check_pipeline",
    "coordination_exchange",
    "digest_words",
    "disagreements",
    "exit_now",
    "host_local_to_global",
    "initialize",
    "is_primary",
    "jit_train_step",
    "join",
    "logical_specs",
    "logical_to_sharding",
    "make_mesh",
    "make_schedule",
    "microbatch",
    "on_mesh",
    "pipeline_loss",
    "place_batch",
    "process_values",
    "require_agreement",
    "resolve_distributed",
    "rules",
    "runtime_client",
    "shard_batch",
    "shard_init",
    "shard_opt_init",
    "state_shardings",
    "stop_agreement",
    "stop_on_signals",
    "unmicrobatch",
    "watch_peers",
    "with_logical_constraint",
    "write_stderr",
]
