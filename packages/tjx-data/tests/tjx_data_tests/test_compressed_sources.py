"""Compressed local sources: a folder's ``.jsonl.gz``, ``.json.gz`` (C4's and Dolma's JSON
Lines), ``.txt.bz2``, ``.md.xz``, ``.jsonl.zst`` (The Pile's, SlimPajama's; one frame or several)
are read as their plain copies are; ``compressed=False`` reads none (as tjx-data before 0.23),
the compressions but ``.zst`` what 0.23 read; a file beside its compressed copy, or a file that
does not decompress (a zstd file cut between frames too), is one line naming it and the fix."""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import lzma
from pathlib import Path

import numpy as np
import pytest
import zstandard

from tjx.data import (
    ByteTokenizer,
    DataError,
    compressed_files,
    left_out_note,
    load_rows,
    load_source,
    prepare_shards,
)
from tjx.data.sources import is_local_source
from tjx.data.sources.local import compressions, file_type, left_out_files, resolve_files
from tjx_data_tests._helpers import random_docs

PACK = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": zstandard.ZstdCompressor().compress,
}
#: What tjx-data 0.23 read: every compression but zstd.
BEFORE_ZSTD = {".gz", ".bz2", ".xz"}


def _frames(raw: bytes, parts: int) -> bytes:
    """``raw`` as ``parts`` zstd frames one after the other (as pzstd and zstd -T write)."""
    cut = [len(raw) * i // parts for i in range(parts + 1)]
    return b"".join(PACK[".zst"](raw[a:b]) for a, b in itertools.pairwise(cut))


def _jsonl(docs: list[str]) -> bytes:
    return "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()


def _corpus(root: Path, seed: int, *, packed: bool) -> list[str]:
    """The same five files in ``root``, plain or each compressed its own way; the documents a
    reader yields, in the files' sorted order (both namings sort alike)."""
    docs = random_docs(seed, 16)
    files = {
        "a.jsonl": (".gz", _jsonl(docs[:4])),
        "b.json": (".gz", _jsonl(docs[4:8])),  # read as JSON Lines only compressed
        "c.txt": (".bz2", docs[8].encode()),
        "d.md": (".xz", docs[9].encode()),
        "e.jsonl": (".xz", _jsonl(docs[10:12])),
        "f.jsonl": (".zst", _jsonl(docs[12:])),
    }
    root.mkdir(parents=True)
    for name, (suffix, raw) in files.items():
        if packed:
            (root / (name + suffix)).write_bytes(PACK[suffix](raw))
        elif name != "b.json":  # a plain .json is not read: its rows go in a .jsonl
            (root / name).write_bytes(raw)
    if not packed:
        (root / "b.jsonl").write_bytes(_jsonl(docs[4:8]))
    return docs


def test_compressed_files_are_read_as_their_plain_copies(tmp_path):
    docs = _corpus(tmp_path / "packed", seed=1, packed=True)
    _corpus(tmp_path / "plain", seed=1, packed=False)
    packed = load_source(str(tmp_path / "packed"))
    assert list(packed) == docs == list(load_source(str(tmp_path / "plain")))
    # A JSON Lines row's origin is its line and its byte offset in the decompressed text.
    origins = [o for _, o in packed.located()]
    assert origins[1].file == str((tmp_path / "packed" / "a.jsonl.gz").resolve())
    assert (origins[1].line, origins[1].byte) == (2, len(_jsonl(docs[:1])))
    # Globs and single files read them too; is_local_source knows a compressed path's name.
    assert list(load_source(str(tmp_path / "packed" / "*.jsonl.gz"))) == docs[:4]
    assert list(load_source(str(tmp_path / "packed" / "c.txt.bz2"))) == [docs[8]]
    assert is_local_source("not-there-yet.jsonl.gz") and not is_local_source("owner/name")


def test_the_same_text_compressed_makes_the_same_shards(tmp_path):
    _corpus(tmp_path / "packed", seed=2, packed=True)
    _corpus(tmp_path / "plain", seed=2, packed=False)
    made = [
        prepare_shards(str(tmp_path / name), ByteTokenizer(), tmp_path / "cache")
        for name in ("packed", "plain")
    ]
    for split in ("train", "validation"):
        packed, plain = (m.indexes[split] for m in made)
        assert packed.tokens == plain.tokens and packed.digest == plain.digest is not None


def test_compressed_false_reads_none_of_them_as_before(tmp_path):
    """tjx-data 0.22 read no compressed file: ``compressed=False`` keeps what such a run read
    (its shards, its token stream) and names the files it leaves out."""
    root = tmp_path / "mixed"
    docs = _corpus(root, seed=3, packed=True)
    (root / "z.txt").write_text("plain one", encoding="utf-8")
    assert list(load_source(str(root), compressed=False)) == ["plain one"]
    assert list(load_source(str(root))) == [*docs, "plain one"]
    packed = sorted(p for p in root.iterdir() if p.name != "z.txt")
    assert resolve_files(str(root), "train", compressed=False) == [root / "z.txt"]
    assert left_out_files(str(root), "train", compressed=False) == packed
    assert left_out_files(str(root), "train") == []
    assert compressed_files([str(root), "shakespeare", str(tmp_path / "nowhere")]) == packed
    assert compressed_files([str(root / "z.txt")]) == []
    note = left_out_note([str(root)], compressed=False, names={"compressed": "data.compressed"})
    assert note is not None and note.startswith(f"left out 6 file(s) of other types: {packed[0]}")
    assert note.endswith(
        "(this run reads .txt, .text, .md, .jsonl, .parquet files and, as "
        "data.compressed=false, no compressed one)"
    )
    with pytest.raises(
        DataError, match=r"matched no \.txt, \.text, \.md, \.jsonl, \.parquet files$"
    ):
        load_source(str(root / "*.gz"), compressed=False)
    with pytest.raises(
        DataError, match=r"matched no .* files \(.* also compressed: .gz, .bz2, .xz, .zst\)$"
    ):
        load_source(str(root / "*.csv"))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("rows.jsonl.gz", ".jsonl"),
        ("c4-train.00000-of-01024.json.gz", ".jsonl"),
        ("notes.text.xz", ".text"),
        ("rows.json", None),  # metadata more often than rows: not read plain
        ("a.parquet.gz", None),  # Parquet compresses its own columns
        ("rows.jsonl.zst", ".jsonl"),
        ("data.gz", None),
    ],
)
def test_file_type_reads_the_suffix_before_a_compression(name, kind):
    assert file_type(Path(name)) == kind
    plain = Path(name).suffix not in PACK  # compressed=False reads no compressed file
    assert file_type(Path(name), compressed=False) == (kind if plain else None)


def test_a_file_beside_its_compressed_copy_is_refused_not_read_twice(tmp_path):
    rows = _jsonl(random_docs(4, 3))
    (tmp_path / "a.jsonl").write_bytes(rows)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(rows))
    message = (
        f"{tmp_path}: {tmp_path / 'a.jsonl'} and its compressed copy a.jsonl.gz would be read "
        "both (the same data twice); remove or move one of them"
    )
    with pytest.raises(DataError) as err:
        load_source(str(tmp_path))
    assert str(err.value) == message
    assert list(load_source(str(tmp_path), compressed=False)) == random_docs(4, 3)


@pytest.mark.parametrize("damage", ["cut", "not_gzip"])
def test_a_file_that_does_not_decompress_is_one_error_naming_it(tmp_path, damage):
    rows = _jsonl(random_docs(5, 200))
    packed = gzip.compress(rows)
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(packed[: len(packed) // 2] if damage == "cut" else rows)
    with pytest.raises(DataError) as err:
        list(load_source(str(tmp_path)))
    message = str(err.value)
    assert message.startswith(f"{path}: does not decompress as .gz (")
    assert message.endswith(
        "); replace it with a complete copy (gzip -t, bzip2 -t, xz -t or zstd -t checks one)"
    )
    assert "\n" not in message
    text = tmp_path / "notes.txt.xz"
    path.unlink()
    text.write_bytes(lzma.compress(b"x" * 1000)[:-7])
    with pytest.raises(DataError, match=r"notes\.txt\.xz: does not decompress as \.xz"):
        list(load_source(str(text)))


def test_a_json_array_is_said_to_be_no_json_lines(tmp_path):
    path = tmp_path / "rows.json.gz"
    path.write_bytes(gzip.compress(json.dumps([{"text": "a"}, {"text": "b"}], indent=1).encode()))
    with pytest.raises(DataError, match=r"line 1: invalid JSON \(.*\) \(a JSON array, not JSON "
                       r"Lines: write one object per line\)"):  # fmt: skip
        list(load_source(str(path)))


def test_chat_rows_are_read_compressed_too(tmp_path):
    rng = np.random.default_rng(6)
    rows = [
        {"messages": [{"role": "user", "content": f"q{int(i)}"},
                      {"role": "assistant", "content": f"a{int(i)}"}]}  # fmt: skip
        for i in rng.integers(0, 1000, size=5)
    ]
    raw = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (tmp_path / "chat.jsonl.gz").write_bytes(gzip.compress(raw))
    located = list(load_rows(str(tmp_path)).located())
    assert [row for _, row in located] == rows
    assert located[2][0] == f"{tmp_path / 'chat.jsonl.gz'}: line 3"
    with pytest.raises(DataError, match="matched no"):
        load_rows(str(tmp_path), compressed=False)


def test_zstd_false_reads_what_tjx_data_0_23_read(tmp_path):
    """0.23 read every compression but zstd: a run started then goes on without its folders'
    ``.zst`` files (the trainer's ``data.zstd=false``), which are named, not read."""
    root = tmp_path / "mixed"
    docs = _corpus(root, seed=7, packed=True)
    zst = [root / "f.jsonl.zst"]
    assert list(load_source(str(root), compressed=BEFORE_ZSTD)) == docs[:12]
    assert left_out_files(str(root), "train", compressed=BEFORE_ZSTD) == zst
    assert compressed_files([str(root)], among={".zst"}) == zst
    note = left_out_note([str(root)], compressed=BEFORE_ZSTD, names={"zstd": "data.zstd"})
    assert note == (
        f"left out 1 file(s) of other types: {zst[0]} (this run reads .txt, .text, .md, .jsonl, "
        ".parquet files, compressed too (.bz2, .gz, .xz) but, as data.zstd=false, no .zst one)"
    )
    assert compressions(True) - compressions(BEFORE_ZSTD) == {".zst"}
    with pytest.raises(DataError, match=r"files \(also compressed: \.bz2, \.gz, \.xz\)$"):
        load_source(str(root / "*.zst"), compressed=BEFORE_ZSTD)


def test_a_zstd_file_of_several_frames_is_read_whole(tmp_path):
    docs = random_docs(8, 300)
    raw = _jsonl(docs)
    (tmp_path / "rows.jsonl.zst").write_bytes(_frames(raw, 5))
    assert list(load_source(str(tmp_path))) == docs
    (tmp_path / "rows.jsonl.zst").write_bytes(_frames(raw, 1))
    assert list(load_source(str(tmp_path))) == docs


@pytest.mark.parametrize("damage", ["cut_in_a_frame", "cut_in_the_last_of_five", "not_zstd"])
def test_a_zstd_file_that_does_not_decompress_is_one_error_naming_it(tmp_path, damage):
    """zstandard's own reader returns the frames before a cut without a word: a corpus cut
    short in silence. tjx's says so."""
    raw = _jsonl(random_docs(9, 200))
    packed = {
        "cut_in_a_frame": _frames(raw, 1)[:-20],
        "cut_in_the_last_of_five": _frames(raw, 5)[:-20],
        "not_zstd": raw,
    }[damage]
    path = tmp_path / "rows.jsonl.zst"
    path.write_bytes(packed)
    with pytest.raises(DataError) as err:
        list(load_source(str(tmp_path)))
    message = str(err.value)
    assert message.startswith(f"{path}: does not decompress as .zst (")
    assert message.endswith("zstd -t checks one)") and "\n" not in message
