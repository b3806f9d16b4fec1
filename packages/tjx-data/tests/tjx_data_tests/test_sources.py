import json
import logging
import os
import time

import datasets
import pytest

from tjx.data import DataError, check_local_source, left_out_note, load_source
from tjx.data.sources.local import PARQUET_LOGGER, iter_file, left_out_files


def test_folder_with_split_subfolders(text_corpus):
    root, docs = text_corpus
    train = load_source(str(root), split="train")
    assert list(train) == docs  # sorted file order: a.txt, b.txt, c.jsonl rows
    assert list(train) == docs  # re-iterable
    assert train.source == f"{root}:train"
    assert list(load_source(str(root), split="validation")) != docs


def test_glob_and_split_placeholder(tmp_path):
    (tmp_path / "train.txt").write_text("one", encoding="utf-8")
    (tmp_path / "validation.txt").write_text("two", encoding="utf-8")
    assert list(load_source(str(tmp_path / "{split}.txt"), split="validation")) == ["two"]
    assert sorted(load_source(str(tmp_path / "*.txt"))) == ["one", "two"]


def test_files_of_other_types_in_a_folder_are_named_not_skipped_silently(tmp_path):
    """A folder's (or glob's) files of another type than the readers' are listed and named in
    one line; hidden files, what hidden folders hold, a named file and non-local sources none."""
    read = ["a.txt", "b.jsonl", "sub/c.md"]
    other = ["d.json", "e.parquet.gz", "sub/f.csv", "sub/g"]
    hidden = [".gitattributes", ".git/objects/ab/cdef", ".cache/x.json"]
    for name in read + other + hidden:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('{"text": "x"}\n' if name.endswith("l") else "x\n")
    assert left_out_files(str(tmp_path), "train") == sorted(tmp_path / n for n in other)
    assert sorted(load_source(str(tmp_path))) == ["x", "x\n", "x\n"]  # the three read
    top = [tmp_path / "d.json", tmp_path / "e.parquet.gz"]
    assert left_out_files(str(tmp_path / "*"), "train") == top  # a glob's (files, not folders)
    assert left_out_files(str(tmp_path / "a.txt"), "train") == []
    note = left_out_note([str(tmp_path), "shakespeare", "org/name"])
    shown = ", ".join(str(tmp_path / n) for n in sorted(other)[:3])
    assert note == (
        f"left out 4 file(s) of other types: {shown} and 1 more (tjx reads .txt, .text, .md, "
        ".jsonl, .parquet files (.txt, .text, .md, .jsonl, .json ones also compressed: .gz, "
        ".bz2, .xz, .zst); convert them to one of these to read them)"
    )
    assert left_out_note([str(tmp_path / "a.txt"), "shakespeare"]) is None
    # A source with no file is left to its preparation, which names it.
    assert left_out_note([str(tmp_path / "nowhere" / "*.txt")]) is None
    with pytest.raises(DataError, match="no such file"):
        left_out_files(str(tmp_path / "nowhere"), "train")


def test_parquet_rows_are_documents(tmp_path):
    path = tmp_path / "d.parquet"
    datasets.Dataset.from_dict({"body": ["x y", "z"], "n": [1, 2]}).to_parquet(str(path))
    assert list(load_source(str(path), text_field="body")) == ["x y", "z"]
    with pytest.raises(DataError, match="no string field 'text'"):
        list(load_source(str(path)))


def test_missing_file_fails_at_once(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_source(str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="matched no"):
        load_source(str(tmp_path / "*.jsonl"))
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(DataError, match="unsupported file type"):
        load_source(str(tmp_path / "x.csv"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="matched no"):
        load_source(str(empty))


@pytest.mark.parametrize(
    "spec",
    ["{tmp}/nope.txt", "{tmp}/nope", "./nope-{name}", "~/nope-{name}.jsonl", "nope-{name}.md"],
)
def test_check_local_source_refuses_a_missing_path_without_reading(tmp_path, spec):
    spec = spec.format(tmp=tmp_path, name=tmp_path.name)
    with pytest.raises(DataError) as err:
        check_local_source(spec)
    assert str(err.value) == f"no such file or folder {spec!r}" and err.value.argument == "source"
    with pytest.raises(DataError, match="no such file or folder"):  # what load_source says too
        load_source(spec)


def test_check_local_source_leaves_the_rest_to_load_source(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("x", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for spec in (
        str(tmp_path / "a.txt"),  # exists
        str(tmp_path),
        "a.txt",
        str(tmp_path / "*.jsonl"),  # patterns: what they match is load_source's to say
        str(tmp_path / "{split}.txt"),
        "shakespeare",  # a built-in
        "owner/some-dataset",  # a hub name
    ):
        check_local_source(spec)


def test_undecodable_text_reports_file_and_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("héllo ".encode() + b"\xff\xfe" + b" tail")
    with pytest.raises(DataError, match=r"bad\.txt.*byte offset 7"):
        list(load_source(str(path)))
    assert list(load_source(str(path), errors="replace")) == ["héllo \ufffd\ufffd tail"]
    with pytest.raises(DataError, match="errors must be one of"):
        load_source(str(path), errors="ignore")


def test_undecodable_jsonl_offset_counts_earlier_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    first = json.dumps({"text": "ok"}).encode() + b"\n"
    path.write_bytes(first + b'{"text": "b\xc3"}\n')
    with pytest.raises(DataError, match=f"byte offset {len(first) + 11}"):
        list(iter_file(path))


def test_bad_jsonl_rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 3: no string field 'text'"):
        list(load_source(str(path)))
    path.write_text('{"text": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        list(load_source(str(path)))


def test_hub_name_offline_fails_fast_and_clearly():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tools/devtest and pants set it
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_source("roneneldan/TinyStories")
    message = str(info.value)
    assert "roneneldan/TinyStories" in message and "HF_HUB_OFFLINE" in message
    assert time.perf_counter() - start < 20  # no network retries (would take ~23 s)


def test_builtin_rejects_unknown_split():
    with pytest.raises(DataError, match="split must be one of"):
        load_source("shakespeare", split="test")


def test_hub_rows_to_texts():
    from tjx.data.sources.hub import iter_hub_texts

    assert list(iter_hub_texts("x/y", [{"text": "a"}, {"text": "b", "id": 2}], "text")) == [
        "a",
        "b",
    ]
    with pytest.raises(DataError, match="x/y: row 1: no string field 'text'"):
        list(iter_hub_texts("x/y", [{"text": "a"}, {"text": None}], "text"))


def test_a_misspelt_builtin_corpus_is_named_not_sent_to_the_hub(monkeypatch):
    from tjx.data import sources
    from tjx.data.sources import close_builtin

    def no_hub(*args, **kwargs):
        raise AssertionError("a typo of a built-in name must not reach the hub")

    monkeypatch.setattr(sources, "open_hub_dataset", no_hub)
    for typo, meant in (("shakespear", "shakespeare"), ("Shakespeare", "shakespeare")):
        with pytest.raises(DataError, match=f"did you mean '{meant}'"):
            load_source(typo, split="train")
    assert close_builtin("kjv") is None and close_builtin("wikitext") is None
    assert close_builtin("someone/shakespear") is None  # owner/name: a hub dataset


def test_a_file_that_is_not_parquet_is_one_error_naming_it_and_the_fix(tmp_path):
    from datasets.packaged_modules.parquet import parquet

    # The filter sits on datasets' Parquet reader's logger: if datasets renames it, say so here.
    assert parquet.logger.name == PARQUET_LOGGER
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep(logging.DEBUG)
    parquet.logger.addHandler(handler)
    try:
        for name, data in (("fake.parquet", b"plain text\n" * 20), ("empty.parquet", b"")):
            path = tmp_path / name
            path.write_bytes(data)
            with pytest.raises(DataError) as caught:
                list(load_source(str(path)))
            message = str(caught.value)
            assert message.startswith(f"{path}: not a readable Parquet file (")
            assert "\n" not in message
            assert "replace it with a valid Parquet file, or give text as .txt" in message
        assert seen == []  # no "Failed to read schema from ... ArrowInvalid" line of its own
        parquet.logger.error("Failed to read file 'x' with error ArrowInvalid: y")
        assert len(seen) == 1  # silenced only while tjx reads (and reports) a Parquet file
    finally:
        parquet.logger.removeHandler(handler)
