"""Supervised fine-tuning on chat data: ``data.format: chat`` trains on the assistant's tokens only
(tjx.data's chat loader, -100 elsewhere), and the ``sft_tiny`` preset's loss falls."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from tjx import nn
from trainer.cli import main, plan_argv
from trainer.config.schema import ConfigError
from trainer.config.typed import read_config, resolve, step_config

SMALL = [
    "model.d_model=32",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.mlp.dim=64",
    "data.batch_size=8",
    "eval.batch_size=8",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]


def _argv(tmp, cache, *sets):
    """The command line of a run in ``tmp`` (``cache``: the session's data cache)."""
    argv = ["--config", "sft_tiny", "--run-dir", str(tmp / "run")]
    for item in [*SMALL, f"data.cache_dir={cache}", *sets]:
        argv += ["--set", item]
    return argv


def test_the_loss_counts_the_assistant_tokens_only(in_tmp, data_cache):
    import trainer.step.data_setup as data_setup
    import trainer.step.state as state
    from trainer.step.train_step import make_loss_fn

    cfg = plan_argv(_argv(in_tmp, data_cache)).config
    bundle = data_setup.prepare(cfg)
    cfg = resolve(cfg, bundle.vocab_size)
    setup = state.build(step_config(cfg))
    batch = next(data_setup.train_loader(bundle, cfg))
    targets = batch["targets"]
    trained = targets != -100
    # Every trained target is the assistant's: the answer's digits, its sign, its <|im_end|>;
    # no token of the user's question ("What is 37 + 58?") nor of the role headers.
    tok = bundle.tokenizer
    words = {tok.decode([int(t)]) for t in np.unique(targets[trained])}
    assert words and all(w == "<|im_end|>" or w.strip("-0123456789") == "" for w in words), words
    prompts = {tok.decode([int(t)]) for t in np.unique(batch["inputs"][~trained])}
    assert {"user", " is", " +"} <= prompts, prompts
    loss, aux = make_loss_fn(setup.graphdef, setup.rest, setup.step_config)(
        setup.state.param_tree(), batch, jax.numpy.int32(0)
    )
    assert int(aux["num_tokens"]) == int(trained.sum())
    # The loss is the per-token mean over the trained targets of a float64 cross-entropy, and
    # not the mean over every position (which the same logits make different).
    logits_fn = nn.objective_logits_fn(setup.graphdef, setup.rest)
    logits, _ = logits_fn(setup.state.param_tree(), batch)
    z = np.asarray(logits, np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    safe = np.where(trained, targets, 0)
    ce = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
    assert float(loss) == pytest.approx(ce[trained].mean(), rel=1e-4)
    real = batch["segment_ids"] > 0
    assert abs(ce[real].mean() - ce[trained].mean()) > 1e-3


def test_sft_tiny_loss_falls_and_the_run_says_what_the_truncation_did(in_tmp, data_cache, capsys):
    sets = ["train.steps=40", "train.log_every=5", "train.eval_every=20", "train.eval_batches=2"]
    assert main(_argv(in_tmp, data_cache, *sets)) == 0
    out = capsys.readouterr().out
    assert "chat rows kept, 0 cut to data.seq_len + 1, 0 dropped" in out
    run = in_tmp / "run"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [x["loss"] for x in lines if "loss" in x]
    val = [x["val_loss"] for x in lines if "val_loss" in x]
    assert train[-1] < 0.7 * train[0], train
    assert len(val) == 2 and val[1] < val[0], val
    described = json.loads((run / "data.json").read_text())
    assert described["format"] == "chat" and described["bytes_per_token"] is None


def test_chat_data_on_a_model_it_cannot_train_and_an_unknown_format_are_refused():
    with pytest.raises(ConfigError, match=r"^data\.format: chat data trains a decoder"):
        read_config({"model": {"kind": "bert"}, "data": {"format": "chat"}})
    with pytest.raises(ConfigError, match=r"^data\.format: 'dpo' is not allowed"):
        read_config({"data": {"format": "dpo"}})


def test_a_resume_with_another_chat_template_is_one_line_and_writes_nothing(
    in_tmp, data_cache, capsys
):
    import shutil

    from tjx import data

    made = data.prepare_chat_run_data(
        "arithmetic",
        "bpe",
        kind="chat",
        seq_len=64,
        cache_dir=data_cache,
        tokenizer_vocab=400,
    )
    folder = in_tmp / "tok"
    shutil.copytree(made.tokenizer_dir, folder)
    sets = [f"data.tokenizer={folder}", "train.steps=4", "train.checkpoint_every=2"]
    sets += ["train.eval_every=0", "train.sample_every=0"]
    assert main(_argv(in_tmp, data_cache, *sets, "train.stop_at=2")) == 0
    run = in_tmp / "run"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = config["chat_template"].replace("<|im_start|>", "<|im_start|> ")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main([*_argv(in_tmp, data_cache, *sets), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "trainer: error: --resume: the chat template in data.tokenizer"
    ), err
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before
