"""A run whose sequences are split over the context devices (mesh.context, #42 phase B): it trains
as the same run unsplit does, and a setting the split cannot serve is one line, nothing written."""

from __future__ import annotations

import json

import pytest

from tjx.metrics.loggers.jsonl import JSONL_NAME
from trainer.cli import main

#: tiny, smaller; float32 throughout. 8 simulated devices: data 8, or data 4 × context 2.
SETS = [
    "model.d_model=32",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.mlp.dim=64",
    "model.max_seq_len=32",
    "data.seq_len=32",
    "data.batch_size=8",
    "eval.batch_size=8",
    "train.steps=3",
    "train.eval_every=3",
    "train.eval_batches=1",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "train.log_every=1",
    "train.fit_memory=false",
    "optimizer.schedule.warmup_steps=1",
    "sampling.max_new_tokens=2",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]
#: Float32 losses of a split run against the unsplit one: the ring's online softmax and the sums
#: over devices add in another order (measured 2026-11-24: ≤ 1e-7 relative over 3 steps).
RTOL = 1e-5


def _argv(text, run, *sets):
    argv = ["--config", "tiny", "--run-dir", str(run), "--data", str(text)]
    for item in [*SETS, *sets]:
        argv += ["--set", item]
    return argv


def _losses(run):
    rows = [json.loads(line) for line in (run / JSONL_NAME).read_text().splitlines()]
    train = [r["loss"] for r in rows if "loss" in r]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    return train, val


@pytest.fixture()
def corpus(in_tmp):
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be, or not to be, that is the question.\n"
                            for i in range(300)))  # fmt: skip
    return text


def test_a_context_split_trains_as_the_unsplit_run(in_tmp, corpus, capsys):
    cache = f"data.cache_dir={in_tmp / 'cache'}"
    assert main(_argv(corpus, in_tmp / "whole", cache)) == 0
    whole = _losses(in_tmp / "whole")
    assert len(whole[0]) == 3 and len(whole[1]) == 1
    assert whole[0][0] != whole[0][2]  # it trains: the losses move
    capsys.readouterr()
    for data, ways, strategy in ((4, 2, "ring"), (2, 4, "all_gather")):
        mesh = f"mesh.data={data}", f"mesh.context={ways}", f"mesh.context_strategy={strategy}"
        run = in_tmp / f"split{ways}"
        assert main(_argv(corpus, run, cache, "mesh.strategy=fsdp", *mesh)) == 0
        out = capsys.readouterr().out
        # the block kernel under the split, never cuDNN (auto: XLA's blocks on a CPU)
        assert f"attention: xla blocks, {strategy} across mesh.context={ways}" in out, out
        assert f"data {data} × fsdp 1 × expert 1 × context {ways}" in out, out
        train, val = _losses(run)
        assert train == pytest.approx(whole[0], rel=RTOL)
        assert val == pytest.approx(whole[1], rel=RTOL)


@pytest.mark.parametrize(
    ("sets", "line"),
    [
        (
            ("data.seq_len=30",),
            "data.seq_len: 30 must be divisible by 2 × context = 4",
        ),
        (
            ("model.attention_impl=cudnn",),
            "model.attention_impl: cudnn cannot attend across a split sequence",
        ),
        (("model.position.kind=alibi",), "model.position.kind: a split sequence takes no additive"),
        (
            ("model.attention.dropout=0.1",),
            "model.attention.dropout: a split sequence takes no additive attention bias",
        ),
        (
            ("model.attention_impl=pallas", "model.attention.sliding_window=8"),
            "model.attention_impl: pallas cannot apply model.attention.sliding_window across a",
        ),
        (
            ("mesh.pipeline=2", "mesh.data=2"),
            "mesh: context parallelism (context=2) with pipeline stages (pipeline=2) is not "
            "supported; set one of them to 1",
        ),
    ],
)
def test_a_setting_the_split_cannot_serve_is_one_line_and_nothing_written(
    in_tmp, corpus, capsys, sets, line
):
    argv = _argv(corpus, in_tmp / "run", "mesh.data=-1", "mesh.context=2", *sets)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainer: error: ") and line in err, err
    assert err.count("\n") == 1
    assert not (in_tmp / "run").exists()


def test_a_model_that_is_not_a_decoder_is_not_split(in_tmp, capsys):
    assert main(["--config", "bert_tiny", "--run-dir", "run", "--set", "mesh.context=2"]) == 2
    err = capsys.readouterr().err
    assert "mesh.context: context parallelism splits decoder language models; model.kind is " \
        "'bert': set mesh.context=1" in err, err  # fmt: skip
    assert not (in_tmp / "run").exists()
