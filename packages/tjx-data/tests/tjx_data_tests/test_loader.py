import json
import threading

import numpy as np
import pytest

from tjx.data import (
    IGNORE_INDEX,
    ByteTokenizer,
    DataError,
    PackedLoader,
    PackingPlan,
    pretokenize,
    validation_batches,
)
from tjx.data.packing import TokenStream, segments_and_positions
from tjx_data_tests._helpers import random_docs

S, B = 16, 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    tok = ByteTokenizer()
    train = random_docs(31, 40, max_words=12)
    train[5] = ""
    pretokenize(
        train,
        tok,
        root,
        split="train",
        num_workers=1,
        progress=False,
        chunk_chars=300,
        shard_tokens=500,
    )  # fmt: skip  (several shards)
    pretokenize(random_docs(32, 9), tok, root, split="validation", num_workers=1, progress=False)
    return root


def reference_segments(row, eos):
    """Plain-Python segment ids and positions."""
    seg, pos, out_s, out_p = 1, 0, [], []
    for t in range(len(row)):
        if t > 0 and row[t - 1] == eos:
            seg, pos = seg + 1, 0
        out_s.append(seg)
        out_p.append(pos)
        pos += 1
    return out_s, out_p


def test_batches_follow_the_documented_order(shards):
    loader = PackedLoader(shards, seq_len=S, batch_size=B, seed=5, prefetch=0, num_epochs=2)
    stream = loader.index.read_all().astype(np.int64)
    n_windows = (stream.size - 1) // S
    assert loader.plan.num_windows == n_windows and len(loader.index.shards) > 1
    batches = list(loader)
    assert len(batches) == 2 * loader.steps_per_epoch == 2 * (n_windows // B)
    for epoch in range(2):
        order = np.random.default_rng([5, epoch]).permutation(n_windows)
        for step in range(loader.steps_per_epoch):
            batch = batches[epoch * loader.steps_per_epoch + step]
            for row, window in enumerate(order[step * B : (step + 1) * B]):
                chunk = stream[window * S : window * S + S + 1]
                np.testing.assert_array_equal(batch["inputs"][row], chunk[:-1])
                np.testing.assert_array_equal(batch["targets"][row], chunk[1:])
                seg, pos = reference_segments(chunk[:-1].tolist(), 256)
                np.testing.assert_array_equal(batch["segment_ids"][row], seg)
                np.testing.assert_array_equal(batch["positions"][row], pos)
    assert all(v.dtype == np.int32 and v.shape == (B, S) for b in batches for v in b.values())
    assert not np.array_equal(batches[0]["inputs"], batches[loader.steps_per_epoch]["inputs"])


def test_every_token_once_per_epoch_without_drop_last(shards):
    loader = PackedLoader(shards, seq_len=S, batch_size=B, seed=1, drop_last=False,
                          num_epochs=1, prefetch=2)  # fmt: skip
    stream = loader.index.read_all()
    seen = np.zeros(stream.size, dtype=int)  # how often each stream position is a target
    order = loader.epoch_order(0).reshape(-1)
    for batch, windows in zip(loader, order.reshape(-1, B), strict=True):
        for row, window in enumerate(windows):
            valid = batch["segment_ids"][row] > 0
            if window < 0:
                assert not valid.any() and (batch["targets"][row] == IGNORE_INDEX).all()
                continue
            positions = window * S + 1 + np.flatnonzero(valid)
            np.testing.assert_array_equal(batch["targets"][row][valid], stream[positions])
            assert (batch["targets"][row][~valid] == IGNORE_INDEX).all()
            seen[positions] += 1
    assert seen[0] == 0 and (seen[1:] == 1).all()


@pytest.mark.parametrize("prefetch", [0, 3])
def test_resume_is_exact(shards, prefetch):
    def make():
        return PackedLoader(shards, seq_len=S, batch_size=B, seed=9, prefetch=prefetch)

    straight = make()
    expected = [next(straight) for _ in range(2 * straight.steps_per_epoch + 3)]
    first = make()
    for _ in range(straight.steps_per_epoch + 2):  # stop mid-epoch 1
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # JSON-serialisable
    first.close()
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    for want in expected[straight.steps_per_epoch + 2 :]:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    resumed.close()


def test_state_from_other_settings_is_refused(shards):
    state = PackedLoader(shards, seq_len=S, batch_size=B, seed=1, prefetch=0).state_dict()
    other = PackedLoader(shards, seq_len=S, batch_size=B, seed=2, prefetch=0)
    with pytest.raises(DataError, match="seed: saved 1, now 2"):
        other.load_state_dict(state)
    with pytest.raises(DataError, match="resume with the data and settings it was saved with"):
        other.load_state_dict(state)
    grown = {**state, "seed": 2, "tokens": state["tokens"] - 2}  # the text changed since
    with pytest.raises(DataError, match=r"tokens: saved \d+, now \d+ \(the split's tokens: its "):
        other.load_state_dict(grown)
    with pytest.raises(DataError, match="version"):
        other.load_state_dict({**state, "version": 99})
    with pytest.raises(DataError, match="step"):
        other.load_state_dict({**state, "seed": 2, "step": 10_000})


def test_process_shards_are_disjoint_and_complete(shards):
    count = 3
    loaders = [PackedLoader(shards, seq_len=S, batch_size=2, seed=4, process_index=p,
                            process_count=count, prefetch=0) for p in range(count)]  # fmt: skip
    steps = loaders[0].steps_per_epoch
    assert all(loader.steps_per_epoch == steps for loader in loaders)
    orders = [loader.epoch_order(0) for loader in loaders]
    windows = np.concatenate([o.reshape(-1) for o in orders])
    assert len(set(windows.tolist())) == windows.size == steps * 2 * count  # disjoint
    full = np.random.default_rng([4, 0]).permutation(loaders[0].plan.num_windows)
    assert set(windows.tolist()) == set(full[: steps * 2 * count].tolist())  # complete
    for step in range(steps):  # and the batches hold exactly those windows
        for loader, order in zip(loaders, orders, strict=True):
            batch = next(loader)
            stream = loader.stream.gather(order[step].astype(np.int64) * S, S + 1)
            np.testing.assert_array_equal(batch["inputs"], stream[:, :-1])


def test_validation_in_order_covers_every_token(shards):
    batches = list(validation_batches(shards, S, B))
    val = PackedLoader(shards, seq_len=S, batch_size=B, split="validation", shuffle=False,
                       drop_last=False, prefetch=0)  # fmt: skip
    stream = val.index.read_all()
    targets = np.concatenate([b["targets"].reshape(-1) for b in batches])
    np.testing.assert_array_equal(targets[targets != IGNORE_INDEX], stream[1:])
    segments = np.concatenate([b["segment_ids"].reshape(-1) for b in batches])
    assert ((segments == 0) == (targets == IGNORE_INDEX)).all()
    assert val.index.split == "validation" and val.bytes_per_token > 0.9


def test_segments_and_positions_random_rows():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 5, size=(6, 40)).astype(np.int32)  # eos = 0: many boundaries
    seg, pos = segments_and_positions(rows, 0)
    for r in range(6):
        want_seg, want_pos = reference_segments(rows[r].tolist(), 0)
        np.testing.assert_array_equal(seg[r], want_seg)
        np.testing.assert_array_equal(pos[r], want_pos)


def test_token_stream_across_shards_and_past_end():
    arrays = [np.arange(0, 5, dtype=np.uint16), np.arange(5, 7, dtype=np.uint16),
              np.arange(7, 12, dtype=np.uint16)]  # fmt: skip
    stream = TokenStream(arrays)
    out = stream.gather(np.array([0, 3, 4, 8, 10]), 4)
    np.testing.assert_array_equal(
        out, [[0, 1, 2, 3], [3, 4, 5, 6], [4, 5, 6, 7], [8, 9, 10, 11], [10, 11, 0, 0]]
    )


def test_bad_loader_settings(shards, tmp_path):
    with pytest.raises(DataError, match="too little data"):
        PackedLoader(shards, seq_len=10_000, batch_size=1)
    with pytest.raises(ValueError, match="process_index"):
        PackedLoader(shards, seq_len=S, batch_size=B, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="seq_len"):
        PackingPlan(num_tokens=100, seq_len=0, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="prefetch"):
        PackedLoader(shards, seq_len=S, batch_size=B, prefetch=-1)
    with pytest.raises(ValueError, match="num_epochs"):
        PackedLoader(shards, seq_len=S, batch_size=B, num_epochs=0)
    with pytest.raises(DataError, match="no shard index"):
        PackedLoader(tmp_path, seq_len=S, batch_size=B)


def test_loader_errors_reach_the_consumer(shards):
    loader = PackedLoader(shards, seq_len=S, batch_size=B, prefetch=2)
    loader.stream.arrays = []  # break it: the prefetch thread fails
    with pytest.raises(Exception):  # noqa: B017 - any error must surface, not hang
        next(loader)


def test_prefetch_to_device_keeps_exact_state(shards):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from tjx.data import prefetch_to_device

    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    loader = PackedLoader(shards, seq_len=S, batch_size=B, seed=3, prefetch=2)
    reference = PackedLoader(shards, seq_len=S, batch_size=B, seed=3, prefetch=0)
    device_iter = prefetch_to_device(loader, size=3, sharding=sharding)
    for _ in range(4):
        batch = next(device_iter)
        want = next(reference)
        assert isinstance(batch["inputs"], jax.Array) and batch["inputs"].sharding == sharding
        np.testing.assert_array_equal(np.asarray(batch["targets"]), want["targets"])
    assert device_iter.state_dict() == reference.state_dict()  # not the prefetched position
    assert loader.state_dict() != reference.state_dict()
    device_iter.load_state_dict(reference.state_dict())
    np.testing.assert_array_equal(np.asarray(next(device_iter)["inputs"]),
                                  next(reference)["inputs"])  # fmt: skip
    plain = prefetch_to_device(iter([{"x": np.ones(2)}]), size=1)
    assert [float(b["x"].sum()) for b in plain] == [2.0]
    with pytest.raises(TypeError):
        plain.state_dict()
    with pytest.raises(TypeError):
        plain.load_state_dict({})
    with pytest.raises(ValueError, match="size"):
        prefetch_to_device(loader, size=0)
    loader.close()


def test_prefetch_with_a_placement_function(shards):
    """``put`` places each batch itself (a multi-host run assembles the global batch there);
    the yielded batches and the resume state are as without prefetching."""
    from tjx.data import prefetch_to_device

    placed = []

    def put(batch):
        placed.append(batch["inputs"].shape)
        return {k: v * 1 for k, v in batch.items()}

    loader = PackedLoader(shards, seq_len=S, batch_size=B, seed=4, prefetch=0)
    reference = PackedLoader(shards, seq_len=S, batch_size=B, seed=4, prefetch=0)
    device_iter = prefetch_to_device(loader, size=2, put=put)
    assert placed == []  # nothing is pulled before the first request (a restore comes first)
    for _ in range(3):
        np.testing.assert_array_equal(next(device_iter)["inputs"], next(reference)["inputs"])
    assert len(placed) == 5 and device_iter.state_dict() == reference.state_dict()
    with pytest.raises(ValueError, match="not both"):
        prefetch_to_device(loader, put=put, sharding=object())
    loader.close()


class _Clock:
    """A ``time`` stand-in whose ``perf_counter`` advances by ``tick`` seconds per call of the
    consumer's thread; the prefetch thread always reads 0 (its builds take no time). Were they to
    share one clock, how their calls interleave would decide the votes (the switching test failed
    on some runs)."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        if threading.current_thread() is not threading.main_thread():
            return 0.0
        self.now += self.tick
        return self.now


def test_an_idle_consumer_never_starts_the_thread(shards, monkeypatch):
    """Away ~1 µs per batch: a thread could hide nothing, so every batch is built in __next__."""
    from tjx.data import loader as loader_mod

    monkeypatch.setattr(loader_mod, "time", _Clock(1e-6))
    loader = PackedLoader(shards, seq_len=S, batch_size=B, seed=4, prefetch=2)
    for _ in range(5 * loader_mod.SWITCH_AFTER):
        next(loader)
        assert loader._thread is None


def test_switching_between_thread_and_inline_yields_the_same_batches(shards, monkeypatch):
    """A busy consumer (1 s away per batch) starts the thread; waiting as long as a build stops
    it; and so on, with doubling patience. Whatever the mode, the batches are prefetch=0's."""
    from tjx.data import loader as loader_mod

    monkeypatch.setattr(loader_mod, "time", _Clock(1.0))
    loader = PackedLoader(shards, seq_len=S, batch_size=B, seed=6, prefetch=2, num_epochs=3)
    reference = PackedLoader(shards, seq_len=S, batch_size=B, seed=6, prefetch=0, num_epochs=3)
    started = 0
    for want in reference:
        had_thread = loader._thread is not None
        got = next(loader)
        started += loader._thread is not None and not had_thread
        assert all(np.array_equal(got[k], want[k]) for k in want)
        assert loader.state_dict() == reference.state_dict()
    with pytest.raises(StopIteration):
        next(loader)
    assert started >= 2 and loader._switches >= 1  # both directions, more than once
