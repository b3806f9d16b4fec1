"""A row's text in another field than ``text`` (The Stack's ``content``): ``text_field`` reads it
into the same tokens as ``text`` would, with a cache folder and a BPE of its own; a mixture entry
may name its own; a row without it names the string fields it has."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from tjx.data import (
    ByteTokenizer,
    DataConfig,
    DataError,
    RunData,
    check_data_config,
    check_mixture,
    load_index,
    prepare_mixture_run_data,
    prepare_run_data,
    prepare_shards,
)
from tjx.data.prepare import bpe_tokenizer, shard_key, slug
from tjx.data.sources.hub import iter_hub_texts
from tjx_data_tests._helpers import random_docs


def _rows(path, docs, field, **extra):
    path.write_text("".join(json.dumps({field: d, **extra}) + "\n" for d in docs), encoding="utf-8")
    return str(path)


@pytest.fixture
def docs():
    return random_docs(int(np.random.default_rng().integers(1 << 30)), 30)


def test_another_field_reads_the_same_tokens_into_its_own_folder(tmp_path, docs):
    content = _rows(tmp_path / "code.jsonl", docs, "content", repo="a/b")
    text = _rows(tmp_path / "web.jsonl", docs, "text")
    cache = tmp_path / "cache"
    ours = prepare_run_data(content, "byte", seq_len=8, cache_dir=cache, text_field="content")
    plain = prepare_run_data(text, "byte", seq_len=8, cache_dir=cache)
    for split in ("train_dir", "val_dir"):
        mine, theirs = load_index(getattr(ours, split)), load_index(getattr(plain, split))
        assert mine.tokens == theirs.tokens and mine.digest == theirs.digest is not None
    byte = ByteTokenizer().fingerprint[:12]
    assert ours.train_dir.parent.name == f"{shard_key(content)}-{byte}-field-{slug('content')}"
    assert plain.train_dir.parent.name == f"{shard_key(text)}-{byte}"  # as a "text" run had
    # The field travels with the run: data.json names it, and --data scoring reads it too.
    info = json.loads(json.dumps(ours.describe(tmp_path / "run")))
    assert info["text_field"] == "content" and "text_field" not in plain.describe(tmp_path / "r2")
    back = RunData.from_description(info)
    assert back.text_field == "content"
    other = _rows(tmp_path / "other.jsonl", docs[:12], "content")
    val_dir, _ = back.heldout_shards(other)
    assert "-field-content-" in val_dir.parent.name


def test_a_bpe_trained_on_another_field_is_its_own(tmp_path, docs):
    content = _rows(tmp_path / "code.jsonl", docs, "content")
    made = bpe_tokenizer(content, 300, tmp_path / "cache", text_field="content")
    folder = tmp_path / "cache" / "tokenizers" / f"{slug(content)}-bpe300-field-{slug('content')}"
    assert made.name == str(folder / "tokenizer.json")
    with pytest.raises(DataError, match="no string field 'text'"):
        bpe_tokenizer(content, 300, tmp_path / "cache")  # its own key: trained, and refused


def test_a_row_without_the_field_names_the_string_fields_it_has(tmp_path, docs):
    content = _rows(tmp_path / "code.jsonl", docs, "content", repo="a/b", stars=3)
    with pytest.raises(DataError) as err:
        prepare_run_data(content, "byte", seq_len=8, cache_dir=tmp_path / "cache",
                         names={"text_field": "data.text_field"})  # fmt: skip
    assert str(err.value) == (
        f"data.text_field: {tmp_path / 'code.jsonl'}: line 1: no string field 'text' (its string "
        "fields: content, repo: name the one that holds the text)"
    )
    assert err.value.argument == "text_field"
    table = tmp_path / "t.parquet"
    datasets.Dataset.from_dict({"body": docs[:3], "n": [1, 2, 3]}).to_parquet(str(table))
    with pytest.raises(DataError, match=r"t\.parquet: row 0: no string field 'text' \(its string "
                       r"fields: body: name"):  # fmt: skip
        prepare_shards(str(table), ByteTokenizer(), tmp_path / "cache")
    with pytest.raises(DataError, match=r"^x/y: row 0: no string field 'text'$"):  # none to name
        list(iter_hub_texts("x/y", [{"n": 1}], "text"))
    (tmp_path / "list.jsonl").write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        prepare_shards(str(tmp_path / "list.jsonl"), ByteTokenizer(), tmp_path / "cache")
    assert str(err.value).endswith("line 1: no string field 'text' (the row is no JSON object)")
    assert err.value.argument is None  # the file, not the field, is at fault


def test_a_mixture_entry_may_read_its_own_field(tmp_path, docs):
    web = _rows(tmp_path / "web.jsonl", docs, "text")
    code = _rows(tmp_path / "code.jsonl", docs[:20], "content")
    spec = check_mixture([{"source": web, "weight": 3}, {"source": code, "text_field": "content"}])
    assert [s.text_field for s in spec] == [None, "content"]
    run = prepare_mixture_run_data(spec, "byte", seq_len=8, cache_dir=tmp_path / "cache")
    assert [p.name for p in run.mixture] == ["web.jsonl", "code.jsonl"]
    alone = prepare_run_data(code, "byte", seq_len=8, cache_dir=tmp_path / "cache",
                             text_field="content")  # fmt: skip
    assert run.mixture[1].train_dir == alone.train_dir
    for bad in ("", 3):
        with pytest.raises(DataError, match=r"^sources\[0\]\.text_field: must be a field's name"):
            check_mixture([{"source": web, "text_field": bad}])


def test_chat_data_refuses_a_text_field():
    with pytest.raises(DataError) as err:
        check_data_config(DataConfig(format="chat", text_field="content"), "lm")
    assert str(err.value).startswith("data.text_field: chat data reads its rows' ")
    assert err.value.argument == "text_field"
    check_data_config(DataConfig(text_field="content"), "lm")  # text data: read
