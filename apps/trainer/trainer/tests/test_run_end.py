"""A failure after a run's last step loses nothing (#71): the last step is committed before its
evaluation and samples; one of them failing is one line and exit 2, without ``final.json``;
``--resume`` tries it once more and, failing again, finishes with it named in ``final.json``'s
``"skipped"``. The cases the audit met: a GRPO reward that fails on held-out rows only, held-out
prompts all longer than ``data.seq_len``, and (no failure any more) a byte-tokenizer run whose
model's vocabulary is larger than the tokenizer's. In-process runs of tiny models; a SIGTERM
during the final save and a full or read-only disk are tests-integration's
(test_train_sigterm.py, test_bad_runs.py)."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

import trainer.loop.evaluation as evaluation
from tjx import ckpt
from trainer.cli import main
from trainer.tests._tiny import TWO_STEPS_THEN_EXTRAS

#: A one-step GRPO run of a one-layer model on a prompt file (test_grpo_run.py's sizes).
GRPO = [
    "model.d_model=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.mlp.dim=64",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
    "data.batch_size=8",
    "grpo.group_size=4",
    "grpo.max_new_tokens=4",
    "train.steps=1",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.checkpoint_every=0",
    "eval.batch_size=8",
    "sampling.max_new_tokens=2",
    "optimizer.schedule.warmup_steps=1",
]


def _argv(config: str, data: Path, sets: list[str], *extra: str) -> list[str]:
    argv = ["--config", config, "--run-dir", "run", "--set", f"data.source={data}"]
    for item in [*sets, f"data.cache_dir={data.parent / 'cache'}", *extra]:
        argv += ["--set", item]
    return argv


def _corpus(folder: Path) -> Path:
    text = folder / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    return text


def _errors(err: str) -> list[str]:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("trainer: error:")]


def _committed(run: Path, step: int) -> None:
    """``step`` is the newest checkpoint, committed (no partial folder beside it), and reads."""
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("_")) == [str(step)]
    restored = ckpt.CheckpointManager(folder, read_only=True).restore()
    assert restored.step == step and restored.state


def _resume_finishes_skipping(argv: list[str], run: Path, step: int, capfd, what: str) -> dict:
    """``--resume`` with the failure still there: one warning, exit 0, final.json naming it."""
    assert main([*argv, "--resume"]) == 0
    out, err = capfd.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("trainer: warning:")]
    assert _errors(err) == [] and len(warnings) == 1, err
    assert warnings[0].startswith(f"trainer: warning: the {what} failed again: "), warnings
    assert f"nothing to do: the run is already at step {step} of {step}; rebuilt final.json" in out
    assert f"; skipped: {what}" in out, out
    summary = json.loads((run / "final.json").read_text())
    assert summary["step"] == step and summary["interrupted_by"] is None
    assert set(summary["skipped"]) == {what}
    assert main([*argv, "--resume"]) == 0  # done: the next resume has nothing to do
    assert capfd.readouterr().out.splitlines()[-1] == (
        f"nothing to do: the run is already at step {step} of {step}"
    )
    return summary


def test_an_evaluation_failing_after_the_last_step_loses_nothing(in_tmp, capfd, monkeypatch):
    """Before #71 the error escaped with a traceback and the last step was never saved."""

    def broken(*args):
        raise RuntimeError("the held-out batch would not fit\n(a second line, not shown)")

    monkeypatch.setattr(evaluation, "evaluate_state", broken)
    argv = _argv("tiny", _corpus(in_tmp), TWO_STEPS_THEN_EXTRAS)
    assert main(argv) == 2
    out, err = capfd.readouterr()
    assert _errors(err) == [
        "trainer: error: the evaluation after the last step failed: RuntimeError: the held-out "
        "batch would not fit. Step 2 is saved in 'run/checkpoints' and final.json is not "
        "written: fix the cause and --resume to make them (failing again there, they are "
        "skipped and named in final.json)"
    ], err
    run = in_tmp / "run"
    _committed(run, 2)
    assert not (run / "final.json").exists() and "done:" not in out
    assert (run / "samples" / "step_0000002.txt").is_file()  # the samples did not fail: kept
    summary = _resume_finishes_skipping(argv, run, 2, capfd, "evaluation")
    assert not any(key.startswith("val_") for key in summary)
    assert summary["skipped"]["evaluation"].startswith("RuntimeError: the held-out batch")


def test_samples_cut_short_by_a_signal_are_made_by_the_resume(in_tmp, capfd, monkeypatch):
    import os
    import signal

    real = evaluation.sample

    def signalled(*args):  # the last step's sampling gets SIGTERM (and would go on)
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(evaluation, "sample", signalled)
    argv = _argv("tiny", _corpus(in_tmp), TWO_STEPS_THEN_EXTRAS)
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert _errors(err) == [] and "SIGTERM: saved step 2 to run; what follows the last step" in out
    run = in_tmp / "run"
    _committed(run, 2)
    assert not (run / "final.json").exists() and not list((run / "samples").iterdir())
    monkeypatch.setattr(evaluation, "sample", real)  # (undo() would leave in_tmp's folder too)
    assert main([*argv, "--resume"]) == 0
    out, err = capfd.readouterr()
    assert _errors(err) == [] and "warning" not in err, err
    assert "rebuilt samples/step_0000002.txt, final.json" in out, out
    summary = json.loads((run / "final.json").read_text())
    assert summary["step"] == 2 and summary["val_loss"] > 0 and "skipped" not in summary
    assert (run / "samples" / "step_0000002.txt").read_text().startswith("--- sample 0")


def test_a_byte_run_of_a_larger_vocabulary_samples_what_it_cannot_decode(in_tmp, capfd):
    """A byte tokenizer (ids 0..256) with a model of 4000 ids, as a run started from a Hugging
    Face checkpoint: its samples hold ids the tokenizer lacks (a DataError lost the run)."""
    argv = _argv("tiny", _corpus(in_tmp), [*TWO_STEPS_THEN_EXTRAS, "model.vocab_size=4000"])
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert _errors(err) == [] and "done: 2 steps" in out
    text = (in_tmp / "run" / "samples" / "step_0000002.txt").read_text()
    assert "\ufffd" in text  # a random 4000-id model samples ids past 256
    assert json.loads((in_tmp / "run" / "final.json").read_text())["step"] == 2


def _prompt_rows(folder: Path, held_out: str) -> Path:
    """40 prompt rows with answers; every tenth (the held-out split: tjx.data's cut) differs:
    without its answer, or too long for ``data.seq_len``."""
    rng = random.Random()
    rows = []
    for i in range(40):
        row = {"prompt": f"What is {i} + 1?", "answer": str(i + 1)}
        if i % 10 == 9 and held_out == "no-answer":
            del row["answer"]
        if i % 10 == 9 and held_out == "long":
            words = ("".join(rng.choices(string.ascii_lowercase, k=9)) for _ in range(60))
            row["prompt"] = "Spell " + " ".join(words)
        rows.append(row)
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    ("held_out", "said"),
    [
        # exact_answer reads the row's answer: the probe of the first training row passes.
        ("no-answer", "grpo.rewards: reward 'exact_answer' raised KeyError"),
        # tjx.data's loader: "PATH: all 4 prompts row(s) are longer than seq_len tokens ..."
        ("long", "prompts row(s) are longer than seq_len tokens (seq_len 32); raise seq_len"),
    ],
)
def test_a_grpo_run_whose_held_out_evaluation_fails_keeps_its_last_step(
    in_tmp, capfd, held_out, said
):
    argv = _argv("grpo_tiny", _prompt_rows(in_tmp, held_out), GRPO)
    assert main(argv) == 2
    _, err = capfd.readouterr()
    errors = _errors(err)
    assert len(errors) == 1, err
    assert errors[0].startswith("trainer: error: the evaluation after the last step failed: ")
    assert said in errors[0], errors[0]
    assert "Step 1 is saved in 'run/checkpoints' and final.json is not written" in errors[0]
    run = in_tmp / "run"
    _committed(run, 1)
    assert not (run / "final.json").exists()
    _resume_finishes_skipping(argv, run, 1, capfd, "evaluation")


def test_an_evaluation_failing_mid_run_saves_that_step(in_tmp, capfd, monkeypatch):
    """A periodic evaluation's failure: the step just trained is saved, one line, exit 2."""
    calls = []

    def second_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("validation data is empty: no batch of the configured size fits")
        return {"loss": 5.0}

    real = evaluation.evaluate_state
    monkeypatch.setattr(evaluation, "evaluate_state", second_fails)
    argv = _argv(
        "tiny", _corpus(in_tmp), [*TWO_STEPS_THEN_EXTRAS, "train.steps=6", "train.eval_every=2"]
    )
    assert main(argv) == 2
    _, err = capfd.readouterr()
    assert _errors(err) == [
        "trainer: error: the evaluation at step 4 failed: validation data is empty: no batch of "
        "the configured size fits; step 4 is saved in 'run/checkpoints': fix the cause (or set "
        "train.eval_every=0) and --resume"
    ], err
    _committed(in_tmp / "run", 4)
    monkeypatch.setattr(evaluation, "evaluate_state", real)
    assert main([*argv, "--resume"]) == 0
    assert "resumed from step 4" in capfd.readouterr().out
    assert json.loads((in_tmp / "run" / "final.json").read_text())["step"] == 6


def test_in_words_says_a_failure_in_one_line():
    from tjx import data
    from trainer.loop.training import REASON_CHARS, in_words

    assert in_words(data.RewardError("reward 'x' raised KeyError")) == (
        "grpo.rewards: reward 'x' raised KeyError"
    )
    assert in_words(ValueError("first\nsecond")) == "first"
    assert in_words(KeyError("answer")) == "KeyError: 'answer'"
    assert in_words(RuntimeError()) == "RuntimeError"
    long = in_words(OSError("x" * 1000))
    assert len(long) == REASON_CHARS and long.endswith("…")
