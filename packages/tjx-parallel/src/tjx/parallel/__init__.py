"""tjx.parallel: device meshes, logical-axis sharding rules and multi-host setup for JAX.

Multi-host runs: :func:`add_distributed_arguments` and :func:`distributed_from_args` give an app
the launch flags (``--coordinator``, ``--num-processes``, ``--process-id``, ``--init-timeout``);
:func:`join` joins (:func:`initialize`) and checks that every process was started alike
(:func:`require_agreement`, over :func:`disagreements`), its messages naming those flags;
:func:`watch_peers` ends the survivors of a dead peer, and :func:`stop_on_signals` with
:func:`stop_agreement` stops every process at the same step boundary on a preemption signal.

``import tjx.parallel`` (and ``tjx.parallel.arguments``) loads no jax: the names that need it are
imported on first use (`tjx.core.lazy.lazy_api`), so an app's command line can build its parser
and refuse a bad flag before it pays for jax (seconds).
"""

from __future__ import annotations

from tjx.core.lazy import lazy_api
from tjx.parallel.arguments import (
    DEFAULT_TIMEOUT_S,
    DISTRIBUTED_FLAGS,
    NUM_PROCESSES_LINE,
    DistributedArgs,
    DistributedArgumentError,
    DistributedInfo,
    add_distributed_arguments,
    check_distributed_args,
    distributed_from_args,
    not_joined_line,
    resolve_distributed,
)

__version__ = "0.20.1"

# The names whose modules import jax, imported on first use.
with lazy_api(globals()):
    from tjx.parallel.axis_rules import LOGICAL_AXES, STRATEGIES, AxisRules, rules
    from tjx.parallel.batches import (
        batch_sharding,
        batch_share,
        host_local_to_global,
    )
    from tjx.parallel.context import ContextParallel, context_parallel
    from tjx.parallel.context_layout import (
        balance,
        balanced_order,
        check_context_split,
        context_ways,
        restore,
    )
    from tjx.parallel.experts import (
        EXPERT_AXIS,
        TRANSPORTS,
        ExpertComm,
        ExpertParallel,
        check_expert_split,
        expert_parallel,
    )
    from tjx.parallel.internals import runtime_client
    from tjx.parallel.joining import (
        NUM_PROCESSES,
        Disagreement,
        DisagreementError,
        DistributedSetupError,
        JoinError,
        NotJoinedError,
        barrier,
        digest_words,
        disagreements,
        initialize,
        is_primary,
        join,
        process_values,
        require_agreement,
    )
    from tjx.parallel.mesh import (
        BATCH_AXES,
        CONTEXT_AXIS,
        CONTEXT_STRATEGIES,
        MESH_AXES,
        MeshConfig,
        batch_axes,
        batch_ways,
        check_batch_split,
        make_mesh,
        rules_for,
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
        StopAgreement,
        StopFlag,
        StoppedError,
        coordination_exchange,
        exit_now,
        stop_agreement,
        stop_on_signals,
        write_stderr,
    )
    from tjx.parallel.schedule import SCHEDULES, Schedule, bubble_formula, make_schedule
    from tjx.parallel.sharding import (
        init_scope,
        logical_specs,
        logical_to_sharding,
        on_mesh,
        place_batch,
        shard_batch,
        shard_init,
        state_shardings,
        with_logical_constraint,
    )
    from tjx.parallel.topology import abstract_devices
    from tjx.parallel.train_step import jit_train_step

__all__ = [
    "AxisRules",
    "BATCH_AXES",
    "CONTEXT_AXIS",
    "CONTEXT_STRATEGIES",
    "ContextParallel",
    "DEFAULT_TIMEOUT_S",
    "DISTRIBUTED_FLAGS",
    "Disagreement",
    "DisagreementError",
    "DistributedArgs",
    "DistributedArgumentError",
    "DistributedInfo",
    "DistributedSetupError",
    "EXPERT_AXIS",
    "ExpertComm",
    "ExpertParallel",
    "JoinError",
    "LOGICAL_AXES",
    "MESH_AXES",
    "MeshConfig",
    "NUM_PROCESSES",
    "NUM_PROCESSES_LINE",
    "NotJoinedError",
    "PIPELINE_AXIS",
    "PeerWatch",
    "SCHEDULES",
    "STOP_MESSAGE",
    "STRATEGIES",
    "Schedule",
    "StopAgreement",
    "StopFlag",
    "StoppedError",
    "TRANSPORTS",
    "__version__",
    "abstract_devices",
    "add_distributed_arguments",
    "balance",
    "balanced_order",
    "barrier",
    "batch_axes",
    "batch_sharding",
    "batch_share",
    "batch_ways",
    "bubble_formula",
    "check_batch_split",
    "check_context_split",
    "check_distributed_args",
    "check_expert_split",
    "check_pipeline",
    "context_parallel",
    "context_ways",
    "coordination_exchange",
    "digest_words",
    "disagreements",
    "distributed_from_args",
    "exit_now",
    "expert_parallel",
    "host_local_to_global",
    "init_scope",
    "initialize",
    "is_primary",
    "jit_train_step",
    "join",
    "logical_specs",
    "logical_to_sharding",
    "make_mesh",
    "make_schedule",
    "microbatch",
    "not_joined_line",
    "on_mesh",
    "pipeline_loss",
    "place_batch",
    "process_values",
    "require_agreement",
    "resolve_distributed",
    "restore",
    "rules",
    "rules_for",
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
