"""Two trainer processes on loopback share one run directory in object storage (``gs://`` on a
local fake-gcs-server): both write their shards of one checkpoint there, process 0 commits it,
both resume from it, and the losses equal a 1-process run's (to ``REL``, as in
``test_train_multiprocess.py``). Nothing is written to the local disk under the run's name."""

from __future__ import annotations

import pytest

from tests_integration._helpers_apps import SMALL, train_losses
from tests_integration._helpers_multiprocess import (
    LAUNCH_TIMEOUT_S,
    REL,
    launch,
    one_process_run,
    pair,
    tails,
)
from tests_integration._helpers_stores import (
    committed,
    final_of,
    fresh_url,
    losses,
    serving,
    step_objects,
)

STEPS, STOP = 6, 3
SETS = [*SMALL, f"train.steps={STEPS}", f"train.eval_every={STOP}"]


def test_two_processes_write_one_checkpoint_to_a_store_and_resume_from_it(tmp_path):
    one_process_run(tmp_path, SETS)
    with serving("gs") as store:
        url = fresh_url(store, "two")
        stopped = launch(tmp_path, "stop", pair(url, [*SETS, f"train.stop_at={STOP}"]), 300)
        for i, r in enumerate(stopped):
            assert r["rc"] == 0, tails(stopped)
            assert f"multi-host: process {i} of 2" in r["out"] and f"saved step {STOP}" in r["out"]
        assert committed(url) == [STOP]
        # One checkpoint, both processes' arrays in it (OCDBT: a folder per writing process).
        names = step_objects(url, STOP)
        assert any("/ocdbt.process_0/" in n for n in names), sorted(names)
        assert any("/ocdbt.process_1/" in n for n in names), sorted(names)

        resumed = launch(tmp_path, "resume", pair(url, SETS, "--resume"), LAUNCH_TIMEOUT_S)
        for r in resumed:
            assert r["rc"] == 0, tails(resumed)
            assert f"resumed from step {STOP}" in r["out"] and f"done: {STEPS} steps" in r["out"]
        assert committed(url)[-1] == STEPS and final_of(url)["step"] == STEPS
        l1, l2 = train_losses(tmp_path / "one"), losses(url)
        assert sorted(l1) == sorted(l2) == list(range(1, STEPS + 1))
        for step in l1:
            assert l2[step] == pytest.approx(l1[step], rel=REL), (step, l1, l2)
    for r in [*stopped, *resumed]:  # nothing local under the run's name (no "gs:" folder)
        assert not r["writes"], r["writes"]
    assert not (tmp_path / "gs:").exists()
