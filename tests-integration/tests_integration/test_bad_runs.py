"""Bad input against an existing run: each case exits 2 with one error line and changes no file.
A second table, ``FAULTS``, holds a resume whose checkpoint the disk refuses (full, read-only):
one line, exit 2, the checkpoints committed before untouched, and ``--resume`` finishes once the
disk is fixed.

The cases work on a copy of one finished small run (trained once per test process): a ``--resume``
whose config changes what the checkpoints hold (model, optimizer state, data stream), a broken
``config.yaml`` or ``model.json``, unreadable checkpoints, evaluator flags that do not fit the run.
Every file of the copy is hashed (and its modification time taken) before and after. The cases
call the app's ``main`` in this process (`call_app`) but for ``AS_PROCESSES``, which run as
``python -m APP`` (the exit status a shell sees). A second trainer in a run directory another one
is training in is refused the same way (`test_a_second_trainer_in_a_live_run_dir_...`). The
resumes that are accepted (but the one a fault stops) call the trainer's ``main`` here too.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests_integration._helpers_apps import (
    SMALL,
    app_env,
    call_app,
    final,
    run_app,
    trained_small_run,
)
from tests_integration._helpers_faults import run_with_fault
from tests_integration._helpers_unwritable import make_unwritable, writable_again
from tjx.ckpt import RunFolder

T = "trainer"
E = "eval"
# The trained run's own settings (see trained_small_run): a resume with them is accepted.
RUN_SETS = [*SMALL, "train.steps=30", "train.eval_every=15", "train.checkpoint_every=15"]


#: A replay of the run: the steps follow.
REPLAY = ["--replay", "r", "--steps"]


def resume_with(*changes: str, flags: tuple[str, ...] = ("--resume",)) -> list[str]:
    argv = ["--config", "tiny", "--run-dir", "r", *flags]
    for item in [*RUN_SETS, *changes]:
        argv += ["--set", item]
    return argv


def _break_config(run: Path) -> None:
    (run / "config.yaml").write_text("model: [1, 2\n")


def _drop_config(run: Path) -> None:
    (run / "config.yaml").unlink()


def _break_model_json(run: Path) -> None:
    (run / "model.json").write_text("{not json")


def _break_init_json(run: Path) -> None:
    (run / "init.json").write_text("{not json")


def _empty_model_json(run: Path) -> None:
    (run / "model.json").write_text("{}")


def _drop_model_json(run: Path) -> None:
    (run / "model.json").unlink()


def _corrupt_every_checkpoint(run: Path) -> None:
    # Every array data file (orbax's OCDBT ``d/`` folders) cut in half: no step can be restored.
    for path in (run / "checkpoints").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _immutable(run: Path) -> None:
    make_unwritable(run)  # root passes os.access on it; writing fails (EPERM)


def _zero_start_of_newest(run: Path) -> None:
    # The start of step 30's data files zeroed (a bad sector, a copy that wrote zeros first).
    for path in (run / "checkpoints" / "30").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            data = bytearray(path.read_bytes())
            data[:64] = bytes(64)
            path.write_bytes(bytes(data))


def _damage_chunks_of_newest(run: Path) -> None:
    # Step 30's array chunks, not its index: each zstd frame (magic 28 b5 2f fd) outside the
    # b-tree nodes (magic 0c db 20 de, then their length: 8 bytes, little-endian) loses its
    # magic. orbax wraps the failed chunk read in a message ending in a bound method's repr.
    for path in (run / "checkpoints" / "30").rglob("*"):
        if not (path.is_file() and path.parent.name == "d"):
            continue
        data = bytearray(path.read_bytes())
        nodes = [
            (m.start(), m.start() + int.from_bytes(data[m.start() + 4 : m.start() + 12], "little"))
            for m in re.finditer(re.escape(b"\x0c\xdb\x20\xde"), data)
        ]
        for frame in re.finditer(re.escape(b"\x28\xb5\x2f\xfd"), data):
            if not any(start <= frame.start() < end for start, end in nodes):
                data[frame.start()] ^= 0xFF
        path.write_bytes(bytes(data))


def _drop_metrics(run: Path) -> None:
    (run / "metrics.jsonl").unlink()


def _tamper_loss(run: Path) -> None:
    """Step 16's logged loss one part in a million off: no replay reproduces it."""
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record.get("step") == 16 and "loss" in record:
            lines[i] = json.dumps({**record, "loss": record["loss"] * (1 + 1e-6)}) + "\n"
    (run / "metrics.jsonl").write_text("".join(lines))


def _other_text(run: Path) -> None:
    (run.parent / "other.txt").write_text("another corpus entirely\n" * 400)


CASES = [
    # (id, app, argv, setup on the run copy, expected text in stderr)
    ("resume-d-model", T, resume_with("model.d_model=32"), None, "model.d_model 64 → 32"),
    ("resume-layers", T, resume_with("model.num_layers=3"), None, "model.num_layers 2 → 3"),
    ("resume-heads", T, resume_with("model.num_heads=4"), None, "model.num_heads 2 → 4"),
    ("resume-mlp", T, resume_with("model.mlp.dim=64"), None, "model.mlp.dim 128 → 64"),
    ("resume-context", T, resume_with("model.max_seq_len=64"), None, "model.max_seq_len"),
    ("resume-kind", T, resume_with("model.kind=llama"), None, "model.kind 'gpt2' → 'llama'"),
    ("resume-untie", T, resume_with("model.tie_embeddings=false"), None, "tie_embeddings"),
    ("resume-scan", T, resume_with("model.scan_layers=true"), None, "model.scan_layers"),
    (
        "resume-param-dtype",
        T,
        resume_with("model.precision.param_dtype=bfloat16"),
        None,
        "param_dtype",
    ),
    ("resume-vocab", T, resume_with("model.vocab_size=300"), None, "model.vocab_size None → 300"),
    ("resume-position", T, resume_with("model.position.kind=rope"), None, "model.position"),
    ("resume-batch", T, resume_with("data.batch_size=16"), None, "data.batch_size 8 → 16"),
    ("resume-seq-len", T, resume_with("data.seq_len=16"), None, "data.seq_len 32 → 16"),
    ("resume-tokenizer", T, resume_with("data.tokenizer=bpe"), None, "data.tokenizer"),
    (
        "resume-other-data",
        T,
        resume_with(flags=("--resume", "--data", "./other.txt")),
        _other_text,
        "data.source 'shakespeare' → './other.txt'",
    ),
    ("resume-no-shuffle", T, resume_with("data.shuffle=false"), None, "data.shuffle"),
    ("resume-seed", T, resume_with("train.seed=1"), None, "train.seed 0 → 1"),
    ("resume-optimizer", T, resume_with("optimizer.name=lion"), None, "optimizer.name"),
    ("resume-loss-scale", T, resume_with("optimizer.loss_scale=dynamic"), None, "loss_scale"),
    ("resume-no-skip", T, resume_with("optimizer.skip_nonfinite=false"), None, "skip_nonfinite"),
    (
        "resume-other-preset",
        T,
        ["--config", "gpt2_small", "--run-dir", "r", "--resume"],
        None,
        "model.d_model 64 → 768",
    ),
    (  # a resumable setting, but one nothing reads without float8 products (#71)
        "resume-fp8-setting-without-fp8",
        T,
        resume_with("model.precision.fp8_scaling=rowwise"),
        None,
        "model.precision.fp8_scaling='rowwise' has no effect: matmul is 'default'",
    ),
    ("resume-config-broken", T, resume_with(), _break_config, "is not a readable run config"),
    ("resume-config-missing", T, resume_with(), _drop_config, "config.yaml' is missing"),
    (
        "resume-every-checkpoint-corrupt",
        T,
        resume_with(),
        _corrupt_every_checkpoint,
        "--resume: no readable checkpoint",
    ),
    ("train-over-a-run", T, resume_with(flags=()), None, "already holds checkpoints"),
    ("resume-immutable-run-dir", T, resume_with(), _immutable, "--run-dir: cannot write into 'r'"),
    (
        "eval-immutable-run-dir",
        E,
        ["--checkpoint", "r"],
        _immutable,
        "--attention-png: cannot write into 'r' (",
    ),
    (
        "init-from-over-a-run",
        T,
        [
            "--config",
            "tiny",
            "--run-dir",
            "r",
            "--init-from",
            "gpt2",
            "--set",
            "data.tokenizer=gpt2",
        ],
        None,
        "already holds checkpoints",
    ),
    ("eval-model-json-broken", E, ["--checkpoint", "r"], _break_model_json, "model.json"),
    ("eval-model-json-empty", E, ["--checkpoint", "r"], _empty_model_json, "does not describe"),
    (  # the export reads where the run started (the model type to write back): one line
        "eval-export-init-json-broken",
        E,
        ["--checkpoint", "r", "--export-hf", "out"],
        _break_init_json,
        "init.json' is unreadable",
    ),
    ("eval-model-json-missing", E, ["--checkpoint", "r"], _drop_model_json, "model.json"),
    ("eval-config-broken", E, ["--checkpoint", "r"], _break_config, "config.yaml"),
    (
        "eval-every-checkpoint-corrupt",
        E,
        ["--checkpoint", "r"],
        _corrupt_every_checkpoint,
        "no readable checkpoint",
    ),
    ("eval-no-such-step", E, ["--checkpoint", "r", "--step", "7"], None, "7"),
    ("eval-missing-data", E, ["--checkpoint", "r", "--data", "./nope.txt"], None, "nope.txt"),
    ("eval-compare-nowhere", E, ["--compare", "r", "nowhere"], None, "no such run directory"),
    # #73: --replay RUN: the steps, probes and flags it takes, and a log it does not reproduce.
    ("replay-nowhere", T, ["--replay", "nowhere", "--steps", "1:2"], None, "no run directory"),
    ("replay-steps-backwards", T, [*REPLAY, "9:3"], None, "--steps: expected 1 <= A <= B"),
    ("replay-steps-garbled", T, [*REPLAY, "9"], None, "--steps: expected A:B"),
    ("replay-steps-beyond", T, [*REPLAY, "20:40"], None, "--steps: the run reached step 30"),
    (
        "replay-unknown-probe",
        T,
        [*REPLAY, "1:2", "--probe", "grad_norms,magic"],
        None,
        "--probe: unknown probe 'magic'; choose from grad_norms, update_norms, activations",
    ),
    ("replay-with-config", T, [*REPLAY, "1:2", "--config", "tiny"], None, "--config: --replay"),
    ("replay-steps-and-spikes", T, [*REPLAY, "1:2", "--spikes"], None, "--spikes: replays the"),
    ("replay-no-steps", T, ["--replay", "r"], None, "--replay: name the steps to replay"),
    ("replay-no-spikes", T, ["--replay", "r", "--spikes"], None, "the run marked no loss spike"),
    ("replay-no-log", T, [*REPLAY, "1:2"], _drop_metrics, "metrics.jsonl' is missing: a replay"),
    ("replay-out-a-file", T, [*REPLAY, "1:2", "--out", "r/config.yaml"], None, "is a file"),
    (
        "replay-a-tampered-loss",
        T,
        [*REPLAY, "16:16", "--probe", "grad_norms"],
        _tamper_loss,
        "--replay: step 16 differs from the run: its loss is ",
    ),
]


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: relative path → (sha256, modification time in ns)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _wait_until_stopped(pid: int, timeout_s: float = 60) -> None:
    """Return once every thread of ``pid`` is stopped (state ``T``).

    ``kill(SIGSTOP)`` returns before the threads stop: one inside a system call (orbax's async
    save writing a file) stops only when the call returns, so a snapshot taken at once can miss
    that last write.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                # "tid (comm) S ...": the name may hold spaces or parentheses, the state follows
                # the last ")".
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
                continue
        if states and all(state in "Tt" for state in states):
            return
        assert time.monotonic() < deadline, f"pid {pid} did not stop: thread states {states}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return trained_small_run(tmp_path_factory.mktemp("trained"))


#: Cases run as real processes: a resume the trainer refuses, and the evaluator failing on
#: orbax's reads (its threads' output must not reach stderr either).
AS_PROCESSES = {"resume-d-model", "eval-every-checkpoint-corrupt"}


@pytest.mark.parametrize(
    ("case", "app", "argv", "setup", "needle"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input_on_a_run_exits_2_and_changes_nothing(
    tmp_path, trained, case, app, argv, setup, needle
):
    run = tmp_path / "r"
    shutil.copytree(trained, run)  # copy2: times kept, so an untouched file keeps its stamp
    try:
        if setup is not None:
            setup(run)
        before = _snapshot(tmp_path)
        if case in AS_PROCESSES:
            proc = run_app(app, argv, tmp_path, timeout=300)
        else:
            proc = call_app(app, argv, tmp_path)
    finally:
        writable_again()
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert needle in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if f"{app}: error:" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert _snapshot(tmp_path) == before


def test_a_resume_that_changes_nothing_writes_nothing(tmp_path, trained):
    run = tmp_path / "r"
    shutil.copytree(trained, run)
    before = _snapshot(tmp_path)
    proc = call_app(T, resume_with(), tmp_path)  # in this process: no interpreter to start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nothing to do: the run is already at step 30 of 30" in proc.stdout
    assert _snapshot(tmp_path) == before


def test_a_resume_says_which_training_settings_change(tmp_path, trained):
    run = tmp_path / "r"
    shutil.copytree(trained, run)
    model_json = _snapshot(run)["model.json"]
    argv = resume_with(
        "train.steps=32", "optimizer.schedule.peak_lr=0.002", "logging.sinks=[jsonl]"
    )
    proc = call_app(T, argv, tmp_path)  # in this process, as the resume after a fault below
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        "resume: changed settings: optimizer.schedule.peak_lr 0.005 → 0.002, train.steps 30 → 32"
        in proc.stdout
    )
    assert "resumed from step 30" in proc.stdout and "done: 32 steps" in proc.stdout
    assert "steps: 32" in (run / "config.yaml").read_text()  # the run's config is the new one
    assert _snapshot(run)["model.json"] == model_json  # same model: the file was not rewritten


EVAL = ["--checkpoint", "r", "--max-batches", "1", "--attention-png", "none"]
FALLBACKS = [
    # (id, app, argv, damage): a corrupt newest step (30) is skipped in one warning line, step 15
    # used; the line says which array or file failed and why, in words. The resume stops after
    # its first step (16): what it restored is what is checked, not 14 more steps of training.
    (
        "resume",
        T,
        resume_with("train.stop_at=16"),
        _zero_start_of_newest,
        "the array store's index is damaged",
    ),
    ("eval", E, EVAL, _zero_start_of_newest, "the array store's index is damaged"),
    ("eval-chunk", E, EVAL, _damage_chunks_of_newest, "its compressed bytes are damaged"),
]
#: The fallbacks run as processes (nothing of orbax's threads reaches the terminal) but this
#: one, the evaluator's ``main`` in this process: "eval" shows the same fallback as a process.
FALLBACKS_IN_PROCESS = {"eval-chunk"}


@pytest.mark.parametrize(
    ("case", "app", "argv", "damage", "said"), FALLBACKS, ids=[c[0] for c in FALLBACKS]
)
def test_a_corrupt_newest_checkpoint_is_one_warning_line(
    tmp_path, trained, case, app, argv, damage, said
):
    run = tmp_path / "r"
    shutil.copytree(trained, run)
    damage(run)
    if case in FALLBACKS_IN_PROCESS:
        proc = call_app(app, argv, tmp_path)
    else:
        proc = run_app(app, argv, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]  # no source line, no orbax/asyncio traceback
    assert lines[0].startswith(
        f"{app}: warning: tjx.ckpt: skipping corrupt checkpoint step 30 ("
    ), lines[0]
    assert lines[0].endswith("; using step 15"), lines[0]
    assert re.search(rf"\): reading array [\w/]+ \(.+ failed: {said} \(", lines[0]), lines[0]
    assert not re.search(r"bound method|pybind11|TensorStore", lines[0]), lines[0]


def test_a_second_trainer_in_a_live_run_dir_exits_2_and_changes_nothing(tmp_path):
    # The first trainer runs long; once it has saved a step it is paused (SIGSTOP: its lock and
    # its files stay as they are) while a second trainer tries the run directory, fresh and as
    # a --resume. Then the first is killed with SIGKILL: its lock dies with it, --resume goes on.
    argv = resume_with("train.steps=100000", "train.checkpoint_every=2", flags=())
    first = subprocess.Popen(
        [sys.executable, "-m", T, *argv],
        cwd=tmp_path,
        env=app_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = tmp_path / "r"
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoints" / "2").is_dir():  # committed: the rename made it appear
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        first.send_signal(signal.SIGSTOP)
        _wait_until_stopped(first.pid)  # a thread mid-write finishes it before it stops
        before = _snapshot(tmp_path)
        refused = [
            # A resume, as a real process (before the lock it restored and trained: a timeout).
            run_app(T, [*argv, "--resume"], tmp_path, timeout=180),
            call_app(T, argv, tmp_path),  # a fresh start: the same check, in this process
        ]
        assert _snapshot(tmp_path) == before
        # Reading needs no lock: the evaluator scores the run the trainer holds.
        evaluated = call_app(E, EVAL, tmp_path)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    finally:
        first.kill()  # SIGKILL, which a stopped process takes too
        first.wait()
    for proc in refused:
        assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
        errors = [line for line in proc.stderr.splitlines() if line]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert errors[0].startswith(
            f"trainer: error: --run-dir: 'r' is in use by another trainer (pid {first.pid} on "
            f"host {socket.gethostname()} since "
        ), errors[0]
        assert errors[0].endswith(" UTC); wait for it to end or choose another --run-dir")
    latest = RunFolder(run).latest_step()
    assert latest is not None and latest >= 2
    # The killed trainer's lock file is still there (naming it); the kernel released its flock.
    assert f'"pid": {first.pid}' in (run / ".tjx-lock").read_text()
    steps = f"train.steps={latest + 2}"  # a training setting a resume may change
    proc = call_app(T, resume_with("train.checkpoint_every=2", steps), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        f"resumed from step {latest}" in proc.stdout and f"done: {latest + 2} steps" in proc.stdout
    )
    assert not (run / ".tjx-lock").exists()  # released at the end


def _immutable_checkpoints(run: Path) -> None:
    make_unwritable(run / "checkpoints")  # a read-only mount, root included (EPERM)


FAULTS = [
    # (id, fault at step 32's commit (_helpers_faults), setup, the error line's reason and fix):
    # a resume of the finished 30-step run to 32 steps, whose final save the disk refuses (#71).
    ("disk-full", "enospc", None, "No space left on device", "free space on it"),
    ("read-only-checkpoints", None, _immutable_checkpoints, "", "make it writable"),
]


@pytest.mark.parametrize(
    ("fault", "setup", "reason", "fix"), [c[1:] for c in FAULTS], ids=[c[0] for c in FAULTS]
)
def test_a_save_the_disk_refuses_is_one_line_and_keeps_the_checkpoints_before(
    tmp_path, trained, fault, setup, reason, fix
):
    """Before #71: 165-800 lines of orbax's tracebacks, the run training on to its next save,
    a half-written step, and (a folder orbax could not make) the process alive for 300 s."""
    run = tmp_path / "r"
    shutil.copytree(trained, run)
    before = _snapshot(run / "checkpoints")
    argv = resume_with("train.steps=32")
    try:
        if setup is not None:
            setup(run)
        if fault is not None:
            proc = run_with_fault(fault, 32, T, argv, tmp_path, timeout=300)
        else:  # the trainer's main in this process: the disk-full process shows the same end
            proc = call_app(T, argv, tmp_path)
    finally:
        writable_again()
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith(
        f"trainer: error: checkpoint: cannot write step 32 to 'r/checkpoints': {reason}"
    ), line
    assert line.endswith(f"; the last checkpoint is step 30 in 'r'; {fix}, then --resume"), line
    assert _snapshot(run / "checkpoints") == before  # 15 and 30 untouched, no partial 32
    again = call_app(T, argv, tmp_path)  # the disk fixed: the same command finishes
    assert again.returncode == 0 and "done: 32 steps" in again.stdout, again.stderr[-2000:]
    assert final(run)["step"] == 32
