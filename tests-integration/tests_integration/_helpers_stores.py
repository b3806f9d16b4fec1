"""Run directories in object storage for the app tests: a local gs:// or s3:// server per test
module (tests-support's `tjx_teststores`: fake-gcs-server, moto), its settings in this process
and in the apps' environment, and reading a run's files from the store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import tjx_teststores as teststores

from tjx.ckpt import objects, storage
from tjx.metrics import read_jsonl
from trainer import RunDir


@contextmanager
def serving(scheme: str) -> Iterator[teststores.LocalStore]:
    """This process's server for ``scheme`` (tjx-ckpt's `teststores.using`: one per process);
    its client settings in ``os.environ`` meanwhile (the apps this process starts inherit them
    through ``app_env``)."""
    with teststores.using(scheme) as server:
        storage.configure()
        try:
            yield server
        finally:
            storage.configure()


def fresh_url(store: teststores.LocalStore, name: str) -> str:
    """A run directory URL no test used before."""
    return store.url(f"{name}-{uuid.uuid4().hex[:8]}")


def committed(run_url: str) -> list[int]:
    """The run's committed steps (a step counts once its marker is there)."""
    return objects.committed_steps(f"{run_url}/checkpoints")


def step_objects(run_url: str, step: int) -> dict[str, int]:
    """The objects of one step folder (committed or not) and their sizes."""
    try:
        return objects.file_sizes(f"{run_url}/checkpoints/{step}")
    except FileNotFoundError:
        return {}


def losses(run_url: str) -> dict[int, float]:
    """Step → training loss in the run's ``metrics.jsonl`` (the last record wins)."""
    return {r["step"]: r["loss"] for r in read_jsonl(f"{run_url}/metrics.jsonl") if "loss" in r}


def final_of(run_url: str) -> dict[str, Any]:
    """The run's ``final.json``."""
    return RunDir(run_url).read(RunDir.FINAL_FILE)
