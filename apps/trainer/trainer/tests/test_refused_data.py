"""Data a run refuses leaves the shared data cache as it found it (issue #58): no shards of a
corpus too small for a sequence or a batch, no tokenizer trained on a preference or chat file
with a bad row; and each refusal points where the user can fix it (the file's line, the
tokenizer whose template the sandbox stopped)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tjx import data
from tjx.data.bpe import train_bpe
from tjx.data.chat.tasks import CHATML_SPECIALS, write_chatml_folder
from trainer.cli import main
from trainer.config.typed import read_config
from trainer.step import data_setup

SMALL = [
    "model.d_model=32",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.mlp.dim=64",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
    "train.checkpoint_every=0",
]


def _tree(folder: Path) -> list[str]:
    """Every path under ``folder`` with its size: what a refusal must leave as it was."""
    return sorted(f"{p.relative_to(folder)} {p.stat().st_size if p.is_file() else '-'}"
                  for p in folder.rglob("*"))  # fmt: skip


def _refused(tmp: Path, capsys: pytest.CaptureFixture[str], preset: str, *sets: str) -> str:
    """Run ``preset`` with ``sets`` on the cache ``tmp/cache``; assert it exits 2 in one line,
    writes no run directory and leaves the cache exactly as before; return the line."""
    cache = tmp / "cache"
    cache.mkdir(exist_ok=True)
    before = _tree(cache)
    argv = ["--config", preset, "--run-dir", str(tmp / "run")]
    for item in [*SMALL, f"data.cache_dir={cache}", *sets]:
        argv += ["--set", item]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert not (tmp / "run").exists()
    assert _tree(cache) == before, err  # no shards, tokenizer, staging folder or lock file
    return err[0]


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_a_100_byte_corpus_is_refused_and_leaves_the_cache_as_it_was(in_tmp, capsys, tokenizer):
    corpus = in_tmp / "small.txt"
    corpus.write_bytes(b"To be, or not to be, that is the question:\n" * 2 + b"x" * 14)
    assert corpus.stat().st_size == 100
    sets = [f"data.source={corpus}", f"data.tokenizer={tokenizer}", "data.tokenizer_vocab=300"]
    line = _refused(in_tmp, capsys, "tiny", *sets)
    assert "data.source: the " in line and "fewer than one sequence (data.seq_len + 1" in line


def test_a_corpus_too_small_for_one_batch_is_refused_and_leaves_the_cache_as_it_was(in_tmp, capsys):
    corpus = in_tmp / "small.txt"
    corpus.write_text("".join(f"line {i} of a corpus for one sequence, not a batch\n"
                              for i in range(6)))  # fmt: skip
    # ~290 byte tokens: a few windows of 17, both splits hold a sequence, 16 windows do not fit.
    line = _refused(in_tmp, capsys, "tiny", f"data.source={corpus}", "data.seq_len=16")
    assert "data.batch_size: the train split of" in line and "too small for one batch" in line


def _pairs(path: Path, rows: int, bad: int) -> None:
    """``rows`` preference rows, one a line; the row of 0-based index ``bad`` lacks
    'rejected'."""
    good = {"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}
    lines = [json.dumps({k: v for k, v in good.items() if i != bad or k != "rejected"})
             for i in range(rows)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def test_a_preference_row_without_a_field_names_its_line_and_trains_no_tokenizer(in_tmp, capsys):
    pairs = in_tmp / "pairs.jsonl"
    # Index 537 is line 538 and, with every tenth row held out, row 484 of the train split.
    _pairs(pairs, 600, bad=537)
    line = _refused(in_tmp, capsys, "dpo_tiny", f"data.source={pairs}")
    assert line.startswith("trainer: error: data.source: ") and "line 538: " in line, line
    assert str(pairs) in line and "missing ['rejected']" in line and "row 484" not in line


def test_a_refused_chat_file_names_its_line_and_leaves_the_cache_as_it_was(in_tmp, capsys):
    chat = in_tmp / "chat.jsonl"
    turn = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    rows = [{"messages": turn} for _ in range(40)]
    rows[29] = {"messages": turn[:1]}  # held out (every tenth row): train is made before it
    chat.write_text("\n\n".join(json.dumps(r) for r in rows) + "\n")  # a blank line between
    line = _refused(in_tmp, capsys, "sft_tiny", f"data.source={chat}")
    assert f"data.source: {chat}: line 59: the conversation has no assistant turn" in line, line


def test_a_template_the_sandbox_stops_names_the_tokenizer_and_leaves_the_cache(in_tmp, capsys):
    folder = in_tmp / "tok"
    texts = ["user assistant system What is 1 + 1? 2"] * 4
    write_chatml_folder(train_bpe(texts, 300, special_tokens=CHATML_SPECIALS), folder)
    (folder / "chat_template.jinja").write_text("{{ ''.__class__.__mro__ }}")
    chat = in_tmp / "chat.jsonl"
    turn = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    chat.write_text("".join(json.dumps({"messages": turn}) + "\n" for _ in range(20)))
    line = _refused(in_tmp, capsys, "sft_tiny", f"data.source={chat}", f"data.tokenizer={folder}")
    assert line.startswith("trainer: error: data.tokenizer: "), line
    assert (
        f"{folder / 'chat_template.jinja'}: the chat template tried an operation the sandbox"
        in line
    ), line


def test_rows_too_long_for_the_run_name_the_users_file_not_a_staging_folder(in_tmp, capsys):
    """#71: the rows are checked where they are staged (a hidden folder in the cache); the line
    names the file and split the user gave, never that folder."""
    chat = in_tmp / "chat.jsonl"
    turn = [{"role": "user", "content": "Hi there, how are you doing on this fine day?"},
            {"role": "assistant", "content": "Hello."}]  # fmt: skip
    chat.write_text("".join(json.dumps({"messages": turn}) + "\n" for _ in range(40)))
    line = _refused(in_tmp, capsys, "sft_tiny", f"data.source={chat}", "data.seq_len=4")
    assert line.startswith(f"trainer: error: data.seq_len: {chat}:train: all 36 chat row(s) "), line
    assert "staged" not in line and str(in_tmp / "cache") not in line, line


def test_rows_whose_text_is_in_another_field_name_it_and_are_read_with_data_text_field(
    in_tmp, capsys
):
    """The Stack's rows hold their text in ``content``: without ``data.text_field`` the run is
    refused in one line naming the setting and the row's string fields, the cache untouched;
    with it, its rows are read (every byte of their text, an EOS a document)."""
    rows = in_tmp / "code.jsonl"
    rng = np.random.default_rng()
    code = [f"def f{int(i)}(x):\n    return x * {int(i)}\n" for i in rng.integers(0, 999, 60)]
    rows.write_text("".join(json.dumps({"content": c, "repo": "a/b"}) + "\n" for c in code))
    line = _refused(in_tmp, capsys, "tiny", f"data.source={rows}", "data.tokenizer=bpe",
                    "data.tokenizer_vocab=300")  # fmt: skip
    assert line == (
        f"trainer: error: data.text_field: {rows}: line 1: no string field 'text' (its string "
        "fields: content, repo: name the one that holds the text)"
    )
    section = {"source": str(rows), "text_field": "content", "cache_dir": str(in_tmp / "cache")}
    bundle = data_setup.prepare(read_config({"data": {**section, "seq_len": 16}}))
    assert bundle.text_field == "content"
    assert data.load_index(bundle.train_dir).tokens + data.load_index(bundle.val_dir).tokens == (
        sum(len(c.encode()) + 1 for c in code)  # bytes, and an EOS a document
    )


def test_a_shard_changed_in_place_after_its_run_trained_is_refused_and_the_run_kept(in_tmp, capsys):
    """A shard of the cache rewritten to the same size after a run trained on it (tjx-data
    0.25's ``verified.json``): the ``--resume`` stops in one line that names the shard and the
    fix, before any step, and the run's folder stays as it was."""
    corpus = in_tmp / "corpus.txt"
    rng = np.random.default_rng()
    corpus.write_text(" ".join(rng.choice(["tea", "milk", "bread", "jam"], 3000)))
    cache, run = in_tmp / "cache", in_tmp / "run"
    argv = ["--config", "tiny", "--data", str(corpus), "--run-dir", str(run)]
    for item in [*SMALL[:-1], f"data.cache_dir={cache}", "train.steps=1",
                 "train.checkpoint_every=1"]:  # fmt: skip
        argv += ["--set", item]
    assert main(argv) == 0
    (shard,) = (p for p in cache.rglob("shard_00000.bin") if p.parent.name == "train")
    tokens = bytearray(shard.read_bytes())
    tokens[int(rng.integers(len(tokens) // 2)) * 2] ^= 0x01  # another token, the size unchanged
    shard.write_bytes(bytes(tokens))
    os.utime(shard, ns=(0, shard.stat().st_mtime_ns + 1_000_000_000))
    kept = _tree(run)
    capsys.readouterr()
    assert main([*argv, "--resume", "--set", "train.steps=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"trainer: error: data.source: {shard.parent}: shard_00000.bin "
                             "changed after the split was made"), err  # fmt: skip
    assert "delete the folder: a run makes it again from its source" in err[0]
    assert _tree(run) == kept
