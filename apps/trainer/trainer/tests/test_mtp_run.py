"""A multi-token-prediction model (``model.mtp.depths``) trains in-process: every log line has a
finite ``mtp_loss`` (the depths' mean cross-entropy, logged apart from the weighted loss), and it
falls as the run learns; a bad weight is one line."""

from __future__ import annotations

import json
import math

import pytest

from trainer.cli import main
from trainer.tests._tiny import TINY_RUN

SETS = [
    *TINY_RUN,
    "model.mtp.depths=2",
    "model.mtp.loss_weight=0.5",
    "train.steps=12",
    "train.log_every=4",
    "train.eval_every=0",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "optimizer.schedule.warmup_steps=1",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]


def _argv(root, *extra):
    text = root / "corpus.txt"
    text.write_text("".join(f"Line {i % 7}: to be or not to be.\n" for i in range(300)))
    argv = ["--config", "tiny", "--run-dir", str(root / "run"), "--data", str(text)]
    for item in [*SETS, f"data.cache_dir={root / 'cache'}", *extra]:
        argv += ["--set", item]
    return argv


def test_an_mtp_model_logs_a_falling_mtp_loss(in_tmp, capsys):
    assert main(_argv(in_tmp)) == 0
    capsys.readouterr()
    rows = [
        json.loads(line) for line in (in_tmp / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    steps = [r for r in rows if "loss" in r and "step" in r]
    assert [r["step"] for r in steps] == [4, 8, 12]
    mtp = [r["mtp_loss"] for r in steps]
    assert all(math.isfinite(m) and m > 0 for m in mtp), mtp
    assert mtp[-1] < mtp[0], mtp
    # The loss holds 0.5 times it: above the MTP share alone.
    assert all(r["loss"] > 0.5 * r["mtp_loss"] for r in steps)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["model.mtp.loss_weight=-1"], "model.mtp.loss_weight must be >= 0"),
        (["mesh.context=2"], "model.mtp.depths: multi-token prediction shifts tokens"),
    ],
)
def test_bad_mtp_input_is_one_line(in_tmp, capsys, extra, message):
    assert main(_argv(in_tmp, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
