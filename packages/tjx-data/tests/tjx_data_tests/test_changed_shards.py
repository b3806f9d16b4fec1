"""A split whose files were changed after it was made (same sizes) is refused when it is opened;
a copy of the same bytes with other times, or a split made before ``verified.json``, is read once
and recorded; a folder that cannot keep the record is read at each open, never refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tjx.data import ByteTokenizer, ChatLoader, DataError, PackedLoader, pretokenize
from tjx.data import shards as shards_module
from tjx.data.chat.store import load_sequences, write_sequences
from tjx.data.shards import VERIFIED, load_index, record_made
from tjx_data_tests._helpers import random_docs
from tjx_data_tests.chat.test_loader import _encoder
from tjx_data_tests.chat.test_template import random_conversation

#: Small chunks and shards: a split of several shards, so a change can be in any one of them.
SMALL = {"num_workers": 1, "progress": False, "chunk_chars": 200, "shard_tokens": 300}


def _split(root: Path) -> Path:
    seed = int(np.random.default_rng().integers(1 << 30))
    pretokenize(random_docs(seed, 40, max_words=12), ByteTokenizer(), root, **SMALL)
    return root / "train"


def _rewrite_in_place(file: Path) -> None:
    """Another byte at a random place, the size unchanged, the time moved (as a write does)."""
    data = bytearray(file.read_bytes())
    at = int(np.random.default_rng().integers(len(data)))
    data[at] ^= 0x01
    times = file.stat()
    file.write_bytes(bytes(data))
    os.utime(file, ns=(times.st_atime_ns, times.st_mtime_ns + 1_000_000_000))


def _first_batch(folder: Path) -> np.ndarray:
    loader = PackedLoader(folder, seq_len=8, batch_size=2, seed=1, prefetch=0)
    batch = np.asarray(next(loader)["inputs"])
    loader.close()
    return batch


def test_a_shard_rewritten_to_the_same_size_is_refused_and_named(tmp_path):
    split = _split(tmp_path)
    index = load_index(split)
    assert len(index.shards) > 2
    record = (split / VERIFIED).read_bytes()
    name = index.shards[1]["file"]
    _rewrite_in_place(split / name)
    with pytest.raises(DataError) as err:
        PackedLoader(tmp_path, seq_len=8, batch_size=2, prefetch=0)
    message = str(err.value)
    assert message.startswith(f"{split}: {name} changed after the split was made")
    assert f"the index says {index.digest[:12]}..." in message
    assert message.endswith("or put the original files back")
    assert "\n" not in message
    # The record is left as it was: the split stays refused until it is made again.
    assert (split / VERIFIED).read_bytes() == record
    with pytest.raises(DataError, match="changed after the split was made"):
        load_index(split).validate()


def test_a_copy_with_other_times_is_read_once_and_goes_on(tmp_path, monkeypatch):
    split = _split(tmp_path / "a")
    want = _first_batch(tmp_path / "a")
    copy = tmp_path / "b" / "train"
    shutil.copytree(split, copy, copy_function=shutil.copyfile)  # the times are not copied
    for file in copy.glob("shard_*.bin"):
        os.utime(file, ns=(0, file.stat().st_mtime_ns + 5_000_000_000))
    np.testing.assert_array_equal(_first_batch(tmp_path / "b"), want)
    record = json.loads((copy / VERIFIED).read_text())
    assert record["digest"] == load_index(copy).digest
    assert record["files"]["shard_00000.bin"][1] == (copy / "shard_00000.bin").stat().st_mtime_ns

    # Recorded: the next open reads no shard again.
    def no_reading(*_args: object) -> None:
        raise AssertionError("the shards were read again")

    monkeypatch.setattr("tjx.data.shards._file_blocks", no_reading)
    np.testing.assert_array_equal(_first_batch(tmp_path / "b"), want)


@pytest.mark.parametrize("record", ["missing", "not json", "another digest"])
def test_a_split_without_a_record_it_can_read_is_checked_then_recorded(tmp_path, record):
    split = _split(tmp_path)
    digest = load_index(split).digest
    if record == "missing":
        (split / VERIFIED).unlink()
    elif record == "not json":
        (split / VERIFIED).write_text("{")
    else:
        data = json.loads((split / VERIFIED).read_text())
        (split / VERIFIED).write_text(json.dumps(data | {"digest": "0" * 64}))
    load_index(split).validate()
    assert json.loads((split / VERIFIED).read_text())["digest"] == digest
    # Made before tjx-data 0.25 and changed since: refused, though no file's time can be named.
    (split / VERIFIED).unlink()
    _rewrite_in_place(split / "shard_00000.bin")
    with pytest.raises(DataError, match=r"train: its files changed after the split was made"):
        load_index(split).validate()


def test_a_split_made_before_the_digest_is_not_checked(tmp_path):
    split = _split(tmp_path)
    data = json.loads((split / "index.json").read_text())
    del data["digest"]
    (split / "index.json").write_text(json.dumps(data))
    _rewrite_in_place(split / "shard_00000.bin")
    load_index(split).validate()  # nothing to compare with, as before tjx-data 0.21


def test_a_folder_that_cannot_keep_the_record_is_read_at_each_open(tmp_path, monkeypatch):
    split = _split(tmp_path)
    (split / VERIFIED).unlink()
    files = load_index(split).shards

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(shards_module.tempfile, "mkstemp", refuse)
    for _ in range(2):
        load_index(split).validate()
        assert not (split / VERIFIED).exists()
    monkeypatch.undo()
    monkeypatch.setattr(shards_module.os, "replace", refuse)
    record_made(split, [s["file"] for s in files], "ab" * 32)
    assert sorted(p.name for p in split.iterdir() if p.name.startswith(".")) == []


def test_a_large_split_shows_its_check(tmp_path, monkeypatch, capsys):
    split = _split(tmp_path)
    (split / VERIFIED).unlink()
    monkeypatch.setattr(shards_module, "SHOW_PROGRESS_BYTES", 1)
    load_index(split).validate()
    assert "checking train against its digest" in capsys.readouterr().err


def test_a_chat_split_changed_in_place_is_refused_and_named(chat_folder, tmp_path):
    folder = tmp_path / "chat"
    rng = np.random.default_rng()
    rows = [{"messages": random_conversation(rng)} for _ in range(20)]
    write_sequences(rows, _encoder(chat_folder), folder, kind="chat", split="train", source="t")
    # Its digest recomputed from the files (as a split made before verified.json is).
    (folder / VERIFIED).unlink()
    load_sequences(folder).open()
    assert (folder / VERIFIED).is_file()
    _rewrite_in_place(folder / "mask.bin")
    with pytest.raises(DataError) as err:
        ChatLoader(folder, seq_len=32, batch_size=2, seed=3)
    message = str(err.value)
    assert message.startswith(f"{folder}: mask.bin changed after the split was made")
    assert "prepare it again (delete the folder: a run makes it again from its rows)" in message
