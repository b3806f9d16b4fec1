"""The whole loop in-process on a small local text (the integration tests run it as a process)."""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np

import trainer.cli as cli
from tjx.metrics.loggers import wandb_logger
from trainer.cli import main
from trainer.plan.first_compile import FROM_CACHE
from trainer.tests._tiny import TINY_RUN

#: A compile's last line; CI's shared persistent cache may serve the compile, and the line says so.
COMPILED_LINE = rf"compiled the train step in \d+\.\d s({re.escape(FROM_CACHE)})?"

SETS = [
    *TINY_RUN,
    "train.steps=4",
    "train.eval_every=2",
    "train.eval_batches=1",
    "train.sample_every=2",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "optimizer.schedule.warmup_steps=1",
    "sampling.max_new_tokens=4",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]


def _argv(text, *extra):
    argv = ["--config", "tiny", "--run-dir", "run", "--data", str(text)]
    for item in SETS:
        argv += ["--set", item]
    return [*argv, *extra]


def test_train_resume_and_finish_in_process(in_tmp, capsys):
    text = Path("corpus.txt")  # relative: read in in_tmp, where the run's data.json says it was
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    cache = f"data.cache_dir={in_tmp / 'cache'}"
    assert main(_argv(text, "--set", cache, "--set", "train.stop_at=2")) == 0
    out = capsys.readouterr().out
    assert "train.stop_at: saved step 2" in out and "running on CPU" in out
    # No silent start: each slow phase is said before it starts, with its time once done.
    lines = out.splitlines()
    said = [lines.index(f"data: preparing {text}…"), lines.index("compiling the train step…")]
    said.append(lines.index("model: initializing…"))  # its parameters, optimizer state: a program
    ready = [i for i, line in enumerate(lines) if re.fullmatch(r"data: ready in \d+\.\d s", line)]
    compiled = [i for i, line in enumerate(lines) if re.fullmatch(COMPILED_LINE, line)]
    built = [i for i, line in enumerate(lines) if re.fullmatch(r"model: ready in \d+\.\d s", line)]
    stopped = next(i for i, line in enumerate(lines) if line.startswith("train.stop_at: saved"))
    # (the model before the compile on these 8 devices: the memory fit, one device's, is off)
    assert said[0] < ready[0] < min(said[1], said[2]), out
    assert said[1] < compiled[0] < stopped and said[2] < built[0] < stopped, out
    assert json.loads((in_tmp / "run" / "final.json").read_text())["step"] == 2
    # The stopped run's config.yaml holds its stop: resumed with it, one line, nothing written
    # (it stopped again at once, saying "resume with --resume", for ever).
    log = (in_tmp / "run" / "metrics.jsonl").read_text()
    stopped = ["--config", str(in_tmp / "run" / "config.yaml"), "--run-dir", "run", "--resume"]
    assert main(stopped) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "trainer: error: --resume: train.stop_at=2 is not after the checkpoint's step 2, so the "
        "run would stop again without training a step; resume with --set train.stop_at=null "
        "(or a later step)"
    ]
    assert (in_tmp / "run" / "metrics.jsonl").read_text() == log
    # The corpus edited to the same token count (one line's number changed) is another token
    # stream: a resume on it is one line, and writes nothing into the run.
    original = text.read_text()
    text.write_text(original.replace("Line 5:", "Line 6:", 1))
    assert main(_argv(text, "--set", cache, "--resume")) == 2
    said = capsys.readouterr()
    err = said.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trainer: error: --resume: "), err
    assert "digest: saved '" in err[0] and "though not its token count" in err[0], err
    assert "compiling the train step" not in said.out  # refused before the compile and restore
    assert (in_tmp / "run" / "metrics.jsonl").read_text() == log
    text.write_text(original)  # the same text again, in a file of another time: it resumes
    assert main(_argv(text, "--set", cache, "--resume")) == 0
    out = capsys.readouterr().out
    assert "resumed from step 2" in out and "done: 4 steps" in out
    run = in_tmp / "run"
    summary = json.loads((run / "final.json").read_text())
    assert summary["step"] == 4 and summary["val_loss"] > 0
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_0000002.txt",
        "step_0000004.txt",
    ]
    assert (run / "loss_curve.png").is_file()
    data = json.loads((run / "data.json").read_text())
    assert data["tokenizer"] == "byte" and data["bytes_per_token"] > 0.9
    assert data["source"] == "corpus.txt" and data["read_in"] == str(in_tmp)
    assert main(_argv(text, "--set", cache, "--resume")) == 0
    assert "nothing to do" in capsys.readouterr().out
    # Killed after the last checkpoint, before final.json and the plot: --resume makes them.
    (run / "final.json").unlink()
    (run / "loss_curve.png").unlink()
    assert main(_argv(text, "--set", cache, "--resume")) == 0
    assert "rebuilt final.json, loss_curve.png" in capsys.readouterr().out
    rebuilt = json.loads((run / "final.json").read_text())
    assert rebuilt["params_sha256"] == summary["params_sha256"] and rebuilt["step"] == 4
    assert rebuilt["val_loss"] == summary["val_loss"]
    assert (run / "loss_curve.png").stat().st_size > 0
    # Every checkpoint unreadable: --resume ends in one error line, not a traceback.
    for f in (run / "checkpoints").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert main(_argv(text, "--set", cache, "--resume")) == 2
    err = capsys.readouterr().err
    assert "trainer: error: --resume: no readable checkpoint" in err and "Traceback" not in err
    # Each skipped step is one line (no Python warning format, no source line).
    skipped = [line for line in err.splitlines() if "skipping corrupt checkpoint" in line]
    assert len(skipped) == 2, err
    assert all(line.startswith("trainer: warning: tjx.ckpt: skipping corrupt") for line in skipped)
    assert "CorruptCheckpointWarning" not in err


def test_too_little_data_is_a_clear_error(in_tmp, capsys):
    text = in_tmp / "short.txt"
    text.write_text("tiny\n")
    argv = _argv(text, "--set", f"data.cache_dir={in_tmp / 'cache'}")
    assert main(argv) == 2
    assert "fewer than one sequence" in capsys.readouterr().err
    assert not (in_tmp / "run").exists()


def test_a_run_builds_its_package_configs_once(in_tmp, capsys, monkeypatch):
    """The command line is read once; the memory fit, the state and the loop receive its config
    (their changes are replaces, never a second build from the sections)."""
    import functools

    from trainer.config import typed as config
    from trainer.plan import memory_fit

    built = {"model": 0, "optimizer": 0, "mesh": 0}
    real = config.build

    def counted(cls, checked, path):
        if path in built:
            built[path] += 1
        return real(cls, checked, path)

    monkeypatch.setattr(config, "build", counted)
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: all that glitters.\n" for i in range(300)))
    cache = f"data.cache_dir={in_tmp / 'cache'}"
    # The memory fit compiles the step too (as on one device): it must not build again.
    monkeypatch.setattr(
        memory_fit, "fit_memory", functools.partial(memory_fit.fit_memory, devices=1)
    )
    assert main(_argv(text, "--set", cache, "--set", "train.fit_memory=true")) == 0
    assert "memory: the train step needs" in capsys.readouterr().out
    assert built == {"model": 1, "optimizer": 1, "mesh": 1}


def test_the_compilation_cache_folder_is_the_config_key(monkeypatch, capsys, tmp_path):
    """train.compilation_cache reaches tjx.kernels (auto: its own default, None), and the folder
    in use is said with the key that sets it."""
    import tjx.kernels
    from trainer.config.typed import read_config
    from trainer.start.startup import _device_note

    asked = []

    def enable(directory=None):
        asked.append(directory)
        return None if directory == "off" else tmp_path / "cache"

    monkeypatch.setattr(tjx.kernels, "enable_compilation_cache", enable)
    for value in ("auto", str(tmp_path / "mine"), "off"):
        _device_note(read_config({"train": {"compilation_cache": value}}))
    assert asked == [None, str(tmp_path / "mine"), "off"]
    said = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("compilation")]
    assert (
        said
        == [f"compilation cache: {tmp_path / 'cache'} (train.compilation_cache; off to " "disable)"]
        * 2
    )


def _logged(run, log="metrics.jsonl") -> list[dict]:
    """The rows of the run's ``log`` without what a clock measures (their times and rates)."""
    rows = [json.loads(line) for line in (run / log).read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time" and not k.endswith("_per_s")} for r in rows]


def _went_through_and_resumed(text, root, sets, stop_at=2, started=contextlib.nullcontext):
    """The run of ``sets`` over ``text`` twice: in ``root/whole`` straight, in ``root/split``
    stopped at step ``stop_at`` by ``train.stop_at`` and resumed; the straight run and the
    stopped one inside ``started()`` (the trainer that started them)."""

    def argv(run, *extra):
        args = _argv(text, *(a for s in sets for a in ("--set", s)), *extra)
        return [*args[:3], str(run), *args[4:]]  # its own --run-dir

    with started():
        assert main(argv(root / "whole")) == 0
        assert main(argv(root / "split", "--set", f"train.stop_at={stop_at}")) == 0
    assert main(argv(root / "split", "--resume")) == 0


def test_a_run_an_earlier_trainer_started_with_multi_steps_resumes_bit_for_bit(
    in_tmp, capsys, monkeypatch
):
    """An earlier trainer started runs with optimizer.accumulation_mode=multi_steps as given
    (one update of every 2 steps; a new run now reads it as scan): stopped between the two steps
    of an update and resumed by this one, it logs what it logged going through."""
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    sets = ["optimizer.accumulation_mode=multi_steps", "optimizer.accumulation_steps=2"]
    sets += ["data.batch_size=16"]  # 8 rows a micro-batch: one on each of the 8 devices
    sets += ["train.sample_every=0", f"data.cache_dir={in_tmp / 'cache'}"]

    @contextlib.contextmanager
    def earlier():  # the trainer before it read multi_steps as scan
        with monkeypatch.context() as patched:
            patched.setattr(cli, "for_new_run", lambda data: (data, []))
            yield

    _went_through_and_resumed(text, in_tmp, sets, stop_at=3, started=earlier)
    assert "as the run trained" in capsys.readouterr().err
    manifest = in_tmp / "split" / "checkpoints" / "3" / "manifest" / "metadata"
    leaves = json.loads(manifest.read_text())["leaves"]
    assert "opt_state/inner/mini_step" in leaves  # optax.MultiSteps' state, mid-update
    assert _logged(in_tmp / "split") == _logged(in_tmp / "whole")


def test_a_resume_marks_the_loss_spikes_of_the_run_that_went_through(in_tmp, capsys):
    """train.spike_sigma judges a step against the window of the steps before it: the stop's
    checkpoint keeps that window, so the step just after a resume is judged as the run that went
    through judged it (a fresh window would only fill up there, marking nothing). Unshuffled text
    of one sentence a line, with fresh random characters at the lines step 3's batch reads: the
    sentence is learnt at a high rate in steps 1 and 2, and step 3's loss is a spike."""
    rng = np.random.default_rng()
    lines = ["the cat sat on the mat."] * 200
    for i in range(11, 17):  # bytes 264..407: step 3's batch (8 rows of 16 bytes a step)
        lines[i] = "".join(rng.choice(list("QZXJKVWYqzxjkvwy0123456789#%&@$"), 23))
    text = in_tmp / "corpus.txt"
    text.write_text("\n".join(lines) + "\n")
    sets = ["data.shuffle=false", "train.steps=5", "train.eval_every=0", "train.sample_every=0"]
    sets += ["train.checkpoint_every=0", "optimizer.schedule.warmup_steps=0"]
    sets += ["optimizer.schedule.peak_lr=0.05", "train.spike_sigma=0.5", "train.spike_window=2"]
    sets += [f"data.cache_dir={in_tmp / 'cache'}"]
    _went_through_and_resumed(text, in_tmp, sets)
    capsys.readouterr()
    whole = _logged(in_tmp / "whole")
    assert [r["step"] for r in whole if "loss_spike" in r] == [3]
    assert _logged(in_tmp / "split") == whole  # losses and the spike's row, bit for bit


def _saved_metrics(run) -> dict[int, dict | None]:
    """Each checkpoint's metrics as saved (its manifest's), by step."""
    folders = (p for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    return {
        int(p.name): json.loads((p / "manifest" / "metadata").read_text())["metrics"]
        for p in folders
    }


def test_a_resume_ranks_its_checkpoints_by_the_evaluation_the_run_that_went_through_had(
    in_tmp, capsys
):
    """A checkpoint between evaluations is saved with the last validation loss, which
    checkpoint.keep_best ranks it by (a step saved without it is kept only among the newest). The
    stop's checkpoint keeps that evaluation, so the step saved after a resume and before the next
    evaluation carries the loss the run that went through saved with it (it carried none)."""
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    sets = ["train.checkpoint_every=1", "checkpoint.keep_last=10", "train.sample_every=0"]
    sets += [f"data.cache_dir={in_tmp / 'cache'}"]  # 4 steps, evaluated at 2 and 4
    _went_through_and_resumed(text, in_tmp, sets)
    capsys.readouterr()
    whole = _saved_metrics(in_tmp / "whole")
    assert sorted(whole) == [1, 2, 3, 4]
    assert whole[3]["val_loss"] == whole[2]["val_loss"] > 0  # evaluated at 2 (eval_every=2)
    assert _saved_metrics(in_tmp / "split") == whole


class _FakeWandb:
    """wandb as the trainer's W&B logger calls it (wandb itself is not in the tests' sandbox):
    each ``init``'s keywords, recorded."""

    def __init__(self) -> None:
        self.inits: list[dict] = []
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # the logger check's find

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return types.SimpleNamespace(log=lambda data, step: None, finish=lambda: None)

    def Settings(self, **kwargs):  # noqa: N802 (wandb's names)
        return kwargs

    def Table(self, **kwargs):  # noqa: N802
        return kwargs


def test_a_resume_logs_each_step_once_and_to_the_w_and_b_run_its_start_made(
    in_tmp, capsys, monkeypatch
):
    """A run killed after logging steps 3 and 4 but before saving step 4 resumes from step 2 and
    logs 3 and 4 again: metrics.jsonl then holds every step once, as a run that went straight
    through logged it, the stopped run's rows of 3 and 4 are kept in metrics.rewound.jsonl, and
    both segments log to one W&B run (its id kept in wandb.json; each segment was a new W&B run)."""
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(wandb_logger, "_import_wandb", lambda: fake)
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    sets = ["train.sample_every=0", "logging.sinks=[jsonl,wandb]", "logging.wandb_mode=offline"]
    argv = _argv(
        text, *(a for s in [*sets, f"data.cache_dir={in_tmp / 'cache'}"] for a in ("--set", s))
    )
    assert main(argv) == 0
    straight = _logged(in_tmp / "run")
    shutil.rmtree(in_tmp / "run" / "checkpoints" / "4")  # killed before step 4's save
    assert main([*argv, "--resume"]) == 0
    out = capsys.readouterr().out
    again = [r for r in straight if r["step"] > 2]
    assert f"resume: {len(again)} records the run logged after step 2 before it stopped" in out
    assert _logged(in_tmp / "run") == straight  # each step once, as the straight run logged it
    assert _logged(in_tmp / "run", "metrics.rewound.jsonl") == again  # the stopped run's rows
    ids = {(init["id"], init["name"], init["resume"]) for init in fake.inits}
    kept = json.loads((in_tmp / "run" / "wandb.json").read_text())
    assert len(fake.inits) == 2 and ids == {(kept["id"], "run", "allow")}
