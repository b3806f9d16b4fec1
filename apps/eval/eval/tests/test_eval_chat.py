"""A LoRA chat run in the evaluator (hand-made run directories, a tiny Llama with random adapters):
``--generate --chat`` feeds the template's rendering and stops at ``<|im_end|>``; held-out loss is
over the assistant's tokens (float64 reference); ``--export-hf`` writes the merged model; the
refusals are one line, exit 2. The trainer's own numbers: tests-integration test_eval_chat_run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
import tokenizers
from flax import nnx

from eval.cli import main
from eval.heldout import evaluate_run
from eval.runs import load_run
from tjx import ckpt, data, nn

LORA = {"enabled": True, "rank": 2, "alpha": 4.0, "dropout": 0.0, "targets": ["q", "v", "down"]}
LORA["rslora"] = False
SEQ = 48
QUESTION = "What is 12 + 30?"


def _llama(vocab: int) -> Any:
    fields = {
        "vocab_size": vocab,
        "max_seq_len": 64,
        "d_model": 32,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "mlp": nn.MLPConfig(dim=64),
        "init": nn.InitConfig(
            std=0.2
        ),  # large enough that the tiny model's tokens vary with its input
        "precision": "fp32",
    }
    return nn.make_config(nn.LlamaConfig, fields)


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """(run dir, the model its checkpoint holds — adapters included —, its ChatRunData)."""
    tmp = tmp_path_factory.mktemp("chat")
    run_data = data.prepare_chat_run_data(
        "arithmetic", "bpe", kind="chat", seq_len=SEQ, cache_dir=tmp / "cache", tokenizer_vocab=300
    )
    config = _llama(run_data.vocab_size)
    model = nn.build_model(config, rngs=nnx.Rngs(3))
    lora = nn.LoraConfig(**{k: v for k, v in LORA.items() if k != "enabled"})
    nn.add_lora(model, lora, rngs=nnx.Rngs(params=4, dropout=5))
    # B is zero at init (the adapted model is the base); random B makes the adapters count.
    key = iter(jax.random.split(jax.random.key(6), 64))
    for path, var in nnx.iter_graph(model):
        if path and path[-1] == "lora_b":
            var.set_value(0.3 * jax.random.normal(next(key), var[...].shape, var[...].dtype))
    run = tmp / "run"
    run.mkdir()
    settings = {"name": "chat", "lora": LORA, "train": {"seed": 0, "eval_batches": 2}}
    (run / "config.yaml").write_text(json.dumps(settings))
    (run / "model.json").write_text(json.dumps(nn.config_to_dict(config)))
    (run / "data.json").write_text(json.dumps(run_data.describe(run)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    manager = ckpt.CheckpointManager(run / "checkpoints", async_save=False)
    manager.save(5, state={"params": params, "step": np.int32(5)}, config={}, force=True)
    manager.close()
    return run, model, run_data


def _flags(*extra: str) -> list[str]:
    return ["--max-batches", "1", "--batch-size", "2", "--attention-png", "none", *extra]


def test_a_chat_reply_reads_the_rendered_turn_and_stops_at_the_end_of_turn(
    chat_run, capsys, monkeypatch
):
    run, model, run_data = chat_run
    fed: list[np.ndarray] = []
    generate = nn.generate

    def spy(m: Any, prompts: Any, **kw: Any) -> Any:
        fed.append(np.asarray(prompts))
        return generate(m, prompts, **kw)

    monkeypatch.setattr(nn, "generate", spy)
    argv = ["--checkpoint", str(run), "--generate", QUESTION, "--chat", "--temperature", "0"]
    assert main([*argv, *_flags("--max-new-tokens", "12")]) == 0
    out = capsys.readouterr().out
    # ChatML written out by hand (not by tjx.data's renderer), tokenized by `tokenizers` alone.
    text = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    tok = tokenizers.Tokenizer.from_file(str(run_data.tokenizer_dir / "tokenizer.json"))
    expected = tok.encode(text, add_special_tokens=False).ids
    assert len(fed) == 1 and fed[0].tolist() == [expected]
    # The reference: the in-memory model (adapters on) decoded greedily without a stop token,
    # cut before its first <|im_end|>.
    eos = tok.token_to_id("<|im_end|>")
    ids = np.asarray([expected], np.int32)
    full = np.asarray(generate(model, ids, max_new_tokens=12))[0, len(expected) :].tolist()
    reply = full[: full.index(eos)] if eos in full else full
    header, printed = out.split("--- reply (", 1)[1].split("\n", 1)
    assert printed.rstrip("\n") == tok.decode(reply, skip_special_tokens=False)
    assert "<|im_end|>" not in printed and "<|im_start|>" not in printed
    assert ("ended at <|im_end|>" in header) == (eos in full)


def test_a_reply_stops_at_the_end_of_turn_token(chat_run, capsys, monkeypatch):
    """The template's EOS is made the token the model picks third: the reply is two tokens."""
    run, model, run_data = chat_run
    tok = tokenizers.Tokenizer.from_file(str(run_data.tokenizer_dir / "tokenizer.json"))
    text = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    ids = np.asarray([tok.encode(text, add_special_tokens=False).ids], np.int32)
    free = np.asarray(nn.generate(model, ids, max_new_tokens=8))[0, ids.shape[1] :].tolist()
    third = free[2]
    first = free.index(third)  # the reply ends at the first time the model writes that token
    folder = run_data.tokenizer_dir.parent / "third-eos"
    shutil.copytree(run_data.tokenizer_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["eos_token"] = tok.id_to_token(third)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    template = data.ChatTemplate.from_folder(folder)
    info = {**json.loads((run / "data.json").read_text()), "tokenizer": str(folder)}
    info["template"] = template.fingerprint
    (run / "data.json").write_text(json.dumps(info))
    try:
        argv = ["--checkpoint", str(run), "--generate", QUESTION, "--chat", "--temperature", "0"]
        assert main([*argv, *_flags("--max-new-tokens", "8")]) == 0
    finally:
        (run / "data.json").write_text(json.dumps(run_data.describe(run)))
    header, printed = capsys.readouterr().out.split("--- reply (", 1)[1].split("\n", 1)
    assert f"ended at {tok.id_to_token(third)}" in header
    assert printed.rstrip("\n") == tok.decode(free[:first], skip_special_tokens=False)


def _reference_loss(model: Any, batches: list[dict[str, Any]]) -> tuple[float, float, int]:
    """(float64 CE mean over targets != -100, the mean over every real position, the count)."""
    total, count, every, real = 0.0, 0, 0.0, 0
    for batch in batches:
        logits = model(
            batch["inputs"], segment_ids=batch["segment_ids"], positions=batch["positions"]
        )
        logits = np.asarray(logits, np.float64)
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        targets = np.asarray(batch["targets"])
        picked = np.take_along_axis(logp, np.maximum(targets, 0)[..., None], -1)[..., 0]
        kept = targets != -100
        total -= picked[kept].sum()
        count += int(kept.sum())
        # Every real position's next token (what a text run scores): the inputs shifted by one.
        segments = np.asarray(batch["segment_ids"])
        nxt = np.asarray(batch["inputs"])[:, 1:]
        same = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0)
        every -= np.take_along_axis(logp[:, :-1], nxt[..., None], -1)[..., 0][same].sum()
        real += int(same.sum())
    return total / count, every / real, count


def test_held_out_loss_of_a_lora_chat_run_is_over_the_assistants_tokens(chat_run):
    run_dir, model, run_data = chat_run
    run = load_run(run_dir)
    assert run.lora is not None and nn.has_lora(run.model)
    got = evaluate_run(run, batch_size=4, max_batches=2)
    batches = list(run_data.validation_batches(4, 2))
    want, every, count = _reference_loss(model, batches)
    assert got["num_tokens"] == count
    assert got["loss"] == pytest.approx(want, rel=1e-5)
    assert abs(want - every) > 1e-2  # the mask matters on these batches
    base = nn.adapters_off(model)
    assert abs(_reference_loss(base, batches)[0] - want) > 1e-2  # and so do the adapters


def test_export_hf_of_a_lora_run_writes_the_merged_model_and_its_chat_template(
    chat_run, tmp_path, capsys
):
    run, model, run_data = chat_run
    out = tmp_path / "hf"
    assert main(["--checkpoint", str(run), "--export-hf", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    loaded, _ = nn.load_hf(out)
    assert not nn.has_lora(loaded)
    tokens = np.random.default_rng(0).integers(0, run_data.vocab_size, (2, 20))
    np.testing.assert_allclose(
        np.asarray(loaded(tokens)), np.asarray(model(tokens)), rtol=1e-4, atol=1e-4
    )
    assert data.ChatTemplate.from_folder(out).fingerprint == run_data.template


def test_chat_without_generate_is_refused(chat_run, capsys):
    assert main(["--checkpoint", str(chat_run[0]), "--chat"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "eval: error: --chat: applies to --generate; give the user's message with --generate"
    )


def test_chat_on_a_run_without_a_chat_template_is_refused(run_dir, capsys):
    argv = ["--checkpoint", str(run_dir[0]), "--generate", "hi", "--chat", *_flags()]
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and "has no chat template" in out.err
    assert "run " not in out.out  # refused before anything was scored


def test_a_template_that_fails_to_render_is_one_line(chat_run, tmp_path, capsys):
    run, model, run_data = chat_run
    folder = tmp_path / "hf"
    nn.save_hf(model, folder)
    shutil.copy(run_data.tokenizer_dir / "tokenizer.json", folder / "tokenizer.json")
    config = json.loads((run_data.tokenizer_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ raise_exception('this template takes no user turn') }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    text = tmp_path / "held.txt"
    text.write_text("".join(f"What is {i} + {i}? It is {2 * i}.\n" for i in range(300)))
    argv = ["--checkpoint", str(folder), "--generate", "hi", "--chat", "--data", str(text)]
    assert main([*argv, *_flags()]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this template takes no user turn" in err
    # The folder's own template back: a Hugging Face checkpoint talks through it.
    shutil.copy(run_data.tokenizer_dir / "tokenizer_config.json", folder / "tokenizer_config.json")
    assert main([*argv, *_flags("--temperature", "0", "--max-new-tokens", "4")]) == 0
    assert "--- reply (user 'hi'; greedy" in capsys.readouterr().out


def test_a_chat_run_scores_its_own_conversations_only(chat_run, capsys):
    assert main(["--checkpoint", str(chat_run[0]), "--data", "shakespeare", *_flags()]) == 2
    assert "a chat run is scored on its own held-out conversations" in capsys.readouterr().err


def test_a_chat_runs_attention_map_reads_its_packed_conversations(chat_run, tmp_path, capsys):
    png = tmp_path / "attention.png"
    argv = ["--checkpoint", str(chat_run[0]), "--max-batches", "1", "--batch-size", "2"]
    assert main([*argv, "--attention-png", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.stat().st_size > 0 and "attention distance per layer" in out
    assert "held-out assistant tokens (the trainer's loss mask)" in out
