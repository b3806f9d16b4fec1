"""Shared fixtures of the tjx-ckpt tests."""

from __future__ import annotations

import gc
import sys
import time
import uuid
from collections.abc import Iterator

import jax
import numpy as np
import pytest
import tjx_teststores as teststores
from jax.sharding import Mesh


@pytest.fixture
def mesh8() -> Mesh:
    """A 1-d FSDP mesh over the 8 simulated CPU devices."""
    assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    return Mesh(np.array(jax.devices()), ("fsdp",))


@pytest.fixture
def mesh4x2() -> Mesh:
    """A 4x2 (data, tensor) mesh over the 8 simulated CPU devices."""
    return Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "tensor"))


@pytest.fixture
def default_unraisablehook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's own unraisable hook for the test (not pytest's), after earlier tests' leftovers.

    Python's hook prints an exception raised in a callback to stderr, as the trainer saw; pytest's
    would turn it into a warning at the end of the test, out of capfd's reach. The tests that use
    this check that *their* restore prints nothing, so a failed read an earlier test left to
    orbax (a future whose exception nobody retrieved, which asyncio reports when it is collected)
    must report now, in setup, not in the middle of this test.
    """
    time.sleep(0.2)  # a read still in flight ends
    gc.collect()
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)


@pytest.fixture(scope="module", params=["gs", "s3"])
def store(request: pytest.FixtureRequest) -> Iterator[teststores.LocalStore]:
    """A local object-store server (fake-gcs-server, moto; one per scheme for the whole process),
    its client settings in this process's environment while the module's tests run."""
    with teststores.using(request.param) as server:
        yield server


@pytest.fixture
def store_url(store: teststores.LocalStore, request: pytest.FixtureRequest) -> str:
    """A fresh prefix in the store's bucket, named after the test."""
    return store.url(f"{request.node.name.replace('[', '-').rstrip(']')}-{uuid.uuid4().hex[:8]}")
