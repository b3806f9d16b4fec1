"""Mixtures: a checked spec (one line per bad entry), a deterministic rule whose realised shares
match the weights, rows that are their source's own windows, bit-exact resume on any process
count at the same global batch, and each source re-epoched or dropped as asked."""

from __future__ import annotations

import numpy as np
import pytest

from tjx.data import ByteTokenizer, DataError, pretokenize
from tjx.data.mixture import MixtureRule, MixtureSource, check_mixture
from tjx.data.mixture_loader import MixtureLoader, mixture_validation_batches
from tjx.data.packing import PackingPlan, TokenStream, make_batch
from tjx.data.shards import load_index
from tjx_data_tests._helpers import random_docs

S = 8


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three byte-tokenized sources of different sizes, each with a held-out split."""
    out = []
    for i, docs in enumerate((40, 15, 25)):
        root = tmp_path_factory.mktemp(f"src{i}")
        tok = ByteTokenizer()
        pretokenize(random_docs(100 + i, docs), tok, root, split="train", num_workers=1,
                    progress=False)  # fmt: skip
        pretokenize(random_docs(200 + i, 5), tok, root, split="validation", num_workers=1,
                    progress=False)  # fmt: skip
        out.append(root)
    return out


def test_bad_mixture_entries_are_one_line_each():
    good = check_mixture([{"source": "./web/", "weight": 3}, {"source": "hf:code", "name": "c"}])
    assert good == [MixtureSource("web", "./web/", 3.0), MixtureSource("c", "hf:code", 1.0)]
    cases = [
        ([], "give at least one"),
        ([{"source": "a", "weight": 0}], r"sources\[0\]\.weight: must be a positive number, got 0"),
        ([{"source": "a", "weight": -1.5}], "got -1.5"),
        ([{"source": "a", "weight": float("nan")}], "got nan"),
        ([{"source": "a", "weight": True}], "got True"),
        ([{"source": "a"}, {"source": "b", "name": "a"}], r"sources\[1\]\.name: 'a' is already"),
        ([{"source": "a", "wieght": 2}], "unknown key"),
        (["a"], "expected a mapping"),
    ]
    for entries, needle in cases:
        with pytest.raises(DataError, match=needle) as err:
            check_mixture(entries)
        assert "\n" not in str(err.value) and err.value.argument == "sources"


def test_realised_shares_match_the_weights():
    rng = np.random.default_rng()
    weights = rng.uniform(0.1, 5.0, size=int(rng.integers(2, 6)))
    rule = MixtureRule(weights, np.full(weights.size, 10**9))
    total = 0
    for rows in rng.integers(1, 64, size=50).tolist():
        sources, cursors = rule.take(rows)
        total += rows
        # Within one row of the exact share after every batch (the reference: weights / sum).
        exact = weights / weights.sum() * total
        assert np.all(np.abs(rule.counts - exact) < 1.0 + 1e-9), (rule.counts, exact)
        assert np.all(cursors >= 0) and sources.size == rows
    # Each source's rows are numbered 0, 1, 2, ... without gaps.
    again = MixtureRule(weights, np.full(weights.size, 10**9))
    sources, cursors = again.take(500)
    for i in range(weights.size):
        np.testing.assert_array_equal(cursors[sources == i], np.arange((sources == i).sum()))


def _source_rows(root, seed, index, count):
    """Reference: the first ``count`` windows of source ``index`` in its own order, epoch after
    epoch, built by the plain packing functions."""
    shard = load_index(root, "train")
    stream = TokenStream(list(shard.open()))
    windows = PackingPlan(num_tokens=shard.tokens, seq_len=S, batch_size=1, seed=0).num_windows
    ids = np.concatenate([np.random.default_rng([seed, index, e]).permutation(windows)
                          for e in range(count // windows + 1)])[:count]  # fmt: skip
    return make_batch(stream, ids, S, shard.eos_id)["inputs"]


def test_rows_are_each_sources_own_windows_and_resume_on_any_process_count(sources):
    seed = int(np.random.default_rng().integers(1000))
    weights = (1.0, 2.0, 0.5)
    spec = [(f"s{i}", root, w) for i, (root, w) in enumerate(zip(sources, weights, strict=True))]
    whole = MixtureLoader(spec, seq_len=S, batch_size=8, seed=seed)
    batches = [next(whole) for _ in range(12)]  # several epochs of the small source
    src = np.concatenate([b["source"] for b in batches])
    inputs = np.concatenate([b["inputs"] for b in batches])
    for i, root in enumerate(sources):
        np.testing.assert_array_equal(
            inputs[src == i], _source_rows(root, seed, i, (src == i).sum())
        )
    # Saved after 5 steps on 1 process, resumed on 2 processes of 4 rows (and 2 -> 1).
    first = MixtureLoader(spec, seq_len=S, batch_size=8, seed=seed)
    for _ in range(5):
        next(first)
    state = first.state_dict()
    halves = [MixtureLoader(spec, seq_len=S, batch_size=4, seed=seed, process_index=p,
                            process_count=2) for p in (0, 1)]  # fmt: skip
    for half in halves:
        half.load_state_dict(state)
    for want in batches[5:8]:
        parts = [next(half) for half in halves]
        for key in want:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), want[key])
    back = MixtureLoader(spec, seq_len=S, batch_size=8, seed=seed)
    back.load_state_dict(halves[1].state_dict())
    for want in batches[8:]:
        got = next(back)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    other = MixtureLoader(spec, seq_len=S, batch_size=4, seed=seed)
    with pytest.raises(DataError, match="global_batch: saved 8, now 4"):
        other.load_state_dict(state)


def test_a_dropped_source_stops_after_one_epoch(sources):
    spec = [("big", sources[0], 1.0), ("small", sources[1], 1.0)]
    loader = MixtureLoader(spec, seq_len=S, batch_size=4, on_exhausted="drop")
    small = loader.rule.windows[1]
    batches = list(loader)  # ends: every source dropped after its one epoch
    src = np.concatenate([b["source"] for b in batches])
    assert (src == 1).sum() == small and (src == 0).sum() == loader.rule.windows[0]
    assert set(np.unique(src).tolist()) <= {-1, 0, 1}
    assert np.all(np.concatenate([b["targets"] for b in batches])[src == -1] == -100)
    repeat = MixtureLoader(spec, seq_len=S, batch_size=4)
    for _ in range(len(batches) + 3):  # "repeat" goes on past the small source's epoch
        next(repeat)
    assert repeat.rule.counts[1] > small


def test_each_source_has_its_own_validation_batches(sources):
    val = mixture_validation_batches([("a", sources[0]), ("b", sources[1])], S, 4)
    assert sorted(val) == ["a", "b"]
    a, b = list(val["a"]), list(val["b"])
    assert a and b and not np.array_equal(a[0]["inputs"], b[0]["inputs"])
