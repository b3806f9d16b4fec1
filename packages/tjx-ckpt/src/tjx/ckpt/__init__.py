"""tjx.ckpt: crash-safe training checkpoints on orbax.

Async, keep-N / best-K, atomic, validated on load, resharding restore, safetensors export;
``params_sha256`` for bit-exactness checks between runs; ``RunFolder``, a run's folder as storage
(a local folder, or a ``gs://`` / ``s3://`` URL: `tjx.ckpt.storage`): files written whole, read
back as mappings, the newest committed step; ``check_can_create``, whether a folder can be made;
``RunLock``, one writer per run directory (`tjx.ckpt.lock`);
``CheckpointConfig``, a run's checkpoint settings. The config engine (``Schema``,
``ConfigError``, ``load_yaml``...) and ``setting`` moved to tjx-core in 0.14 (`tjx.core.config`,
`tjx.core.fields`); their old names here were removed in 0.16. A training run's directory layout
and its start and resume checks (``RunDir``, ``start_location``, ``resumed_config``,
``config_changes``...) moved to the trainer app in 0.15 (the trainer's rooms). Reading one of those
names here is an ImportError that says where it went.

``import tjx.ckpt`` loads neither orbax nor jax: the names that need them are imported on first
use (`tjx.core.lazy.lazy_api`). An app's command line can then read and check its run directory
before it pays for jax (seconds), and still after a Ctrl-C cut that import short.
"""

from __future__ import annotations

from tjx.ckpt.checkpoint_config import CheckpointConfig
from tjx.ckpt.errors import (
    CheckpointCommitError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    NotCreatableError,
    StepExistsError,
)
from tjx.ckpt.fallback import CorruptCheckpointWarning, corrupt_fallback_lines
from tjx.ckpt.folder import (
    RunFileError,
    RunFileNotFoundError,
    RunFolder,
    check_can_create,
)
from tjx.ckpt.last_step import last_checkpoint_words
from tjx.ckpt.lock import RunLock, RunLockedError, check_unlocked, release_held_locks
from tjx.ckpt.lost_peer import silence_lost_peer_commits
from tjx.ckpt.storage import (
    AccessDeniedError,
    BucketNotFoundError,
    NoCredentialsError,
    StorageError,
    UnsupportedURLError,
    check_remote,
    is_remote,
)
from tjx.ckpt.version import __version__
from tjx.core import config as _config
from tjx.core.deprecation import moved_out, moved_to_trainer
from tjx.core.lazy import lazy_api

_CORE = "{} is tjx-core's (its old name here warned until 0.16): `from {} import {}`"

#: Names that moved to tjx-core in 0.14, whose old names here warned until 0.16: reading one is an
#: ImportError naming its new import. The config engine (`tjx.core.config`, `flatten_config`
#: too) and `setting` (`tjx.core.fields`).
_moved_to_core = moved_out(
    __name__,
    {
        "setting": _CORE.format("a config field's declaration", "tjx.core.fields", "setting"),
        **{
            name: _CORE.format("the config engine", "tjx.core.config", name)
            for name in _config.__all__
        },
    },
    since="tjx-ckpt 0.14",
)

_run_dir = moved_to_trainer("directory", "trainer", ("RunDir",))
_run_dir["RunDir"] += " (its storage stays here: `tjx.ckpt.RunFolder`)"

#: Names that moved to the trainer app in 0.15 (a package never imports an app, so no shim):
#: reading one is an ImportError naming its new import; every other name goes to `_moved_to_core`.
_moved_out = moved_out(
    __name__,
    _run_dir
    | moved_to_trainer("final.json", "trainer.config.folder", ("final_summary",))
    | moved_to_trainer("start check", "trainer.config.folder", ("RunStartError",))
    | moved_to_trainer("start check", "trainer.loop.location", ("start_location",))
    | moved_to_trainer("resume", "trainer.loop.location", ("resumed_config",))
    | moved_to_trainer(
        "config check on resume",
        "trainer.config.changes",
        ("ConfigChanges", "config_changes", "describe_changes", "key_matches"),
    ),
    since="tjx-ckpt 0.15",
    otherwise=_moved_to_core,
)

# The names whose modules import orbax or jax, imported on first use; a name that moved away is
# an ImportError naming its new import (`_moved_out`).
with lazy_api(globals(), otherwise=_moved_out):
    from tjx.ckpt.digest import params_sha256
    from tjx.ckpt.manager import CheckpointManager, Restored
    from tjx.ckpt.metadata import collect_metadata, to_json
    from tjx.ckpt.params import restore_params, restore_params_and_step
    from tjx.ckpt.resume import restore_placed
    from tjx.ckpt.safetensors_io import (
        export_safetensors,
        flat_names,
        import_safetensors,
        unflatten_params,
    )

__all__ = [
    "AccessDeniedError",
    "BucketNotFoundError",
    "CheckpointCommitError",
    "CheckpointConfig",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "CorruptCheckpointWarning",
    "NoCredentialsError",
    "NotCreatableError",
    "Restored",
    "RunFileError",
    "RunFileNotFoundError",
    "RunFolder",
    "RunLock",
    "RunLockedError",
    "StepExistsError",
    "StorageError",
    "UnsupportedURLError",
    "__version__",
    "check_can_create",
    "check_remote",
    "check_unlocked",
    "collect_metadata",
    "corrupt_fallback_lines",
    "export_safetensors",
    "flat_names",
    "import_safetensors",
    "is_remote",
    "last_checkpoint_words",
    "params_sha256",
    "release_held_locks",
    "restore_params",
    "restore_params_and_step",
    "restore_placed",
    "silence_lost_peer_commits",
    "to_json",
    "unflatten_params",
]
