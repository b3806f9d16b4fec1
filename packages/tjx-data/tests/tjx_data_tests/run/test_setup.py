"""A run's data from its `DataConfig`: the settings declared once, the source described, the
tokenizer, each format prepared as its own preparing function does it, the training loader checked
against the run's length, and every error naming the caller's key."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from tjx.data import (
    ARITHMETIC,
    DATA_FORMATS,
    ON_EXHAUSTED,
    ByteTokenizer,
    ChatRunData,
    DataConfig,
    DataError,
    MixtureLoader,
    config_tokenizer,
    config_vocab,
    describe_sources,
    prepare_arithmetic,
    prepare_run,
    prepare_run_data,
    run_loader,
    run_sources,
    run_tokenizer,
    truncation_summary,
)
from tjx_data_tests._helpers import child_env, random_docs

NAMES = {
    "source": "data.source",
    "sources": "data.sources",
    "seq_len": "data.seq_len",
    "batch_size": "data.batch_size",
    "on_exhausted": "data.on_exhausted",
    "num_channels": "model.num_channels",
    "steps": "train.steps",
}


def _corpus(path, seed, count):
    docs = random_docs(seed, count)
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return str(path)


@pytest.fixture
def sources(tmp_path):
    web = _corpus(tmp_path / "web.jsonl", 11, 80)
    code = _corpus(tmp_path / "code.jsonl", 12, 50)
    return [{"source": web, "weight": 3, "name": "web"}, {"source": code, "weight": 1}]


def test_each_setting_declares_its_help_and_the_packages_own_choices():
    fields = {f.name: f for f in dataclasses.fields(DataConfig)}
    assert fields["format"].metadata["choices"] is DATA_FORMATS
    assert fields["on_exhausted"].metadata["choices"] is ON_EXHAUSTED
    assert fields["seq_len"].metadata["min"] == 2 and fields["cache_dir"].metadata["resumable"]
    assert all(f.metadata["help"] for f in fields.values())
    assert DataConfig().source == "shakespeare" and DataConfig().sources is None


def test_the_settings_load_without_jax():
    code = (
        "import sys\nfrom tjx.data import DataConfig\nDataConfig()\nassert 'jax' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=child_env())


def test_one_source_is_described_by_its_name_a_mixture_by_names_and_weights(sources):
    assert describe_sources(DataConfig(source="tiny")) == "tiny"
    assert run_sources(DataConfig(source="tiny")) is None
    mixed = DataConfig(sources=sources)
    assert describe_sources(mixed) == "a mixture of web (3), code.jsonl (1)"
    assert [p.name for p in run_sources(mixed)] == ["web", "code.jsonl"]
    with pytest.raises(DataError, match=r"^data\.sources: give at least one") as err:
        describe_sources(DataConfig(sources=[]), names=NAMES)
    assert err.value.argument == "sources"


def test_the_tokenizer_of_a_mixture_is_the_one_of_its_first_source(sources, tmp_path):
    assert isinstance(config_tokenizer(DataConfig()), ByteTokenizer)
    cache = str(tmp_path / "c")
    mixed = DataConfig(sources=sources, tokenizer="bpe", tokenizer_vocab=300, cache_dir=cache)
    first = run_tokenizer("bpe", sources[0]["source"], vocab=300, cache_dir=cache)
    assert config_tokenizer(mixed).fingerprint == first.fingerprint
    with pytest.raises(DataError) as err:
        config_tokenizer(DataConfig(tokenizer=str(tmp_path / "none.json")), names=NAMES)
    assert err.value.argument == "tokenizer"


def test_the_vocabulary_is_read_without_training_a_bpe(tmp_path):
    assert config_vocab(DataConfig()) == ByteTokenizer().vocab_size  # byte-level: loaded
    bpe = DataConfig(tokenizer="bpe", tokenizer_vocab=300, cache_dir=str(tmp_path / "cache"))
    assert config_vocab(bpe) == 300 and not (tmp_path / "cache").exists()  # nothing trained
    with pytest.raises(DataError, match="none.json"):
        config_vocab(DataConfig(tokenizer=str(tmp_path / "none.json")))


def test_text_and_a_mixture_are_prepared_as_their_own_functions_prepare_them(sources, tmp_path):
    cache = str(tmp_path / "c")
    one = DataConfig(source=sources[1]["source"], seq_len=8, cache_dir=cache)
    run = prepare_run(one, vocab_size=300)
    alone = prepare_run_data(one.source, "byte", seq_len=8, cache_dir=cache)
    assert (run.train_dir, run.bytes_per_token) == (alone.train_dir, alone.bytes_per_token)
    with pytest.raises(DataError, match=r"^vocab_size: 100 is smaller"):
        prepare_run(one, vocab_size=100)
    mixed = dataclasses.replace(one, sources=sources, on_exhausted="drop")
    both = prepare_run(mixed, names=NAMES)
    assert [p.name for p in both.mixture] == ["web", "code.jsonl"]
    assert both.on_exhausted == "drop"


def test_a_dropping_mixture_too_short_for_the_steps_is_refused(sources, tmp_path):
    cfg = DataConfig(sources=sources, on_exhausted="drop", seq_len=8, batch_size=4,
                     cache_dir=str(tmp_path / "c"))  # fmt: skip
    run = prepare_run(cfg)
    loader = run_loader(run, cfg, seed=0, steps=1, names=NAMES)
    assert isinstance(loader, MixtureLoader) and truncation_summary(loader, cfg) is None
    rows = loader.total_rows
    with pytest.raises(DataError) as err:
        run_loader(run, cfg, seed=0, steps=rows, names=NAMES)
    assert err.value.argument == "on_exhausted"
    assert str(err.value) == (
        f"data.on_exhausted: with drop the sources give {rows} rows in all, and train.steps × "
        f"data.batch_size = {rows} × 4 = {rows * 4}; use train.steps <= {rows // 4}, or "
        "data.on_exhausted=repeat"
    )
    assert run_loader(run, cfg, seed=0, steps=rows // 4).total_rows == rows


def test_the_callers_check_sees_new_data_before_it_is_published(sources, tmp_path):
    """``prepare_run(check=...)``: an app's own check of newly prepared data runs on the staged
    folders; what it raises leaves the cache as it was, and data once published is not checked
    again (it was checked when it was made)."""
    cache = tmp_path / "c"
    cfg = DataConfig(source=sources[0]["source"], seq_len=8, batch_size=4, cache_dir=str(cache))
    seen = []

    def refuse(run):
        seen.append(next(run_loader(run, cfg, seed=0))["inputs"].shape)
        raise ValueError("not enough for this app")

    with pytest.raises(ValueError, match="not enough for this app"):
        prepare_run(cfg, check=refuse)
    assert seen == [(4, 8)]  # the staged data gives the run's batches
    # Nothing was published: the next preparation makes the data again, and checks it.
    run = prepare_run(cfg, check=seen.append)
    assert len(seen) == 2 and seen[1].train_dir != run.train_dir  # checked where it lay
    prepare_run(cfg, check=refuse)  # cached: checked when it was made, not again
    assert len(seen) == 2


def test_an_image_run_reads_the_grey_digits_whatever_the_format():
    cfg = DataConfig(source="digits", format="chat")
    run = prepare_run(cfg, images=True, image_size=8)
    assert run.images is not None and run.tokenizer is None
    with pytest.raises(DataError) as err:
        prepare_run(cfg, images=True, num_channels=3, names=NAMES)
    assert err.value.argument == "num_channels"
    assert str(err.value) == (
        "model.num_channels: the digits images are grey (1 channel), the model reads 3; set "
        "model.num_channels=1"
    )


def test_chat_data_is_prepared_as_chat_rows_and_its_truncation_summarized(tmp_path):
    cfg = DataConfig(source=ARITHMETIC, format="chat", tokenizer="bpe", tokenizer_vocab=300,
                     seq_len=32, batch_size=8, cache_dir=str(tmp_path))  # fmt: skip
    run = prepare_run(cfg)
    assert isinstance(run, ChatRunData) and run.kind == "chat"
    loader = run_loader(run, cfg, seed=0, steps=10**6)  # a chat loader repeats: no length check
    cut = loader.truncation
    assert truncation_summary(loader, cfg, names=NAMES) == (
        f"{cut.rows:,} chat rows kept, {cut.truncated:,} cut to data.seq_len + 1, "
        f"{cut.dropped:,} dropped (no trained token left), rows {loader.fill:.0%} full"
    )


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_with_steps_data_the_run_cannot_read_is_refused_before_it_is_published(sources, tmp_path):
    """`prepare_run(steps=...)` builds the run's loader on the staged data: a batch too large,
    a dropping mixture too short for the steps or chat rows all cut away are refused, and the
    cache keeps nothing of them; what passes is published where the loader then reads it."""
    cache = tmp_path / "c"
    one = DataConfig(source=sources[1]["source"], seq_len=8, batch_size=10**5,
                     cache_dir=str(cache))  # fmt: skip
    with pytest.raises(DataError, match=r"^data\.batch_size: the train split of .* too small"):
        prepare_run(one, names=NAMES, steps=1)
    assert _files(cache) == []
    mixed = dataclasses.replace(one, sources=sources, on_exhausted="drop", batch_size=4)
    with pytest.raises(DataError, match=r"^data\.on_exhausted: with drop the sources give"):
        prepare_run(mixed, names=NAMES, steps=10**6)
    assert _files(cache) == []
    run = prepare_run(mixed, names=NAMES, steps=1)
    assert run.mixture is not None and all(p.train_dir.is_dir() for p in run.mixture)
    assert not [f for f in _files(cache) if "staged" in f or f.endswith(".lock")]
    chat = DataConfig(source=ARITHMETIC, format="chat", tokenizer="bpe", tokenizer_vocab=300,
                      seq_len=2, batch_size=8, cache_dir=str(tmp_path / "chat"))  # fmt: skip
    prepare_arithmetic("chat", tmp_path / "chat")  # the generated task: made, not refused
    before = _files(tmp_path / "chat")
    with pytest.raises(DataError, match=r"^data\.seq_len: .* lose every trained token"):
        prepare_run(chat, names=NAMES, steps=1)
    assert _files(tmp_path / "chat") == before
    made = prepare_run(dataclasses.replace(chat, seq_len=32), names=NAMES, steps=1)
    assert isinstance(made, ChatRunData) and made.train_dir.is_dir()
