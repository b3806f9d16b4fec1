"""A LoRA chat fine-tune of a Hugging Face Llama folder, end to end through both apps (#43).

A tiny Llama is written as a HF folder together with a ChatML tokenizer trained on tjx.data's
arithmetic task (the folder is its own ``data.tokenizer``, chat template included). The trainer
fine-tunes it ``--init-from`` the folder with LoRA on chat data (``sft_tiny``), stops halfway,
resumes without ``--init-from`` and writes a PEFT adapter: the adapter names the folder as its base
(the run recorded it). The evaluator then rebuilds the adapted model: its held-out loss over the
same batches equals the trainer's last ``val_loss`` (assistant tokens only), ``--generate --chat``
answers, and ``--export-hf`` writes a merged checkpoint whose logits are the adapted model's.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from flax import nnx

from tests_integration._helpers_apps import call_app, check_ok, train, val_losses
from tjx import data, nn

SETS = [
    "data.batch_size=8",
    "data.cache_dir=cache",
    "eval.batch_size=8",
    "train.steps=8",
    "train.stop_at=4",
    "train.eval_every=4",
    "train.eval_batches=2",
    "train.checkpoint_every=4",
    "train.sample_every=0",
    "train.log_every=4",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
    "optimizer.schedule.warmup_steps=0",
    "lora.enabled=true",
    "lora.rank=4",
    "lora.targets=[q, k, v, o, gate, up, down]",
]


def _hf_llama_with_chatml(folder):
    made = data.prepare_chat_run_data(
        "arithmetic", "bpe", kind="chat", seq_len=64, cache_dir=folder.parent / "prep",
        tokenizer_vocab=300,
    )  # fmt: skip
    config = nn.LlamaConfig(
        vocab_size=made.vocab_size,
        max_seq_len=64,
        d_model=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,  # sft_tiny's: a setting --init-from checks against the checkpoint
        mlp=nn.MLPConfig(dim=64),
        tie_embeddings=False,
        precision="fp32",
    )
    nn.save_hf(nn.Llama(config, rngs=nnx.Rngs(0)), folder)
    # tokenizer.json and the ChatML tokenizer_config.json next to the weights, as on the hub
    shutil.copytree(made.tokenizer_dir, folder, dirs_exist_ok=True)


def test_a_lora_chat_run_from_a_hf_folder_evaluates_and_exports_as_trained(tmp_path):
    hf = tmp_path / "base"
    _hf_llama_with_chatml(hf)
    sets = [*SETS, f"data.tokenizer={hf}"]
    check_ok(train(tmp_path, "run", sets, "--init-from", str(hf), config="sft_tiny"))
    run = tmp_path / "run"
    proc = train(
        tmp_path, "run", [*sets, "train.stop_at=null"], "--resume", "--export-peft",
        str(tmp_path / "adapter"), config="sft_tiny",
    )  # fmt: skip
    check_ok(proc)
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(hf.resolve())  # not null after a resume
    assert json.loads((tmp_path / "run" / "init.json").read_text())["kind"] == "hugging-face"

    val = val_losses(run)[8]
    flags = ["--batch-size", "8", "--max-batches", "2", "--attention-png", "none"]
    # The evaluator's main in this process (the same command line and lines; no interpreter to
    # start and import for each of its three calls).
    proc = call_app("eval", ["--checkpoint", str(run), *flags], tmp_path)
    check_ok(proc)
    loss = float(re.search(r"^loss\s+([0-9.]+)", proc.stdout, re.M).group(1))
    assert loss == pytest.approx(val, abs=1e-4)  # the table prints 4 decimals
    assert "held-out assistant tokens" in proc.stdout

    ask = ["--generate", "What is 12 + 30?", "--chat", "--temperature", "0"]
    proc = call_app("eval", ["--checkpoint", str(run), *flags, *ask], tmp_path)
    check_ok(proc)
    header, reply = proc.stdout.split("--- reply (", 1)[1].split("\n", 1)
    assert "user 'What is 12 + 30?'; greedy" in header
    assert "<|im_start|>" not in reply and "<|im_end|>" not in reply and "What is" not in reply

    out = tmp_path / "merged"
    check_ok(call_app("eval", ["--checkpoint", str(run), "--export-hf", str(out)], tmp_path))
    merged, _ = nn.load_hf(out)
    assert not nn.has_lora(merged)
    from eval import load_run

    adapted = load_run(run).model
    assert nn.has_lora(adapted)
    tokens = np.random.default_rng().integers(0, merged.config.vocab_size, (2, 24))
    np.testing.assert_allclose(
        np.asarray(merged(tokens)), np.asarray(adapted(tokens)), rtol=1e-4, atol=1e-5
    )
