"""Putting host batches on devices ahead of time, keeping the loader's resume state exact."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["DevicePrefetcher", "prefetch_to_device"]


class DevicePrefetcher:
    """Iterator that keeps ``size`` batches already transferred (``jax.device_put`` is async).

    If the wrapped iterator has ``state_dict`` / ``load_state_dict`` (a ``PackedLoader``), this
    object has them too and they describe the batches *yielded from here*, not those in flight,
    so a checkpoint taken between steps resumes exactly.
    """

    def __init__(
        self,
        iterator: Any,
        *,
        size: int = 2,
        sharding: Any = None,
        put: Callable[[Any], Any] | None = None,
    ):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if put is not None and sharding is not None:
            raise ValueError("give `sharding` or `put`, not both (`put` places the batch itself)")
        import jax  # lazy: tjx.data itself never needs jax

        self._jax = jax
        self._put = put
        self._source = iterator
        self._iter = iter(iterator)
        self._size = size
        self._sharding = sharding
        self._tracks_state = hasattr(iterator, "state_dict")
        self._queue: collections.deque[tuple[Any, Any]] = collections.deque()
        self._state = iterator.state_dict() if self._tracks_state else None
        self._exhausted = False

    def _fill(self) -> None:
        while not self._exhausted and len(self._queue) < self._size:
            try:
                batch = next(self._iter)
            except StopIteration:
                self._exhausted = True
                return
            state = self._source.state_dict() if self._tracks_state else None
            if self._put is not None:
                placed = self._put(batch)
            elif self._sharding is None:
                placed = self._jax.device_put(batch)
            else:
                placed = self._jax.device_put(batch, self._sharding)
            self._queue.append((placed, state))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        self._fill()
        if not self._queue:
            raise StopIteration
        batch, self._state = self._queue.popleft()
        self._fill()
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The wrapped loader's state after the last batch yielded here."""
        if not self._tracks_state:
            raise TypeError("the wrapped iterator has no state_dict()")
        return dict(self._state or {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Drop in-flight batches and move the wrapped loader to ``state``."""
        if not self._tracks_state:
            raise TypeError("the wrapped iterator has no load_state_dict()")
        self._source.load_state_dict(state)
        self._queue.clear()
        self._iter = iter(self._source)
        self._state = self._source.state_dict()
        self._exhausted = False


def prefetch_to_device(
    iterator: Any,
    *,
    size: int = 2,
    sharding: Any = None,
    put: Callable[[Any], Any] | None = None,
) -> DevicePrefetcher:
    """Wrap an iterator of (pytrees of) numpy batches so ``size`` are already on device.

    Parameters
    ----------
    iterator:
        E.g. a :class:`~tjx.data.loader.PackedLoader` (its own thread builds the host batches).
    size:
        Batches in flight.
    sharding:
        A ``jax.sharding.Sharding`` (or a pytree of them matching the batch) to place each batch
        with, e.g. a ``NamedSharding`` over the mesh's data axes; ``None`` = default device.
    put:
        Instead of ``sharding``: a function that places one host batch itself. A multi-host run
        needs it: ``device_put`` would take each host's own rows for the whole global batch,
        while ``jax.make_array_from_process_local_data`` (as in
        ``tjx.parallel.host_local_to_global``) assembles it from every host's rows.

    Returns
    -------
    DevicePrefetcher
        An iterator of ``jax.Array`` batches with ``state_dict`` / ``load_state_dict`` passed
        through when the source has them.
    """
    return DevicePrefetcher(iterator, size=size, sharding=sharding, put=put)
