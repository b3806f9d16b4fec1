"""prepare_shards / bpe_tokenizer: the shard cache's key, layout and held-out split."""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np
import pytest

from tjx.data import (
    ByteTokenizer,
    DataError,
    PackedLoader,
    bpe_tokenizer,
    load_index,
    prepare_shards,
    pretokenize,
)
from tjx.data import prepare as prep
from tjx.data.prepare import held_out, needs_held_out, shard_key, slug, split_documents
from tjx_data_tests._helpers import random_docs


def test_held_out_split():
    docs = [f"doc {i}" for i in range(20)]
    train, val = held_out(docs, "train"), held_out(docs, "validation")
    assert val == ["doc 9", "doc 19"] and len(train) == 18
    one = ["line\n" * 50]
    t, v = held_out(one, "train"), held_out(one, "validation")
    assert t[0] + v[0] == one[0] and 0 < len(v[0]) < len(t[0])
    assert v[0] == "line\n" * 5  # cut after a line break, not inside a line


def test_slug_is_stable_and_safe():
    assert slug("./a b/c.txt") == slug("./a b/c.txt")
    assert "/" not in slug("/x/y") and slug("a") != slug("b")
    assert slug("x/" * 40 + "a") != slug("y/" * 40 + "a")  # same readable tail, other hash


def test_shard_key_changes_when_a_local_file_changes(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("first version\n")
    before = shard_key(str(corpus))
    assert shard_key(str(corpus)) == before  # stable while nothing changes
    (corpus / "a.txt").write_text("second version, longer\n")
    edited = shard_key(str(corpus))
    assert edited != before  # stale shards are never reused for an edited corpus
    (corpus / "b.txt").write_text("another document\n")
    assert shard_key(str(corpus)) not in (before, edited)  # nor for an added file
    assert shard_key("shakespeare") == slug("shakespeare")  # built-ins: keyed by name
    assert shard_key("owner/name") == slug("owner/name")  # hub names too


def test_shard_key_sees_a_same_size_edit(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("aaaa")
    before = shard_key(str(path))
    path.write_text("bbbb")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # coarse clocks
    assert shard_key(str(path)) != before


def test_which_sources_are_cut_here(tmp_path, text_corpus):
    root, _ = text_corpus
    (tmp_path / "one.txt").write_text("x")
    assert needs_held_out(str(tmp_path / "one.txt"))
    assert not needs_held_out(str(root))  # has train/ and validation/
    assert not needs_held_out("shakespeare") and not needs_held_out("owner/name")
    with pytest.raises(DataError, match="no such file"):
        needs_held_out(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="no split 'test'"):
        split_documents(str(tmp_path / "one.txt"), "test")


def test_a_single_file_is_split_and_cached_under_its_key(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("".join(f"line {i} of the notes\n" for i in range(60)))
    cache, tok = tmp_path / "cache", ByteTokenizer()
    shards = prepare_shards(str(text), tok, cache)
    assert shards.held_out and set(shards.indexes) == {"train", "validation"}
    assert shards.key == f"{shard_key(str(text))}-{tok.fingerprint[:12]}"
    assert shards.root == cache / "shards" / shards.key
    assert shards.dirs == {s: shards.root / s for s in ("train", "validation")}
    whole = text.read_text()
    train, val = held_out([whole], "train")[0], held_out([whole], "validation")[0]
    assert shards.tokens == {"train": len(train) + 1, "validation": len(val) + 1}  # + EOS
    stream = load_index(shards.dirs["validation"]).read_all()
    assert bytes(stream[:-1].astype(np.uint8)).decode() == val
    assert shards.bytes_per_token["validation"] == pytest.approx(len(val) / (len(val) + 1))
    # The evaluator asks for validation only and finds the trainer's folder.
    again = prepare_shards(str(text), tok, cache, splits=("validation",))
    assert again.dirs == {"validation": shards.dirs["validation"]}
    assert PackedLoader(shards.dirs["train"], seq_len=8, batch_size=2).steps_per_epoch > 0


def test_an_edited_file_is_tokenized_again(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("old text\n" * 30)
    cache, tok = tmp_path / "cache", ByteTokenizer()
    old = prepare_shards(str(text), tok, cache, splits=("validation",))
    text.write_text("new, longer text\n" * 30)
    new = prepare_shards(str(text), tok, cache, splits=("validation",))
    assert new.root != old.root
    stream = load_index(new.dirs["validation"]).read_all()
    assert bytes(stream[:-1].astype(np.uint8)).decode() == "new, longer text\n" * 3


def test_cached_splits_are_not_read_again(tmp_path, text_corpus, monkeypatch):
    root, docs = text_corpus
    cache, tok = tmp_path / "cache", ByteTokenizer()
    first = prepare_shards(str(root), tok, cache)
    assert not first.held_out and first.indexes["train"].documents == len(docs)

    def unreadable(*args, **kwargs):
        raise AssertionError("a cached split was read again")

    monkeypatch.setattr(prep, "load_source", unreadable)
    assert prepare_shards(str(root), tok, cache).tokens == first.tokens


def test_shards_of_the_old_trainer_layout_are_found_offline(tmp_path, monkeypatch):
    """Caches written before tjx.data owned the key (trainer/step/data_setup.py) are reused: for a
    hub name the folder was <slug>-<fingerprint[:12]>; reused here without opening the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source, cache, tok = "owner/some-data", tmp_path / "cache", ByteTokenizer()
    old_slug = re.sub(r"[^A-Za-z0-9]+", "-", source).strip("-")[-40:]
    old_slug += "-" + hashlib.sha256(source.encode()).hexdigest()[:8]
    folder = cache / "shards" / f"{old_slug}-{tok.fingerprint[:12]}"
    docs = random_docs(3, 5)
    pretokenize(docs, tok, folder, split="validation", num_workers=1, progress=False,
                source=f"{source}:validation")  # fmt: skip
    shards = prepare_shards(source, tok, cache, splits=("validation",))
    assert shards.root == folder and shards.indexes["validation"].documents == 5
    with pytest.raises(DataError, match="owner/some-data"):  # not cached: the hub is needed
        prepare_shards(source, tok, cache, splits=("train",))


def test_empty_and_missing_sources_fail_clearly(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty dataset"):
        prepare_shards(str(tmp_path / "empty.txt"), ByteTokenizer(), tmp_path / "c")
    with pytest.raises(DataError, match="no such file"):
        prepare_shards(str(tmp_path / "nope.txt"), ByteTokenizer(), tmp_path / "c")
    with pytest.raises(ValueError, match="at least one split"):
        prepare_shards(str(tmp_path / "empty.txt"), ByteTokenizer(), tmp_path / "c", splits=())


def test_bpe_is_trained_once_on_the_train_part(tmp_path, monkeypatch):
    # jsonl: one row is one document (a whole .txt file is one), 30 documents in all.
    rows = [f'{{"text": "common words here {i}"}}' for i in range(9)] + ['{"text": "zqzqzq"}']
    text = tmp_path / "corpus.jsonl"
    text.write_text("\n".join(rows * 3) + "\n")
    cache = tmp_path / "cache"
    tok = bpe_tokenizer(str(text), 300, cache)
    saved = cache / "tokenizers" / f"{slug(str(text))}-bpe300" / "tokenizer.json"
    assert saved.is_file() and tok.fingerprint
    # Every 10th document (the "zqzqzq" rows) is held out, so BPE never merged its letters.
    assert len(tok.encode_batch(["zqzqzq"])[0]) == 6
    assert len(tok.encode_batch(["common words here"])[0]) < 6

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(prep, "train_bpe", no_training)
    assert bpe_tokenizer(str(text), 300, cache).fingerprint == tok.fingerprint
