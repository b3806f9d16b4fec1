"""Preparation that scales: a token cap (its own cache folder, the source read no further), a
cap below one batch refused, a progress bar counting tokens, and ``python -m tjx.data`` preparing
ahead into the cache a run then reads without tokenizing again."""

from __future__ import annotations

import importlib
import json
import re

import numpy as np
import pytest
import zstandard

from tjx.data import ByteTokenizer, DataError, check_max_tokens, load_index, pretokenize
from tjx.data.__main__ import main
from tjx.data.run.prepare import prepare_run_data
from tjx_data_tests._helpers import random_docs

# The module (tjx.data.pretokenize the attribute is the function of the same name).
pretokenize_module = importlib.import_module("tjx.data.pretokenize")


def test_a_cap_keeps_the_first_tokens_and_reads_no_further(tmp_path):
    docs = random_docs(int(np.random.default_rng().integers(1000)), 60)
    full = pretokenize(docs, ByteTokenizer(), tmp_path / "full", num_workers=1, progress=False,
                       chunk_chars=200)  # fmt: skip
    cap = int(np.random.default_rng().integers(50, full.tokens // 2))
    read: list[int] = []

    def counted():
        for i, doc in enumerate(docs):
            read.append(i)
            yield doc

    capped = pretokenize(counted(), ByteTokenizer(), tmp_path / "cap", num_workers=1,
                         progress=False, chunk_chars=200, max_tokens=cap)  # fmt: skip
    assert capped.tokens == cap
    head = np.fromfile(tmp_path / "full" / "train" / full.shards[0]["file"], dtype=full.dtype)
    got = np.concatenate([np.fromfile(tmp_path / "cap" / "train" / s["file"], dtype=capped.dtype)
                          for s in capped.shards])  # fmt: skip
    np.testing.assert_array_equal(got, head[:cap])  # the reference: the uncapped stream's start
    assert len(read) < len(docs)  # the rest of the source was never read
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        pretokenize(docs, ByteTokenizer(), tmp_path / "x", max_tokens=0, progress=False)


def test_a_cap_below_one_batch_is_one_line():
    check_max_tokens(None, 128, 16)
    check_max_tokens(16 * 128 + 1, 128, 16)
    names = {"max_tokens": "data.max_tokens", "batch_size": "data.batch_size"}
    with pytest.raises(DataError, match=r"^data\.max_tokens: 2048 tokens are fewer than one batch "
                       r"\(data\.batch_size 16 × seq_len 128 \+ 1 = 2049\)") as err:  # fmt: skip
        check_max_tokens(2048, 128, 16, names)
    assert err.value.argument == "max_tokens" and "\n" not in str(err.value)


def test_the_progress_bar_counts_tokens(tmp_path, monkeypatch):
    updates: list[int] = []

    class Bar:
        def update(self, n: int) -> None:
            updates.append(n)

        def set_postfix(self, **kw: object) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(pretokenize_module, "_progress", lambda enabled, desc: Bar())
    index = pretokenize(random_docs(3, 20), ByteTokenizer(), tmp_path, num_workers=1,
                        chunk_chars=100)  # fmt: skip
    assert sum(updates) == index.tokens and len(updates) > 1  # tqdm's rate is then tokens/s


def test_prepare_ahead_then_a_run_tokenizes_nothing(tmp_path, text_corpus, monkeypatch, capsys):
    root, _ = text_corpus
    cache = tmp_path / "cache"
    assert main([str(root), "--cache-dir", str(cache), "--max-tokens", "300"]) == 0
    said = capsys.readouterr()
    assert "train: 300 tokens in" in said.out and "-max300" in said.out
    # The train folder's notes.csv is not read, and said so (its .hidden.txt is not data).
    assert said.err.splitlines() == [
        f"python -m tjx.data: left out 1 file(s) of other types: {root / 'train' / 'notes.csv'} "
        "(tjx reads .txt, .text, .md, .jsonl, .parquet files (.txt, .text, .md, .jsonl, .json "
        "ones also compressed: .gz, .bz2, .xz, .zst); convert them to one of these to read them)"
    ]

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(pretokenize_module, "_write", no_tokenizing)
    run = prepare_run_data(str(root), "byte", seq_len=8, cache_dir=cache, max_tokens=300)
    assert load_index(run.train_dir).tokens == 300
    assert main([str(root), "--max-tokens", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "python -m tjx.data: error: --max-tokens: must be >= 1, got 0"
    )
    monkeypatch.undo()
    assert main([str(tmp_path / "missing"), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m tjx.data: error: ") and err.count("\n") == 1


def test_prepare_ahead_publishes_no_bpe_when_a_split_is_refused(tmp_path, capsys):
    """A BPE trained on a good train split stays unpublished when the validation split is
    refused: the cache is left as it was (issue #58)."""
    (tmp_path / "train.txt").write_text("".join(f"{d}\n" for d in random_docs(5, 40)))
    (tmp_path / "validation.txt").write_bytes("caf\u00e9\n".encode("latin-1"))
    cache = tmp_path / "cache"
    source = str(tmp_path / "{split}.txt")
    argv = [source, "--tokenizer", "bpe", "--tokenizer-vocab", "300", "--cache-dir", str(cache)]
    assert main(argv) == 2
    assert "not valid UTF-8" in capsys.readouterr().err
    assert sorted(cache.rglob("*")) == []


def test_prepare_ahead_without_zstd_prepares_what_such_a_run_reads(tmp_path, capsys):
    """``--no-zstd`` (a run with ``data.zstd=false``) reads the folder's other files and names
    its ``.zst`` ones in the left-out line, worded as the flag; by default it reads them too."""
    root = tmp_path / "corpus"
    root.mkdir()
    docs = random_docs(11, 30)
    (root / "a.txt").write_text(docs[0], encoding="utf-8")
    rows = "".join(json.dumps({"text": d}) + "\n" for d in docs[1:]).encode()
    (root / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(rows))
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main([str(root), *cache, "--no-zstd"]) == 0
    said = capsys.readouterr()
    assert said.err.splitlines() == [
        f"python -m tjx.data: left out 1 file(s) of other types: {root / 'b.jsonl.zst'} (this "
        "run reads .txt, .text, .md, .jsonl, .parquet files, compressed too (.bz2, .gz, .xz) "
        "but, as --no-zstd, no .zst one)"
    ]
    assert main([str(root), *cache]) == 0
    read = capsys.readouterr()
    assert read.err == "" and _tokens(read.out) > _tokens(said.out) > 0  # the rows too
    assert main([str(root), *cache, "--no-compressed"]) == 0
    assert "as --no-compressed, no compressed one" in capsys.readouterr().err


def _tokens(out: str) -> int:
    """The tokens of both splits that ``python -m tjx.data`` says it prepared."""
    return sum(int(m) for m in re.findall(r"^\w+: ([\d,]+) tokens in", out.replace(",", ""), re.M))
