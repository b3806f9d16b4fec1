"""A DataConfig's rules between its fields and the model it feeds, and a resumed chat run's
template: each a one-line error naming the caller's keys; where a run's relative sources were
read, and the line a resume run elsewhere says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tjx.data import (
    READ_IN,
    DataConfig,
    DataError,
    check_data_config,
    check_local_sources,
    check_template,
    read_elsewhere,
    read_in,
)
from tjx.data.chat.template import ChatTemplate
from tjx_data_tests.conftest import write_chat_folder

MIX = [{"source": "a.txt", "weight": 1}, {"source": "b.txt", "weight": 2}]


@pytest.mark.parametrize(
    ("settings", "task", "message"),
    [
        (
            {"max_tokens": 10},
            "lm",
            "data.max_tokens: 10 tokens are fewer than one batch (data.batch_size 16 × "
            "data.seq_len 128 + 1 = 2049); raise it or leave it unset",
        ),
        ({"sources": [{"weight": 1}]}, "lm", "data.sources"),
        (
            {"format": "chat"},
            "mlm",
            "data.format: chat data trains a decoder (kinds) on one data.source; set "
            "data.format=text",
        ),
        ({"format": "preference", "sources": MIX}, "lm", "data.format: preference data trains"),
        (
            {"sources": MIX},
            "classify",
            "data.sources: an image model reads the digits images (data.source=digits), not a "
            "mixture",
        ),
        (
            {"sources": MIX, "shuffle": False},
            "lm",
            "data.shuffle: a mixture reads each source's windows shuffled; drop "
            "data.shuffle=false or train on one data.source",
        ),
    ],
)
def test_data_a_model_cannot_read_is_refused_naming_the_key(settings, task, message):
    with pytest.raises(ValueError) as err:
        check_data_config(DataConfig(**settings), task, decoders="a decoder (kinds)")
    assert str(err.value).startswith(message)


def test_data_a_model_reads_passes():
    check_data_config(DataConfig(format="chat"), "lm")
    check_data_config(DataConfig(sources=MIX, max_tokens=10_000), "lm")
    check_data_config(DataConfig(), "classify")


def test_a_local_source_that_is_not_there_is_refused_naming_its_key(tmp_path: Path):
    there, gone = tmp_path / "a.txt", str(tmp_path / "gone.txt")
    there.write_text("text", encoding="utf-8")
    check_local_sources(DataConfig(source=str(there)))
    check_local_sources(DataConfig(source="shakespeare"))  # a built-in name: not a path
    check_local_sources(DataConfig(source=gone, sources=[{"source": str(there)}]))  # the mixture's
    with pytest.raises(DataError) as err:
        check_local_sources(DataConfig(source=gone))
    assert str(err.value) == f"data.source: no such file or folder {gone!r}"
    assert err.value.argument == "source"
    mix = [{"source": str(there), "weight": 1}, {"source": gone, "weight": 2}]
    with pytest.raises(DataError) as err:
        check_local_sources(DataConfig(sources=mix), section="d")
    assert str(err.value) == f"d.sources[1].source: no such file or folder {gone!r}"


def test_a_resumed_chat_run_must_read_the_template_it_trained_with(tmp_path: Path):
    folder = write_chat_folder(tmp_path / "tok")
    saved = ChatTemplate.from_folder(folder).fingerprint
    chat = DataConfig(format="chat", tokenizer=str(folder))
    check_template(chat, saved)
    check_template(chat, None)  # unknown: nothing to compare
    check_template(DataConfig(tokenizer=str(folder)), "other")  # text data has no template
    check_template(DataConfig(format="chat", tokenizer="bpe"), "other")  # the fixed ChatML
    check_template(DataConfig(format="chat", tokenizer=str(tmp_path / "gone")), "other")
    with pytest.raises(DataError) as err:
        check_template(chat, "other", section="d")
    assert str(err.value) == (
        f"the chat template in d.tokenizer ({folder}) is not the one this run trained with "
        f"(fingerprint other, now {saved})"
    )
    assert err.value.argument == "tokenizer"


def test_relative_sources_record_where_they_were_read_and_a_resume_elsewhere_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "corpus.txt").write_text("text", encoding="utf-8")
    (tmp_path / "a" / "web").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    one = DataConfig(source="corpus.txt")
    mix = DataConfig(
        sources=[{"source": "shakespeare", "weight": 1}, {"source": "./web", "weight": 2}]
    )
    absolute = DataConfig(source=str(tmp_path / "a" / "corpus.txt"))
    assert read_in(one) == read_in(mix) == {READ_IN: str(tmp_path / "a")}
    # An absolute path, a built-in corpus or a hub name reads the same files from any folder.
    for cfg in (absolute, DataConfig(source="shakespeare"), DataConfig(source="org/name")):
        assert read_in(cfg) == {}
        assert read_elsewhere(cfg, {READ_IN: "/elsewhere"}) is None
    recorded = read_in(one)
    assert read_elsewhere(one, recorded) is None  # the same folder
    assert read_elsewhere(one, {}) is None  # a run written before the record: nothing to say
    monkeypatch.chdir(tmp_path / "b")  # neither corpus.txt nor web/ is here
    assert read_elsewhere(one, recorded) == (
        f"data.source corpus.txt is a path relative to the folder a command runs in: the run read "
        f"it in {tmp_path / 'a'}, this command runs in {tmp_path / 'b'}; run it from "
        f"{tmp_path / 'a'} to read the run's files"
    )
    said = read_elsewhere(mix, recorded, section="eval")
    assert said is not None and said.startswith("eval.sources[1].source ./web is a path relative")
    # check_local_sources of a resumed run's config: the line in its error, or returned
    with pytest.raises(DataError, match=r"^data\.source: no such file or folder 'corpus\.txt'; "
                       r"data\.source corpus\.txt is a path relative to the folder"):  # fmt: skip
        check_local_sources(one, resumed=recorded)
    (tmp_path / "b" / "corpus.txt").write_text("other text", encoding="utf-8")
    assert check_local_sources(one, resumed=recorded) == read_elsewhere(one, recorded)
    assert check_local_sources(one) is None and check_local_sources(one, resumed={}) is None
