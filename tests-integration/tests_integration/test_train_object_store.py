"""A run directory in object storage (``--run-dir gs://...`` / ``s3://...``, real servers on
127.0.0.1 started per module): the trainer trains and checkpoints there, is killed with SIGKILL in
the middle of a save, ``--resume`` ends with the parameters and losses of an uninterrupted run bit
for bit, and the evaluator reads the run (``--checkpoint URL``) and its step.

The kill comes when the first object of step 8 appears in the store, so the save of step 8 is
under way: either its commit marker is not there yet (the usual case: a step that must be ignored
and removed) or it just made it (then step 8 is a whole checkpoint). Both are checked."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tjx_teststores as teststores

from tests_integration._helpers_apps import (
    RESUMED,
    RESUMED_EVERY,
    RESUMED_STEPS,
    app_env,
    call_app,
    check_ok,
    final,
    reference_run,
    run_app,
    train,
    train_losses,
)
from tests_integration._helpers_stores import (
    committed,
    fresh_url,
    losses,
    serving,
    step_objects,
)
from tjx.ckpt import objects

# 20 steps, dropout, a checkpoint every 4 (test_train_resume.py's run: one reference for both).
# 12 steps after the kill: room for the poll to see step 8's save start before the run ends.
STEPS, EVERY, KILL_AT = RESUMED_STEPS, RESUMED_EVERY, 8
SETS = RESUMED


@pytest.fixture(scope="module", params=["gs", "s3"])
def store(request: pytest.FixtureRequest) -> Iterator[teststores.LocalStore]:
    with serving(request.param) as server:
        yield server


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, in a local folder (trained once per test process)."""
    return reference_run(tmp_path_factory.mktemp("reference"), SETS)


def _kill_mid_save(tmp_path: Path, url: str) -> None:
    args = [sys.executable, "-m", "trainer", "--config", "tiny", "--run-dir", url]
    for item in SETS:
        args += ["--set", item]
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=app_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    try:
        while not step_objects(url, KILL_AT):
            assert (
                proc.poll() is None
            ), f"ended before step 8's save: {proc.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, "step 8's save never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def test_a_run_on_a_store_resumes_bit_exact_after_kill_9_mid_save_and_evaluates(
    store: teststores.LocalStore, reference: Path, tmp_path: Path
) -> None:
    url = fresh_url(store, "run")
    _kill_mid_save(tmp_path, url)
    steps = committed(url)
    assert EVERY in steps and max(steps) in (EVERY, KILL_AT), steps
    start = max(steps)
    debris = KILL_AT not in steps  # the save cut short: objects without the commit marker
    resumed = train(tmp_path, url, SETS, "--resume")
    check_ok(resumed)
    assert f"resumed from step {start}" in resumed.stdout
    assert f"done: {STEPS} steps; run directory {url}" in resumed.stdout
    # Bit for bit the uninterrupted run: parameters, and every loss the store's log holds (the
    # killed process's records up to its last checkpoint were uploaded with that checkpoint).
    assert final(url)["params_sha256"] == final(reference)["params_sha256"]
    ref = train_losses(reference)
    got = losses(url)
    assert got == {step: ref[step] for step in got}
    assert set(range(1, EVERY + 1)) | set(range(start + 1, STEPS + 1)) <= set(got)
    # Only committed steps are left: the cut save's objects were removed or saved over.
    steps = committed(url)
    assert STEPS in steps and set(steps) <= set(range(EVERY, STEPS + 1, EVERY)), steps
    assert objects.step_prefixes(f"{url}/checkpoints") == steps
    if debris:  # step 8 was saved again by the resumed run, whole (or removed with keep-N)
        assert KILL_AT in steps or step_objects(url, KILL_AT) == {}
    for name in ("config.yaml", "model.json", "data.json", "final.json", "loss_curve.png"):
        assert objects.read_bytes(f"{url}/{name}"), name
    # No credential is written into the run directory, nor printed.
    secrets = (teststores.FAKE_KEY_ID, teststores.FAKE_SECRET)
    for name in objects.file_sizes(url):
        data = objects.read_bytes(f"{url}/{name}")
        assert not any(secret.encode() in data for secret in secrets), name
    assert not any(secret in resumed.stdout + resumed.stderr for secret in secrets)

    # The evaluator reads the run from the store (the newest step) and scores it: its main in
    # this process (the command line and the store's clients are the same; no interpreter to
    # start and import for it).
    args = ["--checkpoint", url, "--batch-size", "8", "--max-batches", "2"]
    evaluated = call_app("eval", [*args, "--attention-png", "none"], tmp_path)
    check_ok(evaluated)
    assert f"run {url} at step {STEPS}" in evaluated.stdout
    assert any(line.split()[:1] == ["loss"] for line in evaluated.stdout.splitlines())

    # A replay reads the run from the store (#73): the steps after the killed save, bit for bit
    # (dropout's masks included), the report in a local folder; nothing is written to the store.
    before = objects.file_sizes(url)
    out = tmp_path / "replayed"
    args = ["--replay", url, "--steps", f"{KILL_AT + 1}:{KILL_AT + 2}", "--probe", "grad_norms"]
    replayed = call_app("trainer", [*args, "--out", str(out)], tmp_path)  # in this process too
    check_ok(replayed)
    assert "logged losses replayed bit for bit" in replayed.stdout
    assert (out / "report.md").is_file() and objects.file_sizes(url) == before


def _bare(store: teststores.LocalStore, home: Path) -> dict[str, str]:
    """The apps' environment with no credentials anywhere a client looks (and no emulator)."""
    env = {k: v for k, v in app_env().items() if not k.startswith(("AWS_", "GOOGLE_"))}
    env.pop("STORAGE_EMULATOR_HOST", None)
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(home / "none"),
        AWS_CONFIG_FILE=str(home / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        CLOUDSDK_CONFIG=str(home / "gcloud"),
    )
    return env


def test_a_store_the_apps_cannot_use_is_one_line_and_exit_2(
    store: teststores.LocalStore, tmp_path: Path
) -> None:
    bucket = f"{store.scheme}://no-such-bucket-tjx"
    # A missing bucket: the trainer's main in this process. No credentials: a process (its
    # environment lacks variables this one has), which is also the exit status a shell sees.
    args = ["--config", "tiny", "--set", SETS[0], "--run-dir"]
    missing = call_app("trainer", [*args, f"{bucket}/run"], tmp_path)
    bare = run_app("trainer", [*args, store.url("run")], tmp_path, env=_bare(store, tmp_path))
    cases = [
        (missing, f"--run-dir: bucket {bucket} does not exist"),
        (bare, "--run-dir: cannot use "),
    ]
    for proc, line in cases:
        assert proc.returncode == 2, proc.stderr[-3000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and line in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr and teststores.FAKE_SECRET not in proc.stderr
    evaluated = call_app("eval", ["--checkpoint", f"{bucket}/run"], tmp_path)
    assert evaluated.returncode == 2, evaluated.stderr[-3000:]
    assert evaluated.stderr.strip().splitlines() == [
        f"eval: error: bucket {bucket} does not exist (cannot read {bucket}/run): create it "
        "first, or check the bucket's name"
    ]
    assert not any(p.name.endswith(":") for p in tmp_path.iterdir())  # no local "gs:" folder


def test_a_url_scheme_tjx_cannot_serve_is_one_line(tmp_path: Path) -> None:
    proc = call_app("trainer", ["--config", "tiny", "--run-dir", "hdfs://nn/run"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "trainer: error: --run-dir: 'hdfs://nn/run': tjx cannot write to hdfs:// URLs; use a "
        "local path, gs://BUCKET/PATH or s3://BUCKET/PATH"
    ]
    assert list(tmp_path.iterdir()) == []
