"""Where each document of a split lies in the token stream and where it came from (tjx.data's
documents module), and ``exclude``: documents whose tokens are never targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tjx.data import (
    ByteTokenizer,
    DataConfig,
    DataError,
    PackedLoader,
    check_data_config,
    exclude_ranges,
    load_documents,
    load_source,
    prepare_run,
    pretokenize,
    run_loader,
)
from tjx.data.documents import TABLE, Origin
from tjx.data.packing import IGNORE_INDEX
from tjx.data.prepare import held_out_located
from tjx_data_tests._helpers import random_docs


def _jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as out:
        for text in texts:
            out.write(json.dumps({"text": text}) + "\n")


def test_each_document_is_found_by_its_line_and_byte(tmp_path, text_corpus):
    """A folder's documents: a text file is line 1, a JSON Lines row its line and the byte its
    line starts at; every stream position maps to the document that holds it."""
    root, docs = text_corpus
    tok = ByteTokenizer()
    index = pretokenize(load_source(str(root)), tok, tmp_path / "out", num_workers=1,
                        progress=False, chunk_chars=7)  # fmt: skip
    documents = load_documents(tmp_path / "out", "train")
    assert documents.recorded and documents.count == index.documents == 5
    lengths = [len(d.encode()) + 1 for d in docs]  # bytes + EOS each (a.txt, b.txt, c.jsonl…)
    np.testing.assert_array_equal(documents.starts, np.cumsum([0, *lengths[:-1]]))
    jsonl = (root / "train" / "c.jsonl").read_bytes().split(b"\n")
    line_starts = np.cumsum([0] + [len(line) + 1 for line in jsonl])
    expected = [
        Origin(str((root / "train" / "a.txt").resolve()), 1, byte=0),
        Origin(str((root / "train" / "b.txt").resolve()), 1, byte=0),
        *(
            Origin(str((root / "train" / "c.jsonl").resolve()), n + 1, byte=int(line_starts[n]))
            for n in range(3)
        ),
    ]
    assert [documents.origin(d) for d in range(5)] == expected
    stream = index.read_all()
    for doc in range(5):
        start, stop = documents.span(doc)
        assert stream[stop - 1] == tok.eos_id and stop - start == lengths[doc]
        assert tok.decode(stream[start : stop - 1].tolist()) == docs[doc]
    positions = np.arange(index.tokens)
    owner = np.repeat(np.arange(5), lengths)
    np.testing.assert_array_equal(documents.document_of(positions), owner)
    assert documents.document_of(np.array([-1]))[0] == -1
    said = documents.describe(2)
    assert said.startswith("document 2 of ") and "c.jsonl line 1 (byte 0)" in said
    with pytest.raises(DataError, match=r"document 5 is not in .* \(documents 0\.\.4\)"):
        documents.span(5)


def test_shards_made_before_documents_were_recorded_still_say_where(tmp_path):
    """An earlier tjx-data's shards have no document table: the starts come from the stream's
    EOS tokens, and each document is named by its number (its origin unknown, said so)."""
    docs = random_docs(3, 9)
    pretokenize(docs, ByteTokenizer(), tmp_path, num_workers=1, progress=False)
    recorded = load_documents(tmp_path, "train")
    (tmp_path / "train" / TABLE).unlink()
    scanned = load_documents(tmp_path, "train")
    assert not scanned.recorded
    np.testing.assert_array_equal(scanned.starts, recorded.starts)
    assert scanned.origin(4) == Origin()
    assert "origin not recorded" in scanned.describe(4)


def test_a_damaged_table_is_refused(tmp_path):
    pretokenize(random_docs(2, 4), ByteTokenizer(), tmp_path, num_workers=1, progress=False)
    np.save(tmp_path / "train" / TABLE, np.zeros((3, 2), np.int64))
    with pytest.raises(DataError, match="does not fit the shards; prepare them again"):
        load_documents(tmp_path, "train")


def test_a_held_out_piece_starts_where_it_was_cut():
    text = "".join(f"line {i}\n" for i in range(20))
    origin = Origin("/x/notes.txt", 1, byte=0)
    ((train, kept),) = held_out_located([(text, origin)], "train")
    ((rest, where),) = held_out_located([(text, origin)], "validation")
    assert train + rest == text and kept == origin
    assert where == Origin("/x/notes.txt", 1 + train.count("\n"), byte=len(train.encode()))
    assert text.splitlines()[where.line - 1] == rest.splitlines()[0]


def test_excluded_documents_are_never_targets_and_the_batches_stay_the_same(tmp_path):
    """``exclude``: the tokens of the excluded documents are no targets, every other value of
    every batch as without it, and the loader's position is the same (a resume goes on)."""
    docs = random_docs(5, 40)
    index = pretokenize(docs, ByteTokenizer(), tmp_path, num_workers=1, progress=False)
    documents = load_documents(tmp_path, "train")
    ranges = exclude_ranges(documents, [7, 3, 7])
    assert ranges.tolist() == [list(documents.span(3)), list(documents.span(7))]
    plain = PackedLoader(tmp_path, seq_len=16, batch_size=4, seed=1, prefetch=0)
    cut = PackedLoader(tmp_path, seq_len=16, batch_size=4, seed=1, prefetch=0, exclude=ranges)
    seen = 0
    for _ in range(plain.steps_per_epoch):
        epoch, step = plain.position
        where = plain.target_positions(epoch, step)
        a, b = next(plain), next(cut)
        owner = documents.document_of(where)
        gone = np.isin(owner, [3, 7])
        seen += int(gone.sum())
        assert (b["targets"][gone] == IGNORE_INDEX).all()
        np.testing.assert_array_equal(b["targets"][~gone], a["targets"][~gone])
        for key in ("inputs", "segment_ids", "positions"):
            np.testing.assert_array_equal(a[key], b[key])
        # each target is the stream's token at its position
        stream = index.read_all()
        real = where >= 0
        np.testing.assert_array_equal(a["targets"][real], stream[where[real]])
    assert seen > 0 and plain.state_dict() == cut.state_dict()


def test_the_run_config_excludes_by_number_and_names_a_wrong_one(tmp_path, monkeypatch):
    monkeypatch.setenv("TJX_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "notes.jsonl"
    _jsonl(corpus, random_docs(6, 30))
    cfg = DataConfig(source=str(corpus), seq_len=8, batch_size=2, exclude=[1])
    run = prepare_run(cfg)
    loader = run_loader(run, cfg, seed=0)
    assert loader.exclude is not None and loader.exclude.shape == (1, 2)
    wrong = DataConfig(source=str(corpus), seq_len=8, batch_size=2, exclude=[10**6])
    with pytest.raises(DataError, match=r"^data\.exclude: document 1000000 is not in") as err:
        run_loader(run, wrong, seed=0, names={"exclude": "data.exclude"})
    assert err.value.argument == "exclude"
    mixture = DataConfig(sources=[{"source": str(corpus)}], exclude=[1])
    with pytest.raises(DataError, match="data.exclude: documents are excluded from one"):
        check_data_config(mixture, "lm")
