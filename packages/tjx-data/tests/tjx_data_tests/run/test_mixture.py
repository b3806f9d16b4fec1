"""A run's mixture: every source prepared with one tokenizer, a mixture loader, each source's
held-out batches, data.json round trip, and one-line errors that name the entry."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tjx.data import (
    DataError,
    MixtureLoader,
    RunData,
    check_mixture,
    prepare_mixture_run_data,
    prepare_run_data,
    validation_batches,
)
from tjx_data_tests._helpers import random_docs

NAMES = {"sources": "data.sources", "seq_len": "data.seq_len", "batch_size": "data.batch_size"}


def _corpus(path, seed, count):
    docs = random_docs(seed, count)
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return str(path)


@pytest.fixture
def spec(tmp_path):
    seed = int(np.random.default_rng().integers(1 << 30))
    web = _corpus(tmp_path / "web.jsonl", seed, 80)
    code = _corpus(tmp_path / "code.jsonl", seed + 1, 50)
    return check_mixture([{"source": web, "weight": 3}, {"source": code, "weight": 1}])


def test_each_source_is_prepared_as_alone_and_the_bytes_per_token_follow_the_weights(
    spec, tmp_path
):
    cache = tmp_path / "cache"
    run = prepare_mixture_run_data(spec, "byte", seq_len=8, cache_dir=cache, names=NAMES)
    alone = [prepare_run_data(s.source, "byte", seq_len=8, cache_dir=cache) for s in spec]
    assert [(p.name, p.train_dir, p.val_dir) for p in run.mixture] == [
        (s.name, a.train_dir, a.val_dir) for s, a in zip(spec, alone, strict=True)
    ]
    expected = (3 * alone[0].bytes_per_token + alone[1].bytes_per_token) / 4
    assert run.bytes_per_token == pytest.approx(expected, rel=1e-12)
    assert run.source == "mixture of web.jsonl, code.jsonl"
    assert run.train_dir is None and run.val_dir is None


def test_the_loader_is_the_mixture_loader_and_validation_is_per_source(spec, tmp_path):
    run = prepare_mixture_run_data(spec, "byte", seq_len=8, cache_dir=tmp_path / "c")
    loader = run.train_loader(8, seed=3, process_index=1, process_count=2)
    assert isinstance(loader, MixtureLoader) and loader.batch_size == 4
    direct = MixtureLoader([(p.name, p.train_dir, p.weight) for p in run.mixture], seq_len=8,
                           batch_size=4, seed=3, process_index=1, process_count=2)  # fmt: skip
    for _ in range(3):
        a, b = next(loader), next(direct)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    sets = run.mixture_validation(4, 2)
    assert list(sets) == [s.name for s in spec]
    for part in run.mixture:
        batches, bpt = sets[part.name]
        want = list(validation_batches(part.val_dir, 8, 4))[:2]
        got = list(batches)
        assert bpt == part.bytes_per_token and len(got) == len(want)
        np.testing.assert_array_equal(got[0]["inputs"], want[0]["inputs"])
    with pytest.raises(DataError, match="one source, not a mixture"):
        prepare_run_data(spec[0].source, "byte", seq_len=8,
                         cache_dir=tmp_path / "c").mixture_validation(4)  # fmt: skip


def test_data_json_keeps_the_mixture_and_the_evaluator_is_told_to_name_one(spec, tmp_path):
    run = prepare_mixture_run_data(
        spec, "byte", seq_len=8, cache_dir=tmp_path / "c", on_exhausted="drop"
    )
    info = json.loads(json.dumps(run.describe(tmp_path / "run")))
    back = RunData.from_description(info)
    assert back.mixture == run.mixture and back.on_exhausted == "drop"
    assert back.bytes_per_token == run.bytes_per_token
    with pytest.raises(DataError, match=r"^--data: this run trained on a mixture \(web\.jsonl: "):
        back.heldout_shards(names={"source": "--data"})
    assert back.heldout_shards(spec[1].source)[0] == run.mixture[1].val_dir


def test_a_bad_source_names_its_entry(spec, tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("ab")
    bad = [*spec, *check_mixture([{"source": str(tiny), "weight": 1}])]
    with pytest.raises(DataError) as err:
        prepare_mixture_run_data(bad, "byte", seq_len=8, cache_dir=tmp_path / "c", names=NAMES)
    assert err.value.argument == "sources"
    assert str(err.value).startswith("data.sources[2].source: ")
    with pytest.raises(DataError, match=r"^on_exhausted: 'never'; allowed: repeat, drop$"):
        prepare_mixture_run_data(spec, "byte", seq_len=8, on_exhausted="never")
    with pytest.raises(DataError, match=r"^data.sources: give at least one"):
        prepare_mixture_run_data([], "byte", seq_len=8, names=NAMES)


def test_a_source_too_small_for_one_row_is_a_sources_error(spec, tmp_path):
    run = prepare_mixture_run_data(spec, "byte", seq_len=8, cache_dir=tmp_path / "c")
    longer = dataclasses.replace(run, seq_len=10**6)  # longer rows than any source holds
    with pytest.raises(DataError) as err:
        longer.train_loader(4, seed=0, names=NAMES)
    assert err.value.argument == "sources"
    assert str(err.value).startswith("data.sources: mixture source 'web.jsonl': too few tokens")
