import json
import pickle

import numpy as np
import pytest

from tjx.data import (
    DataError,
    HFTokenizer,
    Tokenizer,
    encode_prompts,
    load_tokenizer,
    save_tokenizer,
    train_bpe,
)
from tjx_data_tests._helpers import random_docs


@pytest.fixture(scope="module")
def bpe() -> HFTokenizer:
    return train_bpe(random_docs(7, 200), 300, show_progress=False)


def test_gpt2_offline_ids(session_cache):
    tok = load_tokenizer("gpt2")
    assert isinstance(tok, Tokenizer)
    assert tok.encode_batch(["Hello world"]) == [[15496, 995]]
    assert (tok.eos_id, tok.vocab_size) == (50256, 50257)
    text = "Ünïcode, tabs\tand  spaces.\n"
    assert tok.decode(tok.encode_batch([text])[0]) == text
    assert tok.decode([15496, 995, 50256]) == "Hello world<|endoftext|>"
    # cached: the same files give the same fingerprint when loaded as a folder
    folder = session_cache / "gpt2-bpe"
    assert load_tokenizer(folder).fingerprint == tok.fingerprint
    assert {p.name for p in folder.iterdir()} == {"encoder.json", "vocab.bpe", "tokenizer.json"}


def test_bytes_round_trip_and_counts():
    tok = load_tokenizer("bytes")
    docs = random_docs(3, 20)
    ids = tok.encode_batch(docs)
    assert all(max(i) < 256 for i in ids)
    assert [tok.decode(i) for i in ids] == docs
    assert tok.count_bytes(docs) == [len(i) for i in ids]
    assert tok.decode([104, 105, 256, 0xE2]) == "hi<|endoftext|>\ufffd"
    # #71: ids a larger model's samples hold are U+FFFD, not an error that lost the run's end.
    assert tok.decode([104, 300, 105, -1, 0xC3, 0xA9]) == "h\ufffdi\ufffd\u00e9"
    assert pickle.loads(pickle.dumps(tok)).fingerprint == tok.fingerprint
    assert tok.fingerprint != train_bpe(["ab ab ab"], 260, show_progress=False).fingerprint


def test_an_id_the_vocabulary_lacks_decodes_as_a_replacement_character(bpe):
    ids = bpe.encode_batch(["abc def"])[0]
    size = bpe.vocab_size
    assert bpe.decode([*ids, size + 5, *ids]) == "abc def\ufffdabc def"  # tokenizers drops it
    assert bpe.decode([-3]) == "\ufffd"
    assert bpe.decode(ids) == "abc def"


def test_bpe_round_trip_save_load(bpe, tmp_path):
    docs = random_docs(11, 30)  # fresh text, not the training text
    ids = bpe.encode_batch(docs)
    assert [bpe.decode(i) for i in ids] == docs
    assert 257 < bpe.vocab_size <= 300 and bpe.eos_id == 0
    assert sum(len(i) for i in ids) < sum(bpe.count_bytes(docs))  # merges compress
    path = bpe.save(tmp_path / "tok")
    assert path.name == "tokenizer.json"
    for spec in (tmp_path / "tok", path, str(path)):
        again = load_tokenizer(spec)
        assert again.fingerprint == bpe.fingerprint
        assert again.encode_batch(docs) == ids
    file = bpe.save(tmp_path / "other.json")
    assert load_tokenizer(file).fingerprint == bpe.fingerprint
    clone = pickle.loads(pickle.dumps(bpe))
    assert clone.fingerprint == bpe.fingerprint and clone.encode(docs[0]) == ids[0]


def test_save_tokenizer_keeps_an_identical_copy_and_replaces_others(bpe, tmp_path):
    folder = tmp_path / "run" / "tokenizer"
    path = save_tokenizer(bpe, folder)
    assert path == folder / "tokenizer.json" and load_tokenizer(path).fingerprint == bpe.fingerprint
    stamp = path.stat().st_mtime_ns
    path.touch()  # tell a rewrite from a kept file by its time
    kept = path.stat().st_mtime_ns
    assert save_tokenizer(bpe, folder) == path and path.stat().st_mtime_ns == kept >= stamp
    other = train_bpe(random_docs(9, 200), 300, show_progress=False)
    assert load_tokenizer(save_tokenizer(other, folder)).fingerprint == other.fingerprint
    path.write_text("{not json")  # unreadable: replaced
    assert load_tokenizer(save_tokenizer(bpe, folder)).fingerprint == bpe.fingerprint


def test_encode_prompts_pads_right_and_gives_empty_prompts_the_eos(bpe):
    prompts = [*random_docs(12, 3), ""]
    ids, lengths = encode_prompts(bpe, prompts)
    # Reference: each prompt's own ids, then zeros; the empty one is [eos].
    rows = [*bpe.encode_batch(prompts[:3]), [bpe.eos_id]]
    assert lengths.dtype == ids.dtype == np.int32
    np.testing.assert_array_equal(lengths, [len(r) for r in rows])
    assert ids.shape == (4, max(len(r) for r in rows))
    for i, row in enumerate(rows):
        assert ids[i, : len(row)].tolist() == row and not ids[i, len(row) :].any()
    with pytest.raises(DataError, match="no prompts"):
        encode_prompts(bpe, [])


def test_fingerprint_tracks_vocabulary(bpe):
    other = train_bpe(random_docs(8, 200), 300, show_progress=False)
    assert other.fingerprint != bpe.fingerprint
    assert len(bpe.fingerprint) == 32


def test_vocab_merges_folder(bpe, tmp_path):
    model = json.loads(bpe.tokenizer.to_str())["model"]
    (tmp_path / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    merges = ["#version: 0.2"] + [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tmp_path / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    tok = load_tokenizer(tmp_path)
    docs = random_docs(12, 5)
    assert tok.encode_batch(docs) == bpe.encode_batch(docs)


def test_bad_tokenizer_inputs(tmp_path, bpe):
    with pytest.raises(DataError, match="no such tokenizer"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(DataError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match="not a tokenizers JSON"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(DataError, match="no end-of-document token"):
        HFTokenizer(bpe.tokenizer, name="x", eos_token="<nope>")
    with pytest.raises(DataError, match="HF_HUB_OFFLINE"):
        load_tokenizer("someone/some-tokenizer")


def test_train_bpe_validates():
    with pytest.raises(ValueError, match="vocab_size must be >= 257"):
        train_bpe(["a"], 100)
    with pytest.raises(ValueError, match="min_frequency"):
        train_bpe(["a"], 300, min_frequency=0)
    with pytest.raises(ValueError, match="special_tokens"):
        train_bpe(["a"], 300, special_tokens=())
    with pytest.raises(DataError, match="empty"):
        train_bpe([], 300, show_progress=False)


def test_a_wrapper_is_unwrapped_through_its_public_json():
    """tokenizers' wrappers (``ByteLevelBPETokenizer``) keep their ``Tokenizer`` in a private
    attribute; tjx-data takes it through the public JSON instead: the same rules and ids."""
    import tokenizers as hf

    from tjx.data.bpe import _unwrap

    wrapper = hf.ByteLevelBPETokenizer()  # as train_bpe trains it
    docs = random_docs(5, 50)
    wrapper.train_from_iterator(docs, 290, special_tokens=["<eos>"], show_progress=False)
    tok = _unwrap(wrapper)
    assert isinstance(tok, hf.Tokenizer) and tok.to_str() == wrapper.to_str()
    docs = [*random_docs(6, 10), "a<eos>b"]
    assert [e.ids for e in tok.encode_batch(docs)] == [e.ids for e in wrapper.encode_batch(docs)]


def test_two_specs_are_the_same_tokenizer_when_equal_or_their_tokenizer_json_is(tmp_path):
    from tjx.data import same_tokenizer

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tokenizer.json").write_text('{"v": 1}')
    (tmp_path / "b.json").write_text('{"v": 1}')
    (tmp_path / "c.json").write_text('{"v": 2}')
    assert same_tokenizer("gpt2", "gpt2")
    assert same_tokenizer(tmp_path / "a", str(tmp_path / "a"))
    assert same_tokenizer(str(tmp_path / "a"), tmp_path / "b.json")  # a folder and a file
    assert not same_tokenizer(tmp_path / "b.json", tmp_path / "c.json")
    assert not same_tokenizer("gpt2", "byte")
    assert not same_tokenizer(None, "None")  # an unknown tokenizer matches no spec by name


def test_data_read_by_another_tokenizer_than_the_runs_is_refused_naming_the_runs(tmp_path):
    import json
    from types import SimpleNamespace

    from tjx.data import DataError, check_run_tokenizer

    (tmp_path / "data.json").write_text(json.dumps({"tokenizer": "gpt2"}))
    check_run_tokenizer(str(tmp_path), SimpleNamespace(tokenizer_spec="gpt2"))
    check_run_tokenizer(str(tmp_path), SimpleNamespace(tokenizer_dir=None, tokenizer_spec="gpt2"))
    with pytest.raises(DataError) as err:
        names = {"tokenizer": "data.tokenizer"}
        check_run_tokenizer(str(tmp_path), SimpleNamespace(tokenizer_spec="byte"), names=names)
    assert str(err.value) == (
        f"the run {str(tmp_path)!r} read another tokenizer (gpt2), so its ids would mean other "
        "tokens here; set data.tokenizer=gpt2"
    )
    assert err.value.argument == "tokenizer"
    (tmp_path / "tok").mkdir()  # a chat run's tokenizer folder
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    (tmp_path / "data.json").write_text(json.dumps({"tokenizer": str(tmp_path / "tok")}))
    with pytest.raises(DataError, match="set tokenizer="):
        check_run_tokenizer(str(tmp_path), SimpleNamespace(tokenizer_dir=tmp_path))
    check_run_tokenizer(str(tmp_path), SimpleNamespace(tokenizer_dir=tmp_path / "tok"))
