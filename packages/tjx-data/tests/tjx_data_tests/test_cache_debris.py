"""A preparation that fails leaves nothing in the shared cache: no empty folder, no lock file."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tjx.data import ByteTokenizer, DataError, load_index, prepare_shards
from tjx.data.cache import Staging, atomic_prepare, staged
from tjx.data.run.prepare import prepare_run_data

# What a new user points the trainer at by mistake (issue #46): each is refused with one error.
BAD_FILES = {
    "empty.txt": b"",
    "binary.bin": bytes(range(256)) * 4,
    "binary.txt": bytes(range(256)) * 4,
    "latin1.txt": "café au lait, crème brûlée\n".encode("latin-1") * 40,
    "broken.jsonl": b'{"text": "a fine first row"}\n{"text": broken\n',
    "fake.parquet": b"these are not the bytes of a parquet file\n" * 10,
}


def _everything(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_data_fails_and_leaves_the_cache_as_it_was(tmp_path, name, tokenizer):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(DataError) as caught:
        prepare_run_data(str(path), tokenizer, seq_len=8, tokenizer_vocab=300, cache_dir=cache)
    assert caught.value.argument == "source" and name in str(caught.value)
    assert _everything(cache) == []  # no shards/<key>/, no .train.lock, no tokenizers/<key>/


def test_a_split_that_fails_takes_back_the_splits_this_call_made(tmp_path):
    root = tmp_path / "corpus"
    (root / "train").mkdir(parents=True)
    (root / "validation").mkdir()
    (root / "train" / "a.txt").write_text("a perfectly good training text\n" * 50)
    (root / "validation" / "v.txt").write_bytes("caf\u00e9\n".encode("latin-1"))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="not valid UTF-8"):
        prepare_shards(str(root), ByteTokenizer(), cache)
    assert _everything(cache) == []  # the train split was finished, and removed again
    # A split that was there before the failing call is not its to remove.
    before = prepare_shards(str(root), ByteTokenizer(), cache, splits=("train",))
    with pytest.raises(DataError, match="not valid UTF-8"):
        prepare_shards(str(root), ByteTokenizer(), cache)
    assert load_index(before.dirs["train"]).tokens == before.tokens["train"]
    assert _everything(before.root) == [
        "train", "train/documents.json", "train/documents.npy", "train/index.json",
        "train/shard_00000.bin", "train/verified.json",
    ]  # fmt: skip


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_a_corpus_too_short_for_a_sequence_publishes_nothing_and_keeps_what_was_there(
    tmp_path, tokenizer
):
    path = tmp_path / "short.txt"
    path.write_text("a short text\n" * 3)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="fewer than one sequence"):
        prepare_run_data(str(path), tokenizer, seq_len=1000, tokenizer_vocab=300, cache_dir=cache)
    assert _everything(cache) == []  # no shards, no BPE trained on it, no staging folder
    # Prepared before by a run that fits: a later refusal keeps it as it was, byte for byte.
    fits = prepare_run_data(str(path), tokenizer, seq_len=2, tokenizer_vocab=300, cache_dir=cache)
    before = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match="fewer than one sequence"):
        prepare_run_data(str(path), tokenizer, seq_len=1000, tokenizer_vocab=300, cache_dir=cache)
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == before
    assert fits.train_dir is not None and load_index(fits.train_dir).tokens > 3


def test_staged_entries_publish_once_and_keep_one_another_process_published(tmp_path):
    """Two preparations of one key: the first to publish wins, the other's copy is dropped
    (the same key holds the same content), and neither leaves a staging folder."""
    final = tmp_path / "cache" / "entry"
    first, second = Staging(), Staging()
    for stage, text in ((first, "first"), (second, "second")):
        where = stage.place(final)
        assert where != final and where.parent.parent == final.parent  # beside it: one rename
        where.mkdir()
        (where / "by").write_text(text)
    assert stage.where(final / "by") == where / "by" and first.pending
    first.publish()
    second.publish()
    assert (final / "by").read_text() == "first"
    assert _everything(tmp_path / "cache") == ["entry", "entry/by"]
    assert second.place(final) == final and not second.pending  # complete: read in place
    # Refused: what was staged goes, and the folders made for it.
    third = Staging()
    (third.place(tmp_path / "new" / "deep" / "entry")).mkdir()
    third.discard()
    assert not (tmp_path / "new").exists()


def test_publishing_swaps_out_an_interrupted_older_folder(tmp_path):
    final = tmp_path / "tok"
    final.mkdir()
    (final / "partial").write_text("an older tjx stopped here")
    with staged() as stage:
        where = stage.place(final, complete=lambda f: (f / "tokenizer.json").is_file())
        where.mkdir()
        (where / "tokenizer.json").write_text("{}")
    assert _everything(tmp_path) == ["tok", "tok/tokenizer.json"]


def test_a_waiter_behind_a_failed_build_never_builds_beside_a_newcomer(tmp_path):
    """The failing holder removes its lock file: a thread that waited on it must lock the new
    file, or it would build at the same time as one that came later and locked that file."""
    final = tmp_path / "entry"
    active: list[str] = []
    overlaps: list[list[str]] = []
    builds: list[str] = []

    def build(name: str, seconds: float, fail: bool):
        def run(staging: Path) -> None:
            builds.append(name)
            active.append(name)
            if len(active) > 1:
                overlaps.append(list(active))
            time.sleep(seconds)
            active.remove(name)
            if fail:
                raise RuntimeError("bad data")
            (staging / "by").write_text(name)

        return run

    def prepare(name: str, delay: float, seconds: float, fail: bool = False) -> None:
        time.sleep(delay)
        with contextlib.suppress(RuntimeError):
            atomic_prepare(final, build(name, seconds, fail))

    threads = [
        threading.Thread(target=prepare, args=("first", 0.0, 0.4, True)),
        threading.Thread(target=prepare, args=("waiter", 0.1, 0.6)),
        threading.Thread(target=prepare, args=("newcomer", 0.7, 0.1)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [] and builds[0] == "first" and len(builds) == 2, builds
    assert (final / "by").read_text() == builds[1]
    assert _everything(tmp_path) == ["entry", "entry/by"]  # no lock file, no staging folder


def test_published_shards_are_a_plain_encoding_named_by_their_place(tmp_path):
    """What a preparation publishes is what it was before staging: the byte shards are each
    document's UTF-8 bytes then EOS (uint16), and a BPE built aside is named in the shards'
    index by its place in the cache, not by its staging folder."""
    rng = np.random.default_rng()
    docs = ["".join(rng.choice(list("abcdé \n"), int(n))) for n in rng.integers(5, 60, 25)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    cache = tmp_path / "cache"
    run = prepare_run_data(str(path), "byte", seq_len=4, cache_dir=cache)
    for split, folder in (("train", run.train_dir), ("validation", run.val_dir)):
        held = [d for i, d in enumerate(docs) if (i % 10 == 9) == (split == "validation")]
        want = [t for d in held for t in [*d.encode("utf-8"), 256]]
        assert (folder / "shard_00000.bin").read_bytes() == np.asarray(want, "<u2").tobytes()
    bpe = prepare_run_data(str(path), "bpe", seq_len=4, tokenizer_vocab=280, cache_dir=cache)
    (saved,) = (cache / "tokenizers").glob("*/tokenizer.json")
    assert bpe.tokenizer is not None and bpe.tokenizer.name == str(saved)
    assert load_index(bpe.train_dir).tokenizer["name"] == str(saved)
    assert not list(cache.rglob(".*staged-*")) and not list(cache.rglob("*.lock"))
