"""Multi-host plumbing that one process can check: the flags, joining (watchdog, errors), the
agreement check, and resuming a loader from process 0's saved state on another process.

The real thing — two trainer processes on loopback — is tests-integration's
test_train_multiprocess.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tjx import ckpt, parallel
from tjx.parallel import joining
from tjx.parallel.arguments import VARIABLES, DistributedArgs
from trainer.cli import build_parser, main, plan_run
from trainer.loop import multihost
from trainer.step import data_setup


@pytest.fixture()
def no_dist_env(monkeypatch):
    for key in VARIABLES:
        monkeypatch.delenv(key, raising=False)


def test_flags_reach_the_plan(in_tmp):
    argv = ["--config", "tiny", "--coordinator", "10.0.0.1:1234", "--num-processes", "4"]
    plan = plan_run(build_parser().parse_args([*argv, "--process-id", "3", "--init-timeout", "7"]))
    assert plan.distributed == DistributedArgs("10.0.0.1:1234", 4, 3, 7.0)
    default = plan_run(build_parser().parse_args(["--config", "tiny"])).distributed
    assert default == DistributedArgs(None, None, None, 300.0)
    mpi = plan_run(build_parser().parse_args(["--config", "tiny", "--cluster", "mpi4py"]))
    assert mpi.distributed == DistributedArgs(None, None, None, 300.0, "mpi4py")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--num-processes", "2", "--process-id", "2"], "--process-id: must be in 0..1, got 2"),
        (["--process-id", "-1"], "--process-id: must be in >= 0, got -1"),
        (["--num-processes", "0"], "--num-processes: must be >= 1"),
        (["--coordinator", "localhost"], "--coordinator: expected HOST:PORT"),
        (["--coordinator", "h:99999"], "--coordinator: expected HOST:PORT"),
        (["--coordinator", ":80"], "--coordinator: expected HOST:PORT"),
        (["--init-timeout", "0"], "--init-timeout: must be > 0"),
    ],
)
def test_bad_flags_exit_2_with_one_line(in_tmp, capsys, flags, needle):
    assert main(["--config", "tiny", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainer: error: ") and needle in err and err.count("\n") == 1
    assert list(in_tmp.iterdir()) == []


def test_incomplete_setup_exits_2_before_anything(in_tmp, capsys, no_dist_env):
    assert main(["--config", "tiny", "--num-processes", "2", "--process-id", "0"]) == 2
    err = capsys.readouterr().err
    assert "trainer: error: multi-host setup: incomplete distributed setup" in err
    assert "coordinator (JAX_COORDINATOR_ADDRESS)" in err
    assert list(in_tmp.iterdir()) == []


def test_single_process_join_starts_nothing(no_dist_env, monkeypatch):
    from tjx.parallel import joining

    monkeypatch.setattr(joining, "initialize", lambda *a, **k: pytest.fail("initialized"))
    info = multihost.join(DistributedArgs(), {"a": 1}, resume=False, init_from=None)
    assert info.num_processes == 1 and info.process_id == 0


def test_join_failure_is_exit_1_and_names_the_flags(no_dist_env, monkeypatch):
    from tjx.parallel import joining

    seen = {}

    def fail(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise RuntimeError("could not join\nC++ details")

    monkeypatch.setattr(joining, "initialize", fail)  # what tjx.parallel.join calls
    dist = DistributedArgs("127.0.0.1:5", 2, 1, 30.0)
    with pytest.raises(multihost.JoinError) as exc:
        multihost.join(dist, {}, resume=False, init_from=None)
    assert exc.value.code == 1
    message = str(exc.value)
    assert message.startswith("not all 2 processes joined the run at coordinator 127.0.0.1:5")
    assert "(this is process 1)" in message and message.endswith("could not join")
    resolved = seen["kwargs"]["resolved"]
    assert (resolved.coordinator, resolved.num_processes, resolved.process_id) == (
        "127.0.0.1:5",
        2,
        1,
    )
    assert seen["kwargs"]["timeout_s"] == 30.0
    # An abort while joining prints the same explanation, as the trainer's one error line.
    line = seen["kwargs"]["timeout_message"](resolved)
    assert line == "trainer: error: " + message.split(": could")[0]


def _joined(monkeypatch):
    """tjx.parallel.join as if jax.distributed had joined (the agreement check runs for real)."""
    from tjx.parallel import joining

    monkeypatch.setattr(joining, "initialize", lambda *args, **kwargs: kwargs["resolved"])


def test_agreement_names_a_wrong_process_count(no_dist_env, monkeypatch):
    # One process told it is one of two: the all-gather sees 2 where the run has 1.
    _joined(monkeypatch)
    dist = DistributedArgs("127.0.0.1:5", 2, 0, 30.0)
    with pytest.raises(multihost.JoinError) as exc:
        multihost.join(dist, {"a": 1}, resume=True, init_from="gpt2")
    assert exc.value.code == 2
    assert "the run has 1 processes but they were told process 0: 2" in str(exc.value)


def _two_processes(monkeypatch, other: list[int]) -> None:
    """Two simulated processes: process 1's row of the all-gather is ``other``."""
    import jax

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(joining, "gather_rows", lambda mine: np.stack([mine, np.int32(other)]))


def test_agreement_names_each_flag_that_differs(no_dist_env, monkeypatch):
    """Two simulated processes: process 1 was given --resume, another --init-from and --set."""
    from tjx import parallel

    config = {"a": 1}
    _joined(monkeypatch)
    dist = DistributedArgs("127.0.0.1:5", 2, 0, 30.0)
    same = [2, 0, *parallel.digest_words(""), *parallel.digest_words("a: 1\n")]
    _two_processes(monkeypatch, same)
    assert multihost.join(dist, config, resume=False, init_from=None).num_processes == 2
    # startup gives the config's YAML text: compared as the data that dumps to it
    assert multihost.join(dist, "a: 1\n", resume=False, init_from=None).num_processes == 2
    other = [2, 1, *parallel.digest_words("gpt2"), *parallel.digest_words("a: 2\n")]
    _two_processes(monkeypatch, other)
    with pytest.raises(multihost.JoinError) as exc:
        multihost.join(dist, config, resume=False, init_from=None)
    assert exc.value.code == 2
    assert str(exc.value) == (
        "multi-host processes disagree: --resume: given to some processes only; "
        "--init-from: differs between processes; config: process(es) [1] have another "
        "effective config than process 0 (compare the configs they printed)"
    )


def test_any_process_resumes_from_process_0s_loader_state(tmp_path, monkeypatch):
    from tjx import data

    rng = np.random.default_rng(7)
    docs = [" ".join(f"w{int(x)}" for x in rng.integers(0, 500, 60)) for _ in range(40)]
    data.pretokenize(docs, data.load_tokenizer("byte"), tmp_path, num_workers=1, progress=False)

    def loader(index):
        return data.PackedLoader(
            tmp_path / "train", seq_len=16, batch_size=2, seed=3, process_index=index,
            process_count=2, prefetch=0,
        )  # fmt: skip

    first, second = loader(0), loader(1)
    for _ in range(3):
        next(first), next(second)
    saved = first.state_dict()  # what the checkpoint holds: process 0's position
    expected = next(second)
    monkeypatch.setattr(data_setup.jax, "process_index", lambda: 1)
    resumed = loader(1)
    data_setup.restore_loader(resumed, saved)
    got = next(resumed)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    with pytest.raises(data.DataError, match="process_index: saved 0, now 1"):
        loader(1).load_state_dict(saved)  # what the loop did before: every resume failed


def test_join_turns_off_jax_preemption_service(no_dist_env, monkeypatch):
    # Its C++ SIGTERM handler would swallow a signal that arrives before the loop; the trainer
    # agrees on stopping itself (tjx.parallel.stop_agreement). tjx-parallel's own test checks
    # that initialize turns it off before joining.
    from tjx.parallel import joining

    seen = {}

    def fake_initialize(*args, **kwargs):
        seen["service"] = kwargs["preemption_service"]
        raise RuntimeError("stop here")

    monkeypatch.setattr(joining, "initialize", fake_initialize)
    with pytest.raises(multihost.JoinError):
        multihost.join(DistributedArgs("127.0.0.1:5", 2, 0, 30.0), {}, resume=False, init_from=None)
    assert seen == {"service": False}


def test_a_lost_peer_is_one_line_naming_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_now)  # tjx.parallel.exit_now's
    lost = "process 1 of 2 stopped responding (no heartbeat for 15 s)"
    with pytest.raises(SystemExit) as ended:
        multihost._peer_lost(tmp_path, lost)
    assert ended.value.code == 1
    assert capsys.readouterr().err == (
        f"trainer: error: {lost}; no checkpoint was saved; start every process again\n"
    )
    (tmp_path / "checkpoints" / "20").mkdir(parents=True)
    (tmp_path / "checkpoints" / "20" / "commit_success.txt").touch()  # committed
    with pytest.raises(SystemExit):
        multihost._peer_lost(tmp_path, lost)
    err = capsys.readouterr().err
    assert f"the last checkpoint is step 20 in {str(tmp_path)!r}" in err and "--resume" in err
    assert "did not finish" not in err
    # The loss cut the save of step 25 short (orbax's temporary folder): named, never resumed.
    (tmp_path / "checkpoints" / "25.orbax-checkpoint-tmp").mkdir()
    with pytest.raises(SystemExit):
        multihost._peer_lost(tmp_path, lost)
    assert capsys.readouterr().err == (
        f"trainer: error: {lost}; the save of step 25 did not finish; the last checkpoint is "
        f"step 20 in {str(tmp_path)!r}; start every process again with --resume\n"
    )


def test_one_process_watches_nothing(tmp_path, monkeypatch):
    # No peer: no watch thread, and orbax's records are not held back for a peer's loss.
    monkeypatch.setattr(ckpt, "silence_lost_peer_commits", lambda: pytest.fail("silenced"))
    monkeypatch.setattr(parallel, "watch_peers", lambda **kw: pytest.fail("watched"))
    with multihost.watch(tmp_path) as watch:
        assert watch is None
