"""A diverged run stops with one error line and exit 3, and saves nothing from the bad streak."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from trainer.cli import main
from trainer.divergence import DivergenceGuard
from trainer.tests.test_loop_inprocess import _argv


def _out(loss: float, skipped: bool) -> dict[str, object]:
    return {"loss": jnp.asarray(loss, jnp.float32), "skipped": jnp.asarray(skipped)}


def test_guard_counts_bad_steps_in_a_row_one_step_late(capsys):
    guard = DivergenceGuard(limit=3)
    rng = np.random.default_rng(0)
    losses = rng.uniform(1.0, 5.0, 3)
    guard.push(1, _out(losses[0], False))
    guard.push(2, _out(float("nan"), False))  # judges step 1 only
    assert guard.streak == 0
    guard.push(3, _out(losses[1], True))  # step 2 bad: non-finite loss
    guard.push(4, _out(losses[2], False))  # step 3 bad: skipped
    assert guard.streak == 2 and guard.diverged is None
    guard.push(5, _out(float("inf"), False))  # step 4 good: the streak ends
    assert guard.streak == 0 and guard.first_bad is None
    for step in (6, 7):
        guard.push(step, _out(float("nan"), True))
    assert guard.streak == 2 and guard.diverged is None
    guard.flush()  # step 7 judged now
    assert guard.diverged is not None and guard.diverged.startswith(
        "training diverged: steps 5–7 (3 in a row)"
    )
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "warning: step 2: loss is not finite" in err


def test_a_diverging_run_exits_3_without_final_or_bad_checkpoint(in_tmp, capsys, monkeypatch):
    """From step 2 on the step reports a NaN loss and a skipped update, as a diverged run does."""
    from trainer import step as step_module

    real = step_module.make_train_step

    def poisoned(*args, **kwargs):
        inner = real(*args, **kwargs)

        def train_step(state, batch):
            new, metrics = inner(state, batch)
            bad = new["step"] >= 2
            metrics = dict(metrics, loss=jnp.where(bad, jnp.nan, metrics["loss"]))
            metrics["skipped"] = jnp.logical_or(metrics["skipped"], bad)
            return new, metrics

        return train_step

    monkeypatch.setattr(step_module, "make_train_step", poisoned)
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    sets = [f"data.cache_dir={in_tmp / 'cache'}", "train.steps=12", "train.max_bad_steps=3"]
    assert main(_argv(text, *[x for s in sets for x in ("--set", s)])) == 3
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("trainer: error:")]
    assert len(lines) == 1 and "training diverged: steps 2–4 (3 in a row)" in lines[0]
    assert "no checkpoint was saved" in lines[0]  # the step-2 and step-4 checkpoints were refused
    assert "warning: step 2: its update was skipped" in captured.err
    run = in_tmp / "run"
    assert not (run / "final.json").exists()
    ckpts = run / "checkpoints"
    assert not ckpts.exists() or not any(p.name.isdigit() for p in ckpts.iterdir())
