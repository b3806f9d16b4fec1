"""The one module of tjx-parallel that uses jax's private internals (jax 0.10.2 to 0.11.x).

jax has no public way to reach what these give, and tjx-parallel needs both:

* ``jax._src.distributed.global_state``: the runtime client that ``jax.distributed.initialize``
  starts (its key-value store and barriers carry the peer watch and the stop agreement) and the
  setup jax resolved (its detectors may have filled the coordinator, the count, the rank);
* ``jaxlib.utils.absl_set_min_log_level``: absl's C++ log off, FATAL included, so that an abort
  is one line instead of a stack dump (jax's public ``jax_logging_level`` stops at FATAL).

:data:`PRIVATE` names each symbol and what tjx uses of it; ``test_internals.py`` fails naming the
one a jax upgrade moved, and so does every call here (never an AttributeError deep in a run).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PRIVATE", "joined_setup", "private", "runtime_client", "set_cpp_log_level"]

#: Each private symbol → the attributes tjx uses of it.
PRIVATE = {
    "jax._src.distributed.global_state": (
        "client",
        "coordinator_address",
        "num_processes",
        "process_id",
    ),
    "jaxlib.utils.absl_set_min_log_level": (),
    # The client's methods (a jaxlib class, typed in jaxlib/_jax/__init__.pyi).
    "jaxlib._jax.DistributedRuntimeClient": (
        "key_value_set",
        "key_value_dir_get",
        "wait_at_barrier",
    ),
}


def private(symbol: str) -> Any:
    """``symbol`` (a key of :data:`PRIVATE`), with every attribute tjx uses of it.

    Raises
    ------
    RuntimeError
        The symbol or one of its attributes is gone: the message names it and the jax version.
    """
    module, _, name = symbol.rpartition(".")
    try:
        value = getattr(importlib.import_module(module), name)
        for attribute in PRIVATE[symbol]:
            getattr(value, attribute)
    except (ImportError, AttributeError) as err:
        import jax

        raise RuntimeError(
            f"tjx-parallel uses jax's private {symbol} ({err}), which jax {jax.__version__} "
            "does not have; use the jax version tjx-parallel's requirements name"
        ) from None
    return value


def runtime_client(caller: str) -> tuple[Any, int, int]:
    """jax's distributed runtime client, this process's id and the process count (read without
    starting the XLA backend).

    Raises
    ------
    RuntimeError
        ``jax.distributed`` was not initialised (the message starts with ``caller``).
    """
    state = private("jax._src.distributed.global_state")
    if state.client is None:
        raise RuntimeError(
            f"{caller}: jax.distributed is not initialised (call tjx.parallel.join or "
            "initialize first; on a Cloud TPU VM name the cluster: --cluster gcetpu)"
        )
    return state.client, state.process_id, state.num_processes


def joined_setup() -> tuple[str | None, int, int]:
    """The coordinator, process count and id jax is joining or has joined with (jax sets them
    before it connects, so they are there while the connect blocks)."""
    state = private("jax._src.distributed.global_state")
    return state.coordinator_address, state.num_processes, state.process_id


def set_cpp_log_level(level: int) -> None:
    """absl's minimum C++ log level (1000: nothing, FATAL included)."""
    private("jaxlib.utils.absl_set_min_log_level")(level)
