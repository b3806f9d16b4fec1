"""#40 point 2: a short first screen (the preset and only what the command changes), one console
line per log step in a fixed order, the loss plot of the run, and preset warmups that fit a
shorter run."""

from __future__ import annotations

import importlib.machinery
import re
import sys
import types
import warnings

import pytest
import yaml

from tjx.metrics.loggers import wandb_logger
from trainer.cli import _first_lines, build_parser, main, plan_run
from trainer.config.schema import ConfigError
from trainer.config.settings import apply_overrides, load_config_data, preset_names
from trainer.config.typed import read_config
from trainer.tests.test_loop_inprocess import SETS

#: Each preset's warmup in steps at its own train.steps, as the presets said before #40.
WARMUP_AT_LENGTH = {"tiny": 50, "gpt2_small": 200, "gpt2_medium": 200, "gpt2_large": 200}
WARMUP_AT_LENGTH |= {"llama_small": 200, "bert_tiny": 50, "vit_digits": 20, "llama_32k": 50}
WARMUP_AT_LENGTH |= {"moe_tiny": 50, "mixtral_small": 200}
WARMUP_AT_LENGTH |= {"sft_tiny": 20, "sft_llama": 30, "dpo_tiny": 15, "grpo_tiny": 3}
WARMUP_AT_LENGTH |= {"llama3_8b": 200}


@pytest.mark.parametrize("name", preset_names())
def test_a_presets_warmup_is_a_share_of_the_run_so_a_short_run_trains(name):
    cfg = read_config(load_config_data(name))
    assert cfg.optimizer.schedule.warmup_steps == WARMUP_AT_LENGTH[name]  # the run as before
    short = read_config(apply_overrides(load_config_data(name), ["train.steps=30"]))
    assert 0 < short.optimizer.schedule.warmup_steps < 30


def test_an_explicit_warmup_longer_than_the_run_is_still_an_error():
    sets = ["train.steps=30", "optimizer.schedule.warmup_steps=100"]
    with pytest.raises(ConfigError, match=r"warmup_steps=100 is longer than the run.*steps=30"):
        read_config(apply_overrides(load_config_data("tiny"), sets))


def test_print_config_prints_every_key_and_the_first_line_only_the_changed_ones(in_tmp, capsys):
    argv = ["--config", "tiny", "--set", "train.steps=1_000", "--set", "model.d_model=128"]
    args = build_parser().parse_args([*argv, "--data", "kjv", "--print-config"])
    plan = plan_run(args)
    _first_lines(args, plan)
    first, *rest = capsys.readouterr().out.splitlines()
    # d_model 128 is tiny's own: no change; 1_000 is read as the field's integer.
    assert first == "config: preset tiny; changed: data.source=kjv, train.steps=1000"
    assert rest[0] == "# effective config"
    assert yaml.safe_load("\n".join(rest[1:])) == plan.config.to_dict()
    args.print_config = False
    _first_lines(args, plan)
    assert capsys.readouterr().out == f"{first}\n"


def test_a_run_prints_a_short_first_screen_and_one_line_per_log_step(in_tmp, capsys, monkeypatch):
    from tjx import metrics

    plotted = {}
    real_plot = metrics.plot_run
    monkeypatch.setattr(
        metrics, "plot_run", lambda *a, **k: plotted.update(k) or real_plot(*a, **k)
    )
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(300)))
    sets = [*SETS, f"data.cache_dir={in_tmp / 'cache'}", "logging.sinks=[console,jsonl]"]
    sets += ["logging.progress=true", "train.eval_every=0", "train.sample_every=0"]
    argv = ["--config", "tiny", "--run-dir", "run", "--data", str(text)]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    lines = capsys.readouterr().out.splitlines()
    first_step = next(i for i, line in enumerate(lines) if line.startswith("step "))
    assert first_step <= 15, lines[:first_step]
    assert lines[0].startswith(
        "config: preset tiny; changed: model.max_seq_len=16, model.d_model=16"
    )
    # the preset's own sinks and the default progress bar are no change
    assert "logging" not in lines[0] and f"data.source={text}" in lines[0]
    assert "# effective config" not in lines and "run directory: run" in lines
    for prefix in ("devices: ", "data: ", "attention: ", "model: gpt2, ", "plan: "):
        assert any(line.startswith(prefix) for line in lines[:first_step]), prefix
    # Not a terminal: each log step is one line (no progress line beside it), in a fixed order.
    steps = [line for line in lines if re.match(r"step \d+/\d+ │ loss|\[\d+/", line)]
    assert [line.split(" │ ")[0] for line in steps] == [f"step {k}/4" for k in (1, 2, 3, 4)]
    fields = [part.split()[0] for part in steps[-1].split(" │ ")[1:]]
    assert fields == ["loss", "learning_rate", "grad_norm", "tokens_per_s", "ETA"]  # no MFU: CPU
    assert plotted == {"keys": (("loss", "val_loss"),), "title": "tiny"}
    assert (in_tmp / "run" / "loss_curve.png").stat().st_size > 0


class _FakeWandbRun:
    """What the trainer's W&B logger calls on a run, recorded (wandb itself stays unloaded)."""

    def __init__(self) -> None:
        self.logged: list[tuple[dict[str, object], int]] = []

    def log(self, data: dict[str, object], step: int) -> None:
        self.logged.append((data, step))

    def finish(self) -> None:
        pass


def test_a_runs_python_warnings_are_one_line_each(in_tmp, capsys, monkeypatch):
    """#71: W&B's offline note (a Python UserWarning of tjx.metrics) came as Python prints it,
    ``.../factory.py:169: UserWarning: ...`` and a source line; it is one ``trainer: warning:``
    line, and nothing on stderr is Python's warning text."""
    run = _FakeWandbRun()
    # With a spec, the logger check (`importlib.util.find_spec`) finds it where wandb itself is
    # not installed (this test's Pants sandbox).
    fake = types.SimpleNamespace(
        init=lambda **kw: run, Settings=lambda **kw: kw, Table=lambda **kw: ("table", kw),
        __spec__=importlib.machinery.ModuleSpec("wandb", None),
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(wandb_logger, "_import_wandb", lambda: fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the trainer's own default: offline
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(300)))
    sets = [*SETS, f"data.cache_dir={in_tmp / 'cache'}", "logging.sinks=[console,jsonl,wandb]"]
    sets += ["train.steps=2", "train.eval_every=0", "train.sample_every=0"]
    sets += ["train.checkpoint_every=0"]
    argv = ["--config", "tiny", "--run-dir", "run", "--data", str(text)]
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as `python -W default` shows them
        assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "W&B" in line]
    assert len(notes) == 1 and notes[0].startswith("trainer: warning: W&B mode is 'offline': "), err
    assert "wandb sync" in notes[0] and "Warning:" not in err and ".py:" not in err, err
    assert [step for data, step in run.logged if "loss" in data] == [1, 2]
