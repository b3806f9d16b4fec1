"""tjx.parallel: device meshes, logical-axis sharding rules and multi-host setup for JAX.

Multi-host runs: :func:`add_distributed_arguments` and :func:`distributed_from_args` give an app
the launch flags (``--coordinator``, ``--num-processes``, ``--process-id``, ``--init-timeout``);
:func:`join` joins (:func:`initialize`) and checks that every process was started alike
(:func:`require_agreement`, over :func:`disagreements`), its messages naming those flags;
:func:`watch_peers` ends the survivors of a dead peer, and :func:`stop_on_signals` with
:func:`stop_agreement` stops every process at the same step boundary on a preemption signal.

``import tjx.parallel`` (and ``tjx.parallel.arguments``) loads no jax: the names that need it are
imported on first use (``_LAZY``), so an app's command line can build its parser and refuse a bad
flag before it pays for jax (seconds).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # what the lazy names are, for type checkers (and Pants' dependency inference)
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
    from tjx.parallel.rules import LOGICAL_AXES, STRATEGIES, AxisRules, rules
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

__version__ = "0.19.0"

#: The public names whose modules import jax → their module, imported on first use.
_LAZY = {
    "runtime_client": "tjx.parallel.internals",
    "NUM_PROCESSES": "tjx.parallel.joining",
    "Disagreement": "tjx.parallel.joining",
    "DisagreementError": "tjx.parallel.joining",
    "DistributedSetupError": "tjx.parallel.joining",
    "JoinError": "tjx.parallel.joining",
    "NotJoinedError": "tjx.parallel.joining",
    "barrier": "tjx.parallel.joining",
    "digest_words": "tjx.parallel.joining",
    "disagreements": "tjx.parallel.joining",
    "initialize": "tjx.parallel.joining",
    "is_primary": "tjx.parallel.joining",
    "join": "tjx.parallel.joining",
    "process_values": "tjx.parallel.joining",
    "require_agreement": "tjx.parallel.joining",
    "ContextParallel": "tjx.parallel.context",
    "context_parallel": "tjx.parallel.context",
    "balance": "tjx.parallel.context_layout",
    "balanced_order": "tjx.parallel.context_layout",
    "check_context_split": "tjx.parallel.context_layout",
    "context_ways": "tjx.parallel.context_layout",
    "restore": "tjx.parallel.context_layout",
    "EXPERT_AXIS": "tjx.parallel.experts",
    "TRANSPORTS": "tjx.parallel.experts",
    "ExpertComm": "tjx.parallel.experts",
    "ExpertParallel": "tjx.parallel.experts",
    "check_expert_split": "tjx.parallel.experts",
    "expert_parallel": "tjx.parallel.experts",
    "BATCH_AXES": "tjx.parallel.mesh",
    "CONTEXT_AXIS": "tjx.parallel.mesh",
    "CONTEXT_STRATEGIES": "tjx.parallel.mesh",
    "MESH_AXES": "tjx.parallel.mesh",
    "MeshConfig": "tjx.parallel.mesh",
    "batch_axes": "tjx.parallel.mesh",
    "batch_ways": "tjx.parallel.mesh",
    "check_batch_split": "tjx.parallel.mesh",
    "make_mesh": "tjx.parallel.mesh",
    "rules_for": "tjx.parallel.mesh",
    "shard_opt_init": "tjx.parallel.opt_state",
    "PeerWatch": "tjx.parallel.peers",
    "watch_peers": "tjx.parallel.peers",
    "PIPELINE_AXIS": "tjx.parallel.pipeline",
    "check_pipeline": "tjx.parallel.pipeline",
    "microbatch": "tjx.parallel.pipeline",
    "pipeline_loss": "tjx.parallel.pipeline",
    "unmicrobatch": "tjx.parallel.pipeline",
    "STOP_MESSAGE": "tjx.parallel.preemption",
    "StopAgreement": "tjx.parallel.preemption",
    "StopFlag": "tjx.parallel.preemption",
    "StoppedError": "tjx.parallel.preemption",
    "coordination_exchange": "tjx.parallel.preemption",
    "exit_now": "tjx.parallel.preemption",
    "stop_agreement": "tjx.parallel.preemption",
    "stop_on_signals": "tjx.parallel.preemption",
    "write_stderr": "tjx.parallel.preemption",
    "LOGICAL_AXES": "tjx.parallel.rules",
    "STRATEGIES": "tjx.parallel.rules",
    "AxisRules": "tjx.parallel.rules",
    "rules": "tjx.parallel.rules",
    "SCHEDULES": "tjx.parallel.schedule",
    "Schedule": "tjx.parallel.schedule",
    "bubble_formula": "tjx.parallel.schedule",
    "make_schedule": "tjx.parallel.schedule",
    "batch_share": "tjx.parallel.batches",
    "batch_sharding": "tjx.parallel.batches",
    "host_local_to_global": "tjx.parallel.batches",
    "init_scope": "tjx.parallel.sharding",
    "logical_specs": "tjx.parallel.sharding",
    "logical_to_sharding": "tjx.parallel.sharding",
    "on_mesh": "tjx.parallel.sharding",
    "place_batch": "tjx.parallel.batches",
    "shard_batch": "tjx.parallel.batches",
    "shard_init": "tjx.parallel.sharding",
    "state_shardings": "tjx.parallel.sharding",
    "with_logical_constraint": "tjx.parallel.sharding",
    "abstract_devices": "tjx.parallel.topology",
    "jit_train_step": "tjx.parallel.train_step",
}


def _load(name: str) -> Any:
    value = getattr(importlib.import_module(_LAZY[name]), name)
    if name != "rules":  # see _Package
        globals()[name] = value  # later reads are plain attribute reads
    return value


if not TYPE_CHECKING:  # type checkers see the imports above; a typo stays an error for them

    def __getattr__(name: str) -> Any:
        if name not in _LAZY:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return _load(name)

    class _Package(types.ModuleType):
        """``rules`` names both a submodule and its function: importing the submodule binds the
        module here, which would hide the function (and skip ``__getattr__``); the function wins,
        as it did when every name was imported at once."""

        @property
        def rules(self) -> Any:
            return _load("rules")

        @rules.setter
        def rules(self, value: Any) -> None:
            pass  # the import system binding the submodule

    sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
