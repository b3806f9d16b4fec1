"""A JSONL log in object storage (real gs:// and s3:// servers on 127.0.0.1): written whole,
batched, read back; a resumed run continues the same object."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import pytest

# The test servers and the process-wide endpoint settings a tjx run makes (tjx-ckpt's): used
# by this test only, tjx-metrics itself reads the standard settings through etils/fsspec.
import tjx_teststores as teststores

from tjx.ckpt import storage
from tjx.metrics import JsonlLogger, make_logger, read_jsonl, rewound_path
from tjx.metrics.plots import plot_run


@pytest.fixture(scope="module", params=["gs", "s3"])
def store(request: pytest.FixtureRequest) -> Iterator[teststores.LocalStore]:
    with teststores.using(request.param) as server:  # one server per scheme per process
        storage.configure()
        yield server


def test_records_are_uploaded_whole_on_flush_and_when_due(store: teststores.LocalStore) -> None:
    url = store.url(uuid.uuid4().hex, "metrics.jsonl")
    logger = JsonlLogger(url, upload_every=3600)
    logger.log_scalars(1, {"loss": 2.0})
    with pytest.raises(FileNotFoundError):  # batched: nothing uploaded yet
        read_jsonl(url)
    logger.flush()
    assert [r["loss"] for r in read_jsonl(url)] == [2.0]
    logger.upload_every = 0.0  # due at once: every record is uploaded
    logger.log_scalars(2, {"loss": float("nan")})
    assert math.isnan(read_jsonl(url)[-1]["loss"])
    logger.close()
    with pytest.raises(ValueError, match="closed"):
        logger.log_scalars(3, {"loss": 1.0})
    # A resumed run continues the same object.
    with JsonlLogger(url) as again:
        again.log_text(3, "sample", "hello")
    records = read_jsonl(url)
    assert [r["step"] for r in records] == [1, 2, 3] and records[2]["text"] == {"sample": "hello"}


def test_make_logger_and_plot_run_on_a_store(store: teststores.LocalStore) -> None:
    run = store.url(uuid.uuid4().hex)
    with make_logger(["jsonl"], run) as logger:
        for step in range(1, 4):
            logger.log_scalars(step, {"loss": 3.0 / step, "learning_rate": 0.1})
    assert len(read_jsonl(f"{run}/metrics.jsonl")) == 3
    png = plot_run(run, f"{run}/loss_curve.png")
    assert png == f"{run}/loss_curve.png"
    data = storage.filesystem(png).cat_file(png)
    assert data.startswith(b"\x89PNG")
    assert plot_run(store.url("nothing-here"), store.url("nothing-here", "x.png")) is None
    with pytest.raises(ValueError, match="tensorboard write.s. files into a local folder"):
        make_logger(["jsonl", "tensorboard"], run)


def test_a_resumed_log_in_a_store_moves_the_steps_after_its_checkpoint_aside(
    store: teststores.LocalStore,
) -> None:
    run = store.url(uuid.uuid4().hex)
    url = f"{run}/metrics.jsonl"
    with JsonlLogger(url) as logger:
        for step in range(1, 6):
            logger.log_scalars(step, {"loss": 1.0 / step})
    with JsonlLogger(url, rewind_after=3) as resumed:
        assert resumed.rewound == 2
        resumed.log_scalars(4, {"loss": 0.25})
    steps = [(r["step"], r["loss"]) for r in read_jsonl(url)]
    assert steps == [(1, 1.0), (2, 1 / 2), (3, 1 / 3), (4, 0.25)]  # each step once
    side = rewound_path(url)
    assert side == f"{run}/metrics.rewound.jsonl"
    assert [(r["step"], r["loss"]) for r in read_jsonl(side)] == [(4, 1 / 4), (5, 1 / 5)]
