"""An fp8 run (``model.precision.matmul=fp8``, #54) in-process: it trains, and a run stopped at
its checkpoint resumes to the very parameters and loss of the run that went through."""

from __future__ import annotations

import json

import numpy as np

from trainer.cli import main
from trainer.tests.test_loop_inprocess import SETS

FP8 = ["model.precision.compute_dtype=bfloat16", "model.precision.matmul=fp8"]


def _argv(root, text, *extra):
    argv = ["--config", "tiny", "--run-dir", str(root / "run"), "--data", str(text)]
    for item in [*SETS, *FP8, "train.sample_every=0"]:
        argv += ["--set", item]
    return [*argv, *extra]


def test_an_fp8_run_resumes_bit_exactly(in_tmp, capsys):
    rng = np.random.default_rng()  # fresh text: the resume must hold on any data
    text = in_tmp / "text.txt"
    text.write_text("".join(" ".join(rng.choice(list("abcdefgh"), 12)) + "\n" for _ in range(300)))
    whole, split = in_tmp / "whole", in_tmp / "split"
    whole.mkdir(), split.mkdir()
    assert main(_argv(whole, text)) == 0
    assert main(_argv(split, text, "--set", "train.stop_at=2")) == 0
    assert main(_argv(split, text, "--resume")) == 0
    capsys.readouterr()
    a, b = (json.loads((d / "run" / "final.json").read_text()) for d in (whole, split))
    assert a["params_sha256"] == b["params_sha256"] and a["val_loss"] == b["val_loss"]
    assert np.isfinite(a["val_loss"])
