"""A run's held-out reward (issue #55): a GRPO run is scored by its rewards on greedy completions
of its validation prompts (against a reference written with tjx.nn.generate and `tokenizers`
alone), a chat run with ``--rewards`` on its source's prompts gives the same numbers for the
same model, and the refusals are one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tokenizers
from flax import nnx

from eval.cli import main
from tjx import ckpt, data, nn

SEQ, PROMPT, NEW = 48, 24, 6


def chars(completion: str, example: dict[str, Any]) -> float:
    """A reward that reads every character (a random model's exact answers all score 0)."""
    del example
    return float(len(completion)) + 0.5 * float(completion.count(" "))


@pytest.fixture(autouse=True)
def _chars_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(data.REWARDS, "chars", chars)


def _save(run: Path, config: dict[str, Any], model: Any, run_data: Any) -> None:
    run.mkdir()
    (run / "config.yaml").write_text(json.dumps(config))
    (run / "model.json").write_text(json.dumps(nn.config_to_dict(model.config)))
    (run / "data.json").write_text(json.dumps(run_data.describe(run)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    manager = ckpt.CheckpointManager(run / "checkpoints", async_save=False)
    manager.save(3, state={"params": params, "step": np.int32(3)}, config={}, force=True)
    manager.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any, Any]:
    """(a GRPO run, a chat run of the same model, the model, the GRPO run's prompt data)."""
    tmp = tmp_path_factory.mktemp("reward")
    kw = {"cache_dir": tmp / "cache", "tokenizer_vocab": 300}
    chat = data.prepare_chat_run_data("reverse", "bpe", kind="chat", seq_len=SEQ, **kw)
    prompts = data.prepare_chat_run_data("reverse", "bpe", kind="prompts", seq_len=PROMPT, **kw)
    config = nn.LlamaConfig(vocab_size=chat.vocab_size, max_seq_len=SEQ, d_model=32,
                            num_layers=2, num_heads=4, num_kv_heads=2, mlp=nn.MLPConfig(dim=64),
                            init=nn.InitConfig(std=0.2),
                            precision="fp32")  # fmt: skip
    model = nn.build_model(config, rngs=nnx.Rngs(7))
    grpo = {"rewards": ["exact_answer", "chars"], "reward_weights": [1.0, 0.25],
            "max_new_tokens": NEW}  # fmt: skip
    _save(tmp / "grpo", {"name": "g", "grpo": grpo, "train": {"seed": 0}}, model, prompts)
    _save(tmp / "chat", {"name": "c", "train": {"seed": 0}}, model, chat)
    return tmp / "grpo", tmp / "chat", model, prompts


def _reference(model: Any, prompts: Any, rows: int) -> list[str]:
    """Greedy completions of the first ``rows`` validation prompts, cut before <|im_end|>:
    each prompt rendered by hand (ChatML), tokenized and decoded by `tokenizers` alone."""
    tok = tokenizers.Tokenizer.from_file(str(prompts.tokenizer_dir / "tokenizer.json"))
    eos = tok.token_to_id("<|im_end|>")
    val = data.read_prompt_rows(data.load_sequences(prompts.val_dir))
    out = []
    for row in val[:rows]:
        text = f"<|im_start|>user\n{row['prompt'][0]['content']}<|im_end|>\n<|im_start|>assistant\n"
        ids = np.asarray([tok.encode(text, add_special_tokens=False).ids], np.int32)
        new = np.asarray(nn.generate(model, ids, max_new_tokens=NEW))[0, ids.shape[1] :].tolist()
        out.append(tok.decode(new[: new.index(eos)] if eos in new else new))
    return out


def _table(out: str) -> dict[str, float]:
    got = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("reward", "prompts", "rewards/chars",
                                            "rewards/exact_answer"):  # fmt: skip
            got[parts[0]] = float(parts[1].replace(",", ""))
    return got


def test_a_grpo_run_is_scored_by_its_rewards_on_greedy_completions(runs, capsys):
    grpo, _, model, prompts = runs
    argv = ["--checkpoint", str(grpo), "--batch-size", "4", "--max-batches", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    got = _table(out)
    texts = _reference(model, prompts, 8)
    val = data.read_prompt_rows(data.load_sequences(prompts.val_dir))[:8]
    each = np.array([chars(t, {}) for t in texts])
    exact = np.array([float(t.strip() == r["answer"]) for t, r in zip(texts, val, strict=True)])
    assert got["prompts"] == 8
    np.testing.assert_allclose(got["rewards/chars"], each.mean(), atol=5e-5)
    np.testing.assert_allclose(got["rewards/exact_answer"], exact.mean(), atol=5e-5)
    np.testing.assert_allclose(got["reward"], (exact + 0.25 * each).mean(), atol=5e-5)
    assert each.mean() > 0  # the completions are not empty: the check above reads text
    assert "greedy completions of at most 6 tokens, scored by exact_answer, chars" in out
    assert "attention distance" not in out  # a GRPO run's held-out rows are prompts


def test_a_chat_run_with_rewards_is_scored_on_its_sources_prompts_alike(runs, capsys):
    grpo, chat, _, _ = runs
    flags = ["--batch-size", "4", "--max-batches", "2", "--rewards", "chars",
             "--max-new-tokens", str(NEW), "--attention-png", "none"]  # fmt: skip
    assert main(["--compare", str(grpo), str(chat), *flags]) == 0
    lines = {ln.split()[0]: ln.split()[1:] for ln in capsys.readouterr().out.splitlines() if ln}
    # One model, one tokenizer, the same held-out rows: the same completions (the prompts are
    # padded to another width: 24 in the GRPO run, max_seq_len − 6 for the chat run).
    assert lines["reward"][0] == lines["reward"][1] and float(lines["reward"][0]) > 0
    assert lines["prompts"] == ["8", "8"]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--rewards", "nope"], "eval: error: --rewards: unknown reward 'nope'; the rewards are: "),
        (["--rewards", "chars", "--max-new-tokens", "48"],
         "eval: error: --max-new-tokens: 48 leaves no room for a prompt in the model's "),
    ],
)  # fmt: skip
def test_bad_reward_arguments_are_one_line(runs, capsys, flags, words):
    _, chat, _, _ = runs
    assert main(["--checkpoint", str(chat), "--attention-png", "none", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(words), err


def test_comparing_a_grpo_run_with_a_chat_run_needs_rewards(runs, capsys):
    grpo, chat, _, _ = runs
    assert main(["--compare", str(grpo), str(chat)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "eval: error: --compare: a GRPO run is scored by its held-out reward; give --rewards "
        "(e.g. exact_answer) to score both runs by reward"
    ]


def test_rewards_on_a_run_without_a_chat_template_is_one_line(run_dir, capsys):
    assert main(["--checkpoint", str(run_dir[0]), "--rewards", "chars"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "eval: error: --rewards: needs a run with a chat template"
    ), err
