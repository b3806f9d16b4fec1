"""``--init-from`` starts from Hugging Face GPT-2 weights (a local HF folder here: offline).

A small GPT-2 is written as a HF checkpoint folder (config.json + model.safetensors); the trainer
fine-tunes it on Shakespeare with the GPT-2 tokenizer for one step at a negligible learning rate,
so the saved parameters must equal the HF weights (to 1e-6), the architecture comes from the
checkpoint (not the tiny config) while decoding settings apply, ``--profile-steps`` writes a
jax.profiler trace, and the same ``--resume`` is accepted again and again.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from flax import nnx

from tests_integration._helpers_apps import check_ok, train
from tjx import ckpt, nn
from trainer import plan_argv


def test_init_from_a_hf_folder(tmp_path):
    cfg = nn.gpt2_config("small", d_model=32, num_layers=2, num_heads=2, max_seq_len=64)
    source = nn.GPT2(cfg, rngs=nnx.Rngs(7))
    nn.save_hf_gpt2(source, tmp_path / "hf")
    sets = [
        "data.tokenizer=gpt2",
        "data.seq_len=64",
        "data.batch_size=8",
        "eval.batch_size=8",
        "train.steps=2",
        "train.eval_every=0",
        "train.eval_batches=1",
        "train.sample_every=0",
        "train.checkpoint_every=1",
        "sampling.max_new_tokens=4",
        "optimizer.schedule.peak_lr=1e-12",
        "optimizer.schedule.warmup_steps=0",
        "optimizer.weight_decay=0.0",
        "logging.sinks=[jsonl]",
        "model.attention.decode_topk=4",  # a decoding setting: applies to the loaded weights too
    ]
    proc = train(
        tmp_path, "ft", sets, "--init-from", str(tmp_path / "hf"), "--profile-steps", "0:1"
    )
    check_ok(proc)
    run = tmp_path / "ft"
    desc = json.loads((run / "model.json").read_text())
    assert desc["fields"]["d_model"] == 32 and desc["fields"]["vocab_size"] == 50257
    assert desc["fields"]["attention"]["decode_topk"] == 4
    assert any((run / "profile").rglob("*")), "no profiler trace written"
    want = nnx.to_pure_dict(nnx.state(source, nnx.Param))
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), want)
    got = ckpt.restore_params(run / "checkpoints", target=target, step=1)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)
    # The same --resume, twice (#71): the first writes the checkpoint's architecture into
    # config.yaml (the tiny preset's d_model 128 → 32), and the second was refused for it (its
    # check, the whole of what differs from the first: trainer.plan_argv).
    again = train(tmp_path, "ft", sets, "--resume")
    check_ok(again)
    assert "nothing to do: the run is already at step 2 of 2" in again.stdout
    assert "d_model: 32" in (run / "config.yaml").read_text()
    argv = ["--config", "tiny", "--run-dir", str(run), "--resume"]
    second = plan_argv([*argv, *(x for item in sets for x in ("--set", item))])
    assert second.resume and second.resume_changes == {}
