import subprocess
import sys

import numpy as np
import pytest

from tjx.data import (
    ByteTokenizer,
    DataError,
    PackedLoader,
    dtype_for_vocab,
    load_index,
    load_source,
    pretokenize,
    train_bpe,
)
from tjx.data.pretokenize import encode_documents
from tjx_data_tests._helpers import child_env, random_docs


def expected_stream(docs, tok):
    out = []
    for ids in tok.encode_batch(docs):
        if ids:
            out += [*ids, tok.eos_id]
    return np.array(out)


def test_index_integrity_and_empty_documents(tmp_path):
    tok = ByteTokenizer()
    docs = random_docs(21, 12)
    docs[3] = ""  # empty documents are skipped and counted
    docs[7] = ""
    index = pretokenize(docs, tok, tmp_path, split="train", num_workers=1, progress=False,
                        source="unit", chunk_chars=100, shard_tokens=150)  # fmt: skip
    stream = expected_stream(docs, tok)
    assert (index.documents, index.empty_documents) == (10, 2)
    assert index.tokens == stream.size == sum(s["tokens"] for s in index.shards)
    assert len(index.shards) > 1  # small shard_tokens: several files
    assert index.bytes == sum(len(d.encode()) for d in docs)
    assert index.bytes_per_token == pytest.approx(index.bytes / index.tokens)
    assert index.dtype == "uint16" and index.source == "unit"
    assert index.tokenizer == {"name": "bytes", "fingerprint": tok.fingerprint,
                               "vocab_size": 257, "eos_id": 256}  # fmt: skip
    np.testing.assert_array_equal(index.read_all(), stream)
    again = load_index(tmp_path, "train")
    assert again == index and again.path == tmp_path / "train"
    assert load_index(tmp_path / "train") == index
    # beside the shards: where each document starts, and where it came from (tjx.data.documents),
    # and the shards' sizes and times as made (tjx.data.unchanged)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == sorted(
        ["index.json", "documents.npy", "documents.json", "verified.json"]
        + [s["file"] for s in index.shards]
    )


def test_idempotent_and_fingerprint_checks(tmp_path, text_corpus):
    root, _ = text_corpus
    docs = load_source(str(root))
    tok = ByteTokenizer()
    index = pretokenize(docs, tok, tmp_path, num_workers=1, progress=False)
    assert index.source == f"{root}:train"
    shard = tmp_path / "train" / index.shards[0]["file"]
    stamp = shard.stat().st_mtime_ns
    assert pretokenize(docs, tok, tmp_path, num_workers=1, progress=False) == index
    assert shard.stat().st_mtime_ns == stamp  # nothing rewritten
    other = train_bpe(list(docs), 280, show_progress=False)
    with pytest.raises(DataError, match="fingerprint"):
        pretokenize(docs, other, tmp_path, num_workers=1, progress=False)
    with pytest.raises(DataError, match="fingerprint"):
        PackedLoader(tmp_path, seq_len=4, batch_size=1, tokenizer=other)
    with pytest.raises(DataError, match="not 'elsewhere'"):
        pretokenize(docs, tok, tmp_path, num_workers=1, progress=False, source="elsewhere")
    rebuilt = pretokenize(docs, other, tmp_path, num_workers=1, progress=False, overwrite=True)
    assert rebuilt.fingerprint == other.fingerprint
    np.testing.assert_array_equal(rebuilt.read_all(), expected_stream(list(docs), other))


def test_interrupted_run_recovers(tmp_path):
    docs = random_docs(5, 30)
    tok = ByteTokenizer()

    def crashing():
        yield from docs[:20]
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the corpus

    with pytest.raises(KeyboardInterrupt):
        pretokenize(crashing(), tok, tmp_path, num_workers=1, progress=False, chunk_chars=50)
    assert not (tmp_path / "train").exists()
    with pytest.raises(DataError, match="no shard index"):
        load_index(tmp_path, "train")
    stale = tmp_path / ".train.tmp-killed"  # what a SIGKILL-ed run leaves
    stale.mkdir()
    (stale / "shard_00000.bin").write_bytes(b"\0" * 10)
    index = pretokenize(docs, tok, tmp_path, num_workers=1, progress=False)
    np.testing.assert_array_equal(index.read_all(), expected_stream(docs, tok))
    assert not stale.exists()


def test_damaged_shard_is_detected(tmp_path):
    index = pretokenize(random_docs(2, 5), ByteTokenizer(), tmp_path, num_workers=1,
                        progress=False)  # fmt: skip
    shard = tmp_path / "train" / index.shards[0]["file"]
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(DataError, match="damaged"):
        PackedLoader(tmp_path, seq_len=4, batch_size=1)
    shard.unlink()
    with pytest.raises(DataError, match="shard missing"):
        load_index(tmp_path, "train").validate()


def test_parallel_processes_match_single(tmp_path):
    docs = random_docs(9, 40)
    tok = train_bpe(docs, 290, show_progress=False)
    one = pretokenize(docs, tok, tmp_path / "one", num_workers=1, progress=False, chunk_chars=200)
    two = pretokenize(
        docs,
        tok,
        tmp_path / "two",
        num_workers=2,
        progress=True,
        chunk_chars=200,
        start_method="spawn",
    )  # fmt: skip  (fork: see the next test)
    np.testing.assert_array_equal(one.read_all(), two.read_all())
    assert (one.tokens, one.documents, one.bytes) == (two.tokens, two.documents, two.bytes)


class WideTokenizer(ByteTokenizer):
    """Byte ids shifted past 65,535: needs uint32."""

    name = "wide"

    @property
    def vocab_size(self):
        return 70_000

    @property
    def eos_id(self):
        return 69_999

    def encode_batch(self, texts):
        return [[i + 65_000 for i in t.encode()] for t in texts]


def test_uint32_when_vocab_is_large(tmp_path):
    assert dtype_for_vocab(65_536) == "uint16" and dtype_for_vocab(65_537) == "uint32"
    with pytest.raises(ValueError):
        dtype_for_vocab(0)
    docs = random_docs(4, 5)
    index = pretokenize(docs, WideTokenizer(), tmp_path, num_workers=1, progress=False)
    assert index.dtype == "uint32"
    stream = index.read_all()
    assert stream.max() == 69_999 and stream.min() >= 65_000
    assert (tmp_path / "train" / "shard_00000.bin").stat().st_size == 4 * index.tokens


def test_empty_dataset_and_bad_values(tmp_path):
    with pytest.raises(DataError, match="empty dataset.*3 empty"):
        pretokenize(["", "", ""], ByteTokenizer(), tmp_path, num_workers=1, progress=False)
    assert not (tmp_path / "train").exists()
    with pytest.raises(ValueError, match="num_workers"):
        pretokenize(["a"], ByteTokenizer(), tmp_path, num_workers=0)
    with pytest.raises(ValueError, match="chunk_chars"):
        pretokenize(["a"], ByteTokenizer(), tmp_path, chunk_chars=0)
    with pytest.raises(DataError, match="must be str"):
        pretokenize([b"bytes"], ByteTokenizer(), tmp_path, num_workers=1, progress=False)


def test_out_of_vocabulary_ids_are_refused():
    class Broken(ByteTokenizer):
        def encode_batch(self, texts):
            return [[300] for _ in texts]

    with pytest.raises(DataError, match="outside its vocabulary"):
        encode_documents(["x"], Broken(), "uint16")


FORKED = """
import sys
import numpy as np
import tjx.data as td
from tjx.data.pretokenize import _start_method
assert _start_method(None) == "fork"  # no jax in this interpreter
docs = [f"document {i} " * (i + 1) for i in range(12)]
tok = td.ByteTokenizer()
index = td.pretokenize(docs, tok, sys.argv[1], num_workers=2, chunk_chars=40, progress=False)
want = np.concatenate([list(d.encode()) + [256] for d in docs])
assert np.array_equal(index.read_all(), want)
print("ok", index.tokens)
"""


def test_parallel_fork_in_a_fresh_interpreter(tmp_path):
    # fork is only the default without jax; the test process may have jax loaded, so fork runs
    # in a fresh interpreter.
    proc = subprocess.run([sys.executable, "-c", FORKED, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env=child_env())  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")


UNGUARDED = """
import sys
import tjx.data as td
td.pretokenize(["some text"] * 8, td.ByteTokenizer(), sys.argv[1], num_workers=2,
               chunk_chars=5, progress=False, start_method="spawn")
print("done")
"""


def test_unguarded_script_with_spawn_fails_instead_of_hanging(tmp_path):
    script = tmp_path / "script.py"  # spawn re-imports a main *file* (not `python -c`)
    script.write_text(UNGUARDED, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env=child_env())  # fmt: skip
    assert proc.returncode != 0 and "if __name__ == '__main__'" in proc.stderr
    assert "worker process died" in proc.stderr
    assert not (tmp_path / "train").exists() and not list(tmp_path.glob(".train.tmp-*"))


def test_start_method_choice(monkeypatch):
    import importlib

    module = importlib.import_module("tjx.data.pretokenize")  # the module, not the function

    assert module._start_method("forkserver") == "forkserver"
    with pytest.raises(ValueError, match="start_method"):
        module._start_method("thread")
    monkeypatch.setitem(sys.modules, "jax", object())
    assert module._start_method(None) == "spawn"
    monkeypatch.delitem(sys.modules, "jax")
    assert module._start_method(None) == "fork"
