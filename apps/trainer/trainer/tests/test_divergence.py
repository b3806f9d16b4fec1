"""A diverged run stops with one error line and exit 3, and saves nothing from the bad streak.

The guard itself (tjx.metrics.DivergenceGuard) is tested in tjx-metrics.
"""

from __future__ import annotations

import jax.numpy as jnp

from trainer.cli import main
from trainer.tests.test_loop_inprocess import _argv


def _poison_from(monkeypatch, first_bad: int) -> None:
    """From step ``first_bad`` on the step reports a NaN loss and a skipped update."""
    from trainer.step import train_step as step_module

    real = step_module.make_train_step

    def poisoned(*args, **kwargs):
        inner = real(*args, **kwargs)

        def train_step(state, batch):
            new, metrics = inner(state, batch)
            bad = new.step >= first_bad
            metrics = dict(metrics, loss=jnp.where(bad, jnp.nan, metrics["loss"]))
            metrics["skipped"] = jnp.logical_or(metrics["skipped"], bad)
            return new, metrics

        return train_step

    monkeypatch.setattr(step_module, "make_train_step", poisoned)


def test_a_diverging_run_exits_3_without_final_or_bad_checkpoint(in_tmp, capsys, monkeypatch):
    """From step 2 on the step reports a NaN loss and a skipped update, as a diverged run does."""
    _poison_from(monkeypatch, 2)
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    sets = [f"data.cache_dir={in_tmp / 'cache'}", "train.steps=12", "train.max_bad_steps=3"]
    assert main(_argv(text, *[x for s in sets for x in ("--set", s)])) == 3
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("trainer: error:")]
    assert len(lines) == 1 and "training diverged: steps 2–4 (3 in a row)" in lines[0]
    assert "no checkpoint was saved" in lines[0]  # the step-2 and step-4 checkpoints were refused
    assert "warning: step 2: its update was skipped" in captured.err
    assert "the run stops after train.max_bad_steps=3 such steps in a row" in captured.err
    # The advice names the trainer's config keys (tjx.metrics' guard is given them).
    assert (
        "; lower optimizer.schedule.peak_lr, raise optimizer.schedule.warmup_steps or set "
        "optimizer.clip_norm, and resume from the last checkpoint (train.max_bad_steps sets the "
        "limit). " in lines[0]
    )
    run = in_tmp / "run"
    assert not (run / "final.json").exists()
    ckpts = run / "checkpoints"
    assert not ckpts.exists() or not any(p.name.isdigit() for p in ckpts.iterdir())


def test_a_run_ending_inside_a_short_nonfinite_streak_exits_3(in_tmp, capsys, monkeypatch):
    """Steps 5–8 are NaN, fewer than train.max_bad_steps: still diverged, not "done"."""
    _poison_from(monkeypatch, 5)
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    sets = [f"data.cache_dir={in_tmp / 'cache'}", "train.steps=8", "train.max_bad_steps=25"]
    assert main(_argv(text, *[x for s in sets for x in ("--set", s)])) == 3
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("trainer: error:")]
    assert len(lines) == 1, captured.err
    assert "training ended inside a non-finite streak: steps 5–8 (4 in a row" in lines[0]
    run = in_tmp / "run"
    assert lines[0].endswith("the last checkpoint is step 4 in run/checkpoints")
    assert "done:" not in captured.out
    assert not (run / "final.json").exists()
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 4]  # step 6 (mid-streak) and step 8 (the end) were never saved
