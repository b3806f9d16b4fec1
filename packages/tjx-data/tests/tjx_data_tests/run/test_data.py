"""RunData: a run's tokenizer, checked shards, loaders, validation batches and data.json."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from tjx.data import (
    ByteTokenizer,
    DataError,
    ImageLoader,
    PackedLoader,
    RunData,
    bpe_tokenizer,
    load_digits,
    load_index,
    load_tokenizer,
    prepare_image_run_data,
    prepare_run_data,
    prepare_shards,
    restore_loader_state,
    run_tokenizer,
    train_bpe,
    validation_batches,
)
from tjx_data_tests._helpers import random_docs

KEYS = {"source": "data.source", "seq_len": "data.seq_len", "batch_size": "data.batch_size",
        "vocab_size": "model.vocab_size", "image_size": "model.image_size",
        "tokenizer": "data.tokenizer"}  # fmt: skip


def _corpus(path, seed, count=60):
    """A local .jsonl of ``count`` fresh random documents (no validation split of its own)."""
    docs = random_docs(seed, count)
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    return _corpus(tmp_path / "corpus.jsonl", int(np.random.default_rng().integers(1 << 30)))


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_prepare_uses_the_shard_cache_and_checks_nothing_else(corpus, tmp_path):
    cache = tmp_path / "cache"
    run = prepare_run_data(corpus, "byte", seq_len=8, cache_dir=cache, vocab_size=300)
    shards = prepare_shards(corpus, ByteTokenizer(), cache)  # the evaluator's --data finds these
    assert (run.train_dir, run.val_dir) == (shards.dirs["train"], shards.dirs["validation"])
    assert run.bytes_per_token == shards.bytes_per_token["validation"] and shards.held_out
    assert (run.vocab_size, run.seq_len, run.cache_dir, run.source) == (257, 8, cache, corpus)
    assert run.tokenizer_spec == "byte" and run.images is None
    again = prepare_run_data(corpus, ByteTokenizer(), seq_len=8, cache_dir=cache)
    assert again.train_dir == run.train_dir and again.tokenizer_spec == "bytes"


def test_the_default_cache_is_tjx_datas(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("TJX_CACHE", str(tmp_path / "default"))
    run = prepare_run_data(corpus, "byte", seq_len=4)
    assert run.cache_dir == tmp_path / "default" and run.train_dir.is_relative_to(run.cache_dir)


def test_errors_name_the_argument_in_the_callers_words(corpus, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"^vocab_size: 100 is smaller .* \(257\)") as err:
        prepare_run_data(corpus, "byte", seq_len=8, cache_dir=cache, vocab_size=100)
    assert err.value.argument == "vocab_size"
    with pytest.raises(DataError, match=r"^model\.vocab_size: 256 .* use >= 257") as err:
        prepare_run_data(corpus, "byte", seq_len=8, cache_dir=cache, vocab_size=256, names=KEYS)
    assert err.value.argument == "vocab_size"
    index = load_index(prepare_shards(corpus, ByteTokenizer(), cache).dirs["validation"])
    too_long = index.tokens  # the validation split holds fewer than seq_len + 1 tokens
    with pytest.raises(DataError, match=r"^data\.source: the validation split") as err:
        prepare_run_data(corpus, "byte", seq_len=too_long, cache_dir=cache, names=KEYS)
    assert err.value.argument == "source" and f"(data.seq_len + 1 = {too_long + 1})" in str(
        err.value
    )
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"^data\.source: empty dataset") as err:
        prepare_run_data(str(tmp_path / "empty.txt"), "byte", seq_len=4, cache_dir=cache,
                         names=KEYS)  # fmt: skip
    assert err.value.argument == "source"
    with pytest.raises(DataError, match=r"^data\.tokenizer: no such tokenizer") as err:
        prepare_run_data(corpus, "./nope.json", seq_len=4, cache_dir=cache, names=KEYS)
    assert err.value.argument == "tokenizer"


def test_a_trained_bpe_is_cached_where_bpe_tokenizer_keeps_it(corpus, tmp_path):
    cache = tmp_path / "cache"
    tok = run_tokenizer("bpe", corpus, vocab=300, cache_dir=cache)
    assert tok.fingerprint == bpe_tokenizer(corpus, 300, cache).fingerprint
    run = prepare_run_data(corpus, "bpe", tokenizer_vocab=300, seq_len=4, cache_dir=cache)
    assert run.tokenizer.fingerprint == tok.fingerprint and run.vocab_size == tok.vocab_size
    assert isinstance(run_tokenizer("byte", corpus), ByteTokenizer)
    with pytest.raises(DataError, match=r"^data\.source: ") as err:
        run_tokenizer("bpe", str(tmp_path / "missing.txt"), cache_dir=cache, names=KEYS)
    assert err.value.argument == "source"


def test_each_process_reads_its_rows_of_every_global_batch(corpus, tmp_path):
    run = prepare_run_data(corpus, "byte", seq_len=8, cache_dir=tmp_path / "cache")
    whole = run.train_loader(4, seed=5)
    halves = [run.train_loader(4, seed=5, process_index=p, process_count=2) for p in (0, 1)]
    assert isinstance(whole, PackedLoader)
    for _ in range(3):
        glued = [next(h) for h in halves]
        _same(next(whole), {k: np.concatenate([g[k] for g in glued]) for k in glued[0]})
    direct = PackedLoader(run.train_dir, seq_len=8, batch_size=4, seed=5, shuffle=False)
    _same(next(run.train_loader(4, seed=5, shuffle=False)), next(direct))


def test_a_split_too_small_for_one_batch_blames_the_batch(corpus, tmp_path):
    run = prepare_run_data(corpus, "byte", seq_len=8, cache_dir=tmp_path / "cache")
    windows = (load_index(run.train_dir).tokens - 1) // 8
    with pytest.raises(DataError, match=r"^data\.batch_size: the train split of ") as err:
        run.train_loader(windows + 1, seed=0, names=KEYS)
    assert err.value.argument == "batch_size"
    assert f"one batch of {windows + 1} sequences of data.seq_len + 1 = 9 tokens" in str(err.value)
    assert f"make {windows} such windows); lower data.batch_size or data.seq_len" in str(err.value)
    run.train_loader(windows, seed=0)  # exactly one batch fits


def test_validation_batches_are_the_first_n_in_order(corpus, tmp_path):
    run = prepare_run_data(corpus, "byte", seq_len=8, cache_dir=tmp_path / "cache")
    everything = list(validation_batches(run.val_dir, 8, 2))
    assert len(everything) > 2
    for got, want in zip(list(run.validation_batches(2, 2)), everything[:2], strict=True):
        _same(got, want)
    assert len(list(run.validation_batches(2))) == len(everything)
    rows = list(validation_batches(run.val_dir, 8, 1, process_index=1, process_count=2))
    _same(next(iter(run.validation_batches(2, 1, process_index=1, process_count=2))), rows[0])


def test_any_process_resumes_from_process_0s_state(corpus, tmp_path):
    run = prepare_run_data(corpus, "byte", seq_len=4, cache_dir=tmp_path / "cache")
    seed = int(np.random.default_rng().integers(1000))
    first, second = (
        run.train_loader(4, seed=seed, process_index=p, process_count=2) for p in (0, 1)
    )
    for _ in range(3):
        next(first), next(second)
    saved = first.state_dict()  # a checkpoint holds process 0's position
    resumed = run.train_loader(4, seed=seed, process_index=1, process_count=2)
    restore_loader_state(resumed, saved, process_index=1)
    _same(next(resumed), next(second))
    assert saved["process_index"] == 0  # the caller's state is left as it was
    with pytest.raises(DataError, match="process_index: saved 0, now 1"):
        resumed.load_state_dict(saved)


def test_a_resume_on_another_process_count_continues_the_global_batches(corpus, tmp_path):
    """Elastic resume: 2 processes of 2 rows saved, 1 process of 4 rows (and back) continues with
    the same global batches, rows in the same order; another global batch is refused."""
    run = prepare_run_data(corpus, "byte", seq_len=4, cache_dir=tmp_path / "cache")
    seed = int(np.random.default_rng().integers(1000))
    whole = run.train_loader(4, seed=seed)
    halves = [run.train_loader(4, seed=seed, process_index=p, process_count=2) for p in (0, 1)]
    steps = int(np.random.default_rng().integers(1, 4))
    for _ in range(steps):
        next(whole), next(halves[0]), next(halves[1])
    one = run.train_loader(4, seed=seed)
    restore_loader_state(one, halves[0].state_dict(), process_index=0)  # 2 -> 1
    two = [run.train_loader(4, seed=seed, process_index=p, process_count=2) for p in (0, 1)]
    for p, loader in enumerate(two):  # 1 -> 2
        restore_loader_state(loader, whole.state_dict(), process_index=p)
    for _ in range(2):
        want = next(whole)
        _same(next(one), want)
        parts = [next(loader) for loader in two]
        _same({k: np.concatenate([b[k] for b in parts]) for k in want}, want)
    other = run.train_loader(2, seed=seed)
    with pytest.raises(DataError, match=r"global batch is 4 rows \(2 × 2 processes\).* is 2 "):
        restore_loader_state(other, halves[0].state_dict(), process_index=0)


def test_digits_runs(tmp_path):
    run = prepare_image_run_data("digits", image_size=8)
    loader = run.train_loader(32, seed=3)
    assert isinstance(loader, ImageLoader)
    _same(next(loader), next(ImageLoader(load_digits("train"), 32, seed=3)))
    state = loader.state_dict()
    resumed = run.train_loader(32, seed=3)
    restore_loader_state(resumed, state, process_index=1)  # no process split: taken as it is
    _same(next(resumed), next(loader))
    val = list(run.validation_batches(100))
    assert [len(b["labels"]) for b in val] == [100] * (len(load_digits("validation")) // 100)
    np.testing.assert_array_equal(val[0]["labels"], load_digits("validation").labels[:100])
    assert len(list(run.validation_batches(100, 2))) == 2
    with pytest.raises(DataError, match=r"^data\.batch_size: batch_size must be in") as err:
        run.train_loader(len(load_digits("train")) + 1, seed=0, names=KEYS)
    assert err.value.argument == "batch_size"
    with pytest.raises(DataError, match=r"^data\.source: image runs read 'digits'") as err:
        prepare_image_run_data("mnist", names=KEYS)
    assert err.value.argument == "source"
    with pytest.raises(DataError, match=r"^model\.image_size: 16 does not match .* \(8\)") as err:
        prepare_image_run_data("digits", image_size=16, names=KEYS)
    assert err.value.argument == "image_size"
    info = json.loads(json.dumps(run.describe(tmp_path / "run")))
    assert info["tokenizer"] is None and info["cache_dir"] is None and info["vocab_size"] == 0
    assert not (tmp_path / "run").exists()
    back = RunData.from_description(info)
    assert back.tokenizer is None and back.images is None
    with pytest.raises(DataError, match="no val_dir") as err:
        back.heldout_shards()
    assert err.value.argument is None
    with pytest.raises(DataError, match=r"^--data: this run has no tokenizer") as err:
        back.heldout_shards("notes.txt", names={"source": "--data"})
    assert err.value.argument == "source"


def test_description_round_trip_with_a_builtin_tokenizer(corpus, tmp_path):
    run = prepare_run_data(corpus, "byte", seq_len=8, cache_dir=tmp_path / "cache")
    info = json.loads(json.dumps(run.describe(tmp_path / "run")))
    assert info["tokenizer"] == "byte" and not (tmp_path / "run").exists()
    assert info["cache_dir"] == str(tmp_path / "cache") and info["seq_len"] == 8
    back = RunData.from_description(info)
    assert back.tokenizer.fingerprint == run.tokenizer.fingerprint
    assert {**vars(back), "tokenizer": None} == {**vars(run), "tokenizer": None}
    assert back.heldout_shards() == (run.val_dir, run.bytes_per_token)


def test_a_trained_tokenizer_is_saved_once_into_the_run(corpus, tmp_path):
    run = prepare_run_data(corpus, "bpe", tokenizer_vocab=300, seq_len=4, cache_dir=tmp_path / "c")
    info = run.describe(tmp_path / "run")
    saved = tmp_path / "run" / "tokenizer" / "tokenizer.json"
    assert info["tokenizer"] == str(saved.resolve())
    stamp = saved.stat().st_mtime_ns
    assert run.describe(tmp_path / "run") == info and saved.stat().st_mtime_ns == stamp  # resume
    back = RunData.from_description(info)
    assert back.tokenizer.fingerprint == run.tokenizer.fingerprint
    assert back.tokenizer_spec == info["tokenizer"]
    # A tokenizer given as an object is saved too (it names no spec).
    docs = random_docs(int(np.random.default_rng().integers(1000)), 30)
    trained = train_bpe(docs, 280, show_progress=False)
    own = prepare_run_data(corpus, trained, seq_len=4, cache_dir=tmp_path / "c")
    described = own.describe(tmp_path / "own")
    assert load_tokenizer(described["tokenizer"]).fingerprint == trained.fingerprint


def test_older_and_hand_written_descriptions(tmp_path):
    for written in (None, "none"):  # "none": data.json of older image runs
        assert RunData.from_description({"tokenizer": written}).tokenizer is None
    back = RunData.from_description({"tokenizer": "byte", "val_dir": "v", "seq_len": 16})
    assert back.vocab_size == 257 and back.train_dir is None and back.cache_dir is None
    with pytest.raises(DataError, match="no train_dir"):
        back.train_loader(2, seed=0)
    gone = RunData.from_description({"tokenizer": "byte", "train_dir": str(tmp_path), "seq_len": 4})
    with pytest.raises(DataError, match="no shard index") as err:  # not the batch's fault
        gone.train_loader(2, seed=0, names=KEYS)
    assert err.value.argument is None
    with pytest.raises(DataError, match=r"^tokenizer: no such tokenizer") as err:
        RunData.from_description({"tokenizer": str(tmp_path / "gone" / "tokenizer.json")})
    assert err.value.argument == "tokenizer"


def test_heldout_shards_of_another_source_share_the_cache(corpus, tmp_path):
    run = prepare_run_data(corpus, "byte", seq_len=8, cache_dir=tmp_path / "cache")
    back = RunData.from_description(json.loads(json.dumps(run.describe(tmp_path / "run"))))
    assert back.heldout_shards(corpus)[0] == run.val_dir  # the run's own source: the same folder
    other = _corpus(tmp_path / "other.jsonl", int(np.random.default_rng().integers(1000)))
    folder, bpt = back.heldout_shards(other)
    shards = prepare_shards(other, ByteTokenizer(), tmp_path / "cache", splits=("validation",))
    assert (folder, bpt) == (shards.dirs["validation"], shards.bytes_per_token["validation"])
    with pytest.raises(DataError, match=r"^--data: no such file") as err:
        back.heldout_shards(str(tmp_path / "missing.txt"), names={"source": "--data"})
    assert err.value.argument == "source"


def test_data_error_argument_survives_pickling():
    err = pickle.loads(pickle.dumps(DataError("bad", argument="seq_len")))
    assert (str(err), err.argument) == ("bad", "seq_len")
    assert DataError("plain").argument is None and isinstance(err, ValueError)
