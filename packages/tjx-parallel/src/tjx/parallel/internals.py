"""The one module of tjx-parallel that uses jax's private internals (jax 0.10.2 to 0.11.x).

jax has no public way to reach either, and tjx-parallel needs both: the runtime client that
``jax.distributed.initialize`` starts (its key-value store and barriers carry the peer watch and
the stop agreement) with the setup jax resolved (its detectors may have filled it), and absl's C++
log level (off, FATAL included, so that an abort is one line; jax's public ``jax_logging_level``
stops at FATAL). :data:`PRIVATE` names each symbol and what is used of it; ``test_internals.py``
fails naming the one a jax upgrade moved, and so does every call here.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Each private symbol → the attributes tjx-parallel uses of it.
PRIVATE = {
    "jax._src.distributed.global_state": (
        "client",
        "coordinator_address",
        "num_processes",
        "process_id",
    ),
    "jaxlib._jax.DistributedRuntimeClient": (
        "key_value_set",
        "key_value_dir_get",
        "wait_at_barrier",
    ),
    "jaxlib.utils.absl_set_min_log_level": (),
}


def private(symbol: str) -> Any:
    """``symbol`` (a key of :data:`PRIVATE`); a RuntimeError naming it and the jax version when
    it, or an attribute used of it, is gone."""
    module, _, name = symbol.rpartition(".")
    try:
        value = getattr(importlib.import_module(module), name)
        for attribute in PRIVATE[symbol]:
            getattr(value, attribute)
    except (ImportError, AttributeError) as err:
        import jax

        raise RuntimeError(
            f"tjx-parallel uses jax's private {symbol} ({err}), which jax {jax.__version__} "
            "does not have; install the jax version tjx-parallel's requirements name"
        ) from None
    return value


def runtime_client(caller: str) -> tuple[Any, int, int]:
    """jax's runtime client, this process's id and the count (the XLA backend is not started);
    a RuntimeError starting with ``caller`` when ``jax.distributed`` is not initialised."""
    state = private("jax._src.distributed.global_state")
    if state.client is None:
        raise RuntimeError(
            f"{caller}: jax.distributed is not initialised (call tjx.parallel.join first; on a "
            "Cloud TPU VM name the cluster: --cluster gcetpu)"
        )
    return state.client, state.process_id, state.num_processes


def joined_setup() -> tuple[str | None, int, int]:
    """The coordinator, process count and id jax joins with (set before it connects)."""
    state = private("jax._src.distributed.global_state")
    return state.coordinator_address, state.num_processes, state.process_id


def set_cpp_log_level(level: int) -> None:
    """absl's minimum C++ log level (1000: nothing, FATAL included)."""
    private("jaxlib.utils.absl_set_min_log_level")(level)
