"""Tests of tools/trainer_walk.py's setting walks: the rule's parts on objects each test builds, and
one real walk of both settings and of the whole way to the first train step (a tiny CPU run in a
fresh process), whose summary lines CI's report prints (tools/ci_summary.py reads them from this
file's JUnit properties)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trainer_walk
from ci_summary import WALK_PROPERTY

TOOL = Path(trainer_walk.__file__).resolve()
#: Each setting walk's bound in files: #53's goal for ``train.steps``; for
#: ``model.attention_impl`` (walked to where the kernel is called) what holds today, #69's goal
#: being 12. Why 12 is out of reach while the model holds its kernel: the resolved kernel
#: (``tjx.kernels.AttentionKernel``, a StrEnum) equals its name, so the model's build (given a
#: ``ModelAttention``), its blocks and stack (an attention layer within 3 steps) carry the
#: setting; so does every frame holding the model config (``attention_impl``) or a
#: ``ModelAttention`` (``name``): the step's and the plan's. Were neither of those two to hold
#: the name after the kernel choice, this walk would be 17 files (first_compile, target_plan,
#: state, train_step, objectives and families/parts go). 26 with the norm's and the MLP's own
#: kernel settings (``norm.impl``, ``mlp.impl``), which resolve to the same word, ``xla``: the
#: files that resolve or keep them (norms, mlp, tjx.kernels.layer_kernels) carry the walked value
#: too; walked with ``pallas`` instead (a value no other setting holds, but another kernel's run)
#: it was 25 when this walk was 28 (not walked so since).
MAX_FILES = {"train.steps": 10, "model.attention_impl": 26}
#: The whole walk's bound (files, returns) to the first train step: what holds today, #69's goal
#: being 70 files and 90 returns. 257 → 259 returns (2026-11-30): the data's preparation names a
#: source folder's files of other types first (tjx.data's left_out_summary, in tjx.data.run.setup,
#: listing them in tjx.data.sources.local), two more entries into files the walk reads anyway.
#: 259 → 260 (2026-12-01): the run's data.json records the folder its relative sources were read
#: in (tjx.data's read_in, in tjx.data.run.rules, which the walk read for check_local_sources).
MAX_FIRST_STEP = (138, 260)
SUMMARY = re.compile(r"^walk (.+?): (\d+) files, (\d+) calls, (\d+) returns$")


@dataclass
class Section:
    steps: int


@dataclass
class Config:
    train: Section


class Holder:  # a class of no checkout module: its attributes are not searched
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg


def carrier() -> trainer_walk.Carrier:
    return trainer_walk.Carrier("train.steps", "4321", own=("trainer", "tjx"))


def test_a_carrier_is_the_value_or_holds_it_within_depth() -> None:
    find = carrier().find
    cfg = Config(Section(4321))
    assert find([4321]) and find(["4321"]) and find(["train.steps=4321"])
    assert find([cfg]) and find([argparse.Namespace(overrides=["train.steps=4321"])])
    assert find([{"train": {"steps": 4321}}])
    # Depth 3 (DEPTH): a namespace holding the config; 4 is beyond it.
    assert trainer_walk.DEPTH == 3
    assert find([argparse.Namespace(cfg=cfg)])
    assert not find([argparse.Namespace(inner=argparse.Namespace(cfg=cfg))])


def test_other_values_and_foreign_objects_carry_nothing() -> None:
    find = carrier().find
    assert not find([4320, "432", "train.steps=1", True, 4321.0, {"steps": [1, 2]}])
    assert not find([Holder(Config(Section(4321)))])  # not entered: not the checkout's class
    assert not find([Config])  # a class is not searched


def test_a_walk_of_files_counts_a_call_per_entry_and_a_return_per_revisit() -> None:
    functions = [("a.py", "f", ""), ("a.py", "g", ""), ("b.py", "h", ""), ("a.py", "i", "")]
    files = trainer_walk.files_of(functions)
    assert files == ["a.py", "b.py", "a.py"]
    assert trainer_walk.summary("k", files) == "walk k: 2 files, 3 calls, 1 returns"


def test_an_unknown_setting_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert trainer_walk.main(["--setting", "train.stepz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.stepz" in err[0] and "train.steps" in err[0]


def test_the_walks_go_from_the_command_line_to_where_each_setting_acts_and_to_the_first_step(
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    # A fresh process: a warm one's caches (functools, jit) would skip calls of the walk.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
    env["JAX_PLATFORMS"] = "cpu"
    keys = list(trainer_walk.TARGETS)
    args = [sys.executable, str(TOOL), "--functions", "--first-step"]
    for key in keys:
        args += ["--setting", key]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    targets = {**trainer_walk.TARGETS, trainer_walk.FIRST_STEP_KEY: trainer_walk.FIRST_STEP}
    sizes: dict[str, tuple[int, list[str]]] = {}
    for key, (path, name) in targets.items():
        found = [SUMMARY.match(line) for line in lines]
        summary = next(m for m in found if m is not None and m.group(1) == key)
        files, calls, returns = (int(summary.group(i)) for i in (2, 3, 4))
        # The listed files of this walk: between its header line and its summary line.
        start = lines.index(f"{key}: the command line -> {path}:{name}")
        listed = [line.split()[1] for line in lines[start + 1 : lines.index(summary.group(0))]]
        # --functions' lines of this walk: "KEY: FILE:QUALNAME (why)".
        ours = [
            line.removeprefix(f"{key}: ").split()[0]
            for line in done.stderr.splitlines()
            if line.startswith(f"{key}: ") and line.endswith(")")
        ]
        assert files > 1 and calls >= files and returns == calls - files
        assert len(listed) == calls and len(set(listed)) == files
        # From the command line's entry point to the target, and nothing outside the scope.
        assert ours[0] == "apps/trainer/trainer/cli.py:main"
        assert ours[-1] == f"{path}:{name}" and listed[-1] == path
        assert all(f.startswith(("apps/trainer/trainer/", "packages/")) for f in listed)
        record_testsuite_property(WALK_PROPERTY, summary.group(0))
        sizes[key] = files, listed
    for key in keys:
        files, listed = sizes[key]
        # Held: a function that does not use a setting does not receive it (the fp8 device
        # check once took the whole model config and lengthened the walks).
        limit = MAX_FILES[key]
        assert files <= limit, f"walk {key}: {files} files, over its {limit}: {listed}"
    # The attention walk ends where the kernel runs: the model's attention layer calls it.
    path, name = trainer_walk.TARGETS["model.attention_impl"]
    assert (path, name) == ("packages/tjx-kernels/src/tjx/kernels/dispatch.py", "attention")
    assert "packages/tjx-nn/src/tjx/nn/attention/layer.py" in sizes["model.attention_impl"][1]
    # The whole walk holds every file of the setting walks and goes on past the training loop;
    # held: a gpt2 run's first step walks no further (an absent feature's checks, a helper in a
    # third file, lengthen it).
    files, listed = sizes[trainer_walk.FIRST_STEP_KEY]
    assert all(set(sizes[key][1]) <= set(listed) for key in keys), listed
    assert files > max(sizes[key][0] for key in keys)
    returns, (max_files, max_returns) = len(listed) - files, MAX_FIRST_STEP
    over = f"walk first step: {files} files, {returns} returns, over its {MAX_FIRST_STEP}"
    assert files <= max_files and returns <= max_returns, f"{over}: {listed}"
