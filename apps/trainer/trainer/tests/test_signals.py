"""The trainer's words around SIGTERM/SIGINT: its line on the first signal, the one error line and
exit 130 on a second Ctrl-C, and a signal during the last step's samples (one short in-process
run). The flag and handlers themselves are tjx-parallel's (its test_preemption.py); a real run
signalled mid-step is tests-integration's test_train_sigterm.py."""

from __future__ import annotations

import os
import signal
import time

import pytest

import trainer.loop.evaluation as evaluation
from trainer.cli import main
from trainer.plan.run_plan import interrupted_exit, stop_on_signals
from trainer.tests._tiny import TWO_STEPS_THEN_EXTRAS


def _commit(run_dir, name: str) -> None:
    """A checkpoint folder as orbax leaves it once committed (its marker written last)."""
    folder = run_dir / "checkpoints" / name
    folder.mkdir(parents=True)
    (folder / "commit_success.txt").touch()


def test_first_signal_says_it_will_save(tmp_path, capfd):
    with stop_on_signals(tmp_path) as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.signal_name == "SIGTERM"
        assert capfd.readouterr().err == (
            "trainer: SIGTERM: stopping after this step and saving a checkpoint\n"
        )
    with stop_on_signals(tmp_path) as flag:  # a fresh flag: this SIGINT is a first one
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.signal_name == "SIGINT"
    assert capfd.readouterr().err == (  # written to fd 2, never through sys.stderr
        "trainer: SIGINT: stopping after this step and saving a checkpoint; "
        "Ctrl-C again stops at once\n"
    )


def test_second_ctrl_c_ends_the_process_naming_the_last_checkpoint(tmp_path, capfd, monkeypatch):
    ended = []

    def exit_now(code: int) -> None:
        ended.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_now)
    _commit(tmp_path, "8")
    with pytest.raises(SystemExit), stop_on_signals(tmp_path):
        os.kill(os.getpid(), signal.SIGINT)
        capfd.readouterr()
        os.kill(os.getpid(), signal.SIGINT)
    assert ended == [130]
    err = capfd.readouterr().err
    assert err == (
        f"trainer: error: interrupted: stopped at once; the last checkpoint is step 8 in "
        f"{str(tmp_path)!r}; continue with --resume\n"
    )


def test_interrupted_exit_names_the_newest_committed_step(tmp_path, capfd):
    assert interrupted_exit(tmp_path) == 130
    assert "interrupted: stopped at once; no checkpoint was saved" in capfd.readouterr().err
    for name in ("2", "4", "6.orbax-checkpoint-tmp"):
        _commit(tmp_path, name)
    assert interrupted_exit(tmp_path) == 130
    err = capfd.readouterr().err
    assert f"the last checkpoint is step 4 in {str(tmp_path)!r}; continue with --resume" in err


def test_a_signal_during_the_last_samples_saves_the_last_step_without_waiting_for_them(
    in_tmp, capfd, monkeypatch
):
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    signalled: list[float] = []

    def stalled(*args):  # the last step's sampling gets SIGTERM and would not end for minutes
        signalled.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(120)
        return ["never"] * len(args[3].sampling.prompts)  # (setup, params, bundle, cfg, step)

    monkeypatch.setattr(evaluation, "sample", stalled)
    argv = ["--config", "tiny", "--run-dir", "run", "--data", str(text)]
    for item in TWO_STEPS_THEN_EXTRAS:
        argv += ["--set", item]
    assert main(argv) == 0
    took = time.monotonic() - signalled[0]
    out, err = capfd.readouterr()  # the signal's line goes to fd 2
    assert took < 60, f"{took:.0f} s after the signal"  # the save and final files, not 120 s
    assert "SIGTERM: saved step 2 to run; what follows the last step was cut short" in out, out
    assert "trainer: SIGTERM: stopping after this step and saving a checkpoint" in err
    assert "Traceback" not in err
    run = in_tmp / "run"
    # Not done: no final.json, which the next --resume makes (test_run_end.py) with the samples.
    assert not (run / "final.json").exists() and (run / "loss_curve.png").is_file()
    assert (run / "checkpoints" / "2").is_dir() and not list((run / "samples").glob("*"))
