"""progress_bar: a live bar on a terminal, plain lines elsewhere, notes above it."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from trainer.loop.progress import _clock, progress_bar


def test_plain_lines_when_not_a_terminal(capsys):
    loss = float(np.random.default_rng(0).uniform(1.0, 5.0))
    with progress_bar(0, 10) as bar:  # pytest's captured stdout is not a terminal
        bar.update(5, loss)
        bar.note("hello")
    out = capsys.readouterr().out
    assert f"[5/10] loss {loss:.4f}  elapsed " in out and "ETA" in out and "hello" in out
    assert _clock(125) == "2:05" and _clock(59.9) == "0:59"


def test_disabled_prints_plain_lines_even_on_a_terminal():
    file = io.StringIO()
    console = Console(file=file, force_terminal=True, width=100)
    with progress_bar(3, 7, enabled=False, console=console) as bar:
        assert not bar.live
        bar.update(4, 0.25)
    assert "[4/7] loss 0.2500" in file.getvalue()


def test_live_bar_on_a_terminal_shows_label_steps_and_loss():
    file = io.StringIO()
    console = Console(file=file, force_terminal=True, width=120)
    with progress_bar(2, 9, label="finetune", console=console) as bar:
        assert bar.live  # a caller printing its own lines skips `update` unless it is
        bar.update(6, 1.5)
        bar.note("a note")
    text = file.getvalue()
    assert "finetune" in text and "6/9" in text and "loss 1.5000" in text and "a note" in text


def test_a_bar_over_other_things_shows_text_instead_of_a_loss():
    """A study's bar counts configs: ``update(i, text=...)`` prints the text where a run's loss
    would stand (no rich markup is interpreted in it)."""
    console = Console(record=True, width=120, force_terminal=False)
    with progress_bar(0, 5, label="positions", console=console) as bar:
        bar.update(2, text="[rope] done")
    out = console.export_text()
    assert "[2/5] [rope] done  elapsed 0:00  ETA 0:00" in out and "loss" not in out
