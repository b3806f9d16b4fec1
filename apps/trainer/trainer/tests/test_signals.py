"""The trainer's words around SIGTERM/SIGINT: its line on the first signal, the one error line and
exit 130 on a second Ctrl-C. The flag and handlers themselves are tjx-parallel's (its
test_preemption.py); a real run signalled mid-step is tests-integration's test_train_sigterm.py."""

from __future__ import annotations

import os
import signal

import pytest

from trainer.plan import interrupted_exit, stop_on_signals


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
