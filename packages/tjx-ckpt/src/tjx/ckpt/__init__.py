"""tjx.ckpt: crash-safe training checkpoints on orbax.

Async, keep-N / best-K, atomic, validated on load, resharding restore, safetensors export;
``params_sha256`` for bit-exactness checks between runs.
"""

from tjx.ckpt.digest import params_sha256
from tjx.ckpt.errors import (
    CheckpointCommitError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StepExistsError,
)
from tjx.ckpt.manager import CheckpointManager, CorruptCheckpointWarning, Restored
from tjx.ckpt.metadata import collect_metadata, to_json
from tjx.ckpt.params import restore_params, restore_params_and_step
from tjx.ckpt.safetensors_io import (
    export_safetensors,
    flat_names,
    import_safetensors,
    unflatten_params,
)
from tjx.ckpt.version import __version__

__all__ = [
    "CheckpointCommitError",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "CorruptCheckpointWarning",
    "Restored",
    "StepExistsError",
    "__version__",
    "collect_metadata",
    "export_safetensors",
    "flat_names",
    "import_safetensors",
    "params_sha256",
    "restore_params",
    "restore_params_and_step",
    "to_json",
    "unflatten_params",
]
