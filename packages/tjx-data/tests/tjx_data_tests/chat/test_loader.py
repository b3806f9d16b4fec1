"""Encoded chat and preference splits: truncation, packing, resumable loaders, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tjx.data import (
    IGNORE_INDEX,
    ChatEncoder,
    ChatLoader,
    ChatTemplate,
    DataError,
    PreferenceLoader,
    chat_validation_batches,
    load_tokenizer,
    prepare_chat_data,
    write_sequences,
)
from tjx.data.chat.packing import pack_rows
from tjx_data_tests._helpers import WORDS
from tjx_data_tests.chat.test_template import random_conversation


def _encoder(folder: Path) -> ChatEncoder:
    return ChatEncoder(load_tokenizer(folder), ChatTemplate.from_folder(folder))


def _pairs(rng: np.random.Generator, n: int) -> list[dict]:
    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS, k))

    return [{"prompt": [{"role": "user", "content": words(int(rng.integers(1, 12)))}],
             "chosen": [{"role": "assistant", "content": words(int(rng.integers(1, 6)))}],
             "rejected": [{"role": "assistant", "content": words(int(rng.integers(1, 6)))}]}
            for _ in range(n)]  # fmt: skip


@pytest.fixture
def chat_split(chat_folder: Path, tmp_path: Path) -> tuple[Path, ChatEncoder, list]:
    rng = np.random.default_rng()
    rows = [{"messages": random_conversation(rng)} for _ in range(40)]
    enc = _encoder(chat_folder)
    write_sequences(rows, enc, tmp_path / "chat", kind="chat", split="train", source="t")
    return tmp_path / "chat", enc, rows


def _segments(batch: dict, row: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) of each segment of a batch row."""
    seg = batch["segment_ids"][row]
    return [(batch["inputs"][row][seg == s], batch["targets"][row][seg == s])
            for s in range(1, int(seg.max()) + 1)]  # fmt: skip


def test_packing_lets_exactly_the_assistants_tokens_into_the_loss_each_once_an_epoch(chat_split):
    folder, enc, rows = chat_split
    loader = ChatLoader(folder, seq_len=64, batch_size=3, drop_last=False, num_epochs=1, seed=5)
    expected = {}
    for row in rows:
        out = enc.encode(row)
        expected[tuple(out.ids[:-1][:64].tolist())] = np.where(out.mask[1:], out.ids[1:], -100)
    seen = []
    for batch in loader:
        assert {k: v.shape for k, v in batch.items()} == {k: (3, 64) for k in batch}
        for r in range(3):
            padding = batch["segment_ids"][r] == 0
            assert (batch["targets"][r][padding] == IGNORE_INDEX).all()
            for inputs, targets in _segments(batch, r):
                key = tuple(inputs.tolist())
                np.testing.assert_array_equal(targets, expected[key][: len(targets)])
                seen.append(key)
            positions = batch["positions"][r][~padding]
            starts = np.flatnonzero(positions == 0)
            assert starts.size == batch["segment_ids"][r].max()
    assert sorted(seen) == sorted(expected)  # every conversation once, none split
    assert loader.truncation.dropped == 0


def test_a_conversation_longer_than_a_row_keeps_its_start_and_a_prompt_too_long_is_dropped(
    chat_folder: Path, tmp_path: Path
):
    enc = _encoder(chat_folder)
    long_answer = {
        "messages": [
            {"role": "user", "content": "alpha"},
            {"role": "assistant", "content": " ".join(["beta"] * 80)},
        ]
    }
    long_prompt = {"messages": [{"role": "user", "content": " ".join(["gamma"] * 80)},
                                {"role": "assistant", "content": "delta"}]}  # fmt: skip
    write_sequences([long_answer, long_prompt], enc, tmp_path / "s", kind="chat", split="train",
                    source="t")  # fmt: skip
    loader = ChatLoader(tmp_path / "s", seq_len=16, batch_size=1, drop_last=False, num_epochs=1)
    assert (loader.truncation.truncated, loader.truncation.dropped) == (2, 1)
    (batch,) = list(loader)
    ids = enc.encode(long_answer).ids
    np.testing.assert_array_equal(batch["inputs"][0], ids[:16])
    assert (batch["segment_ids"] == 1).all() and (batch["targets"][0] != IGNORE_INDEX).any()


def test_best_fit_packing_holds_every_sequence_once_within_the_row_and_fills_rows():
    rng = np.random.default_rng()
    positions = rng.integers(0, 40, 300)
    order, starts = pack_rows(positions, 48)
    assert sorted(order.tolist()) == np.flatnonzero(positions > 0).tolist()
    used = np.add.reduceat(positions[order], starts[:-1])
    assert used.max() <= 48
    assert used.sum() / (48 * (starts.size - 1)) > 0.9


def test_a_resumed_loader_gives_the_batches_an_uninterrupted_one_would(chat_split):
    folder, _, _ = chat_split
    settings = dict(seq_len=32, batch_size=2, seed=3)
    whole = ChatLoader(folder, **settings)
    first = [next(whole) for _ in range(whole.steps_per_epoch + 3)]
    part = ChatLoader(folder, **settings)
    for _ in range(whole.steps_per_epoch + 1):
        next(part)
    state = json.loads(json.dumps(part.state_dict()))
    again = ChatLoader(folder, **settings)
    again.load_state_dict(state)
    for expected in first[whole.steps_per_epoch + 1 :]:
        got = next(again)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    other = ChatLoader(folder, **settings)
    with pytest.raises(DataError, match=r"template: saved 'x', now '.*'"):
        other.load_state_dict({**state, "template": "x"})
    with pytest.raises(DataError, match="seed: saved 9, now 3"):
        other.load_state_dict({**state, "seed": 9})


def test_processes_read_disjoint_rows_that_make_up_the_global_batch(chat_split):
    folder, _, _ = chat_split
    one = ChatLoader(folder, seq_len=32, batch_size=4, seed=1)
    parts = [ChatLoader(folder, seq_len=32, batch_size=2, seed=1, process_index=p,
                        process_count=2) for p in range(2)]  # fmt: skip
    for _ in range(one.steps_per_epoch):
        whole = next(one)
        halves = [next(p) for p in parts]
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
    # Elastic: process 0's state of the 2-process run continues a 1-process run with the same
    # global batch exactly where the two left off.
    from tjx.data import restore_loader_state

    resumed = ChatLoader(folder, seq_len=32, batch_size=4, seed=1)
    restore_loader_state(resumed, parts[0].state_dict(), process_index=0)
    expected, got = next(one), next(resumed)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_a_loader_refuses_a_split_of_another_tokenizer_template_or_kind(chat_split, tmp_path):
    folder, enc, _ = chat_split
    with pytest.raises(DataError, match="made with tokenizer"):
        ChatLoader(folder, seq_len=8, batch_size=1, tokenizer="0" * 32)
    with pytest.raises(DataError, match="rendered with chat template"):
        ChatLoader(folder, seq_len=8, batch_size=1, template="other")
    with pytest.raises(DataError, match="holds chat data, not preference data"):
        PreferenceLoader(folder, seq_len=8, batch_size=1)
    with pytest.raises(DataError, match="too little data"):
        ChatLoader(folder, seq_len=512, batch_size=64)
    with pytest.raises(DataError, match="all 40 chat row.*lose every trained token.*raise seq_len"):
        ChatLoader(folder, seq_len=2, batch_size=1)
    ok = ChatLoader(folder, seq_len=32, batch_size=1, tokenizer=enc.tokenizer,
                    template=enc.template.fingerprint)  # type: ignore[union-attr]  # fmt: skip
    assert ok.steps_per_epoch > 0
    (folder / "mask.bin").write_bytes(b"\0")
    with pytest.raises(DataError, match="mask.bin: missing or not"):
        ChatLoader(folder, seq_len=8, batch_size=1)


def test_preference_rows_pair_chosen_and_rejected_and_score_only_completions(
    chat_folder: Path, tmp_path: Path
):
    enc = _encoder(chat_folder)
    rows = _pairs(np.random.default_rng(), 12)
    write_sequences(rows, enc, tmp_path / "p", kind="preference", split="train", source="t")
    batches = list(PreferenceLoader(tmp_path / "p", seq_len=48, batch_size=5, drop_last=False,
                                    num_epochs=1, shuffle=False))  # fmt: skip
    assert [b["inputs"].shape for b in batches] == [(10, 48), (10, 48), (10, 48)]
    flat = {k: np.concatenate([b[k] for b in batches])[:24] for k in batches[0]}
    for i, row in enumerate(rows):
        pair = enc.encode_pair(row)
        for r, side in ((2 * i, pair.chosen), (2 * i + 1, pair.rejected)):
            n = side.ids.size - 1
            np.testing.assert_array_equal(flat["inputs"][r, :n], side.ids[:-1])
            np.testing.assert_array_equal(
                flat["targets"][r, :n], np.where(side.mask[1:], side.ids[1:], IGNORE_INDEX)
            )
            assert (flat["targets"][r, n:] == IGNORE_INDEX).all()
    assert (np.concatenate([b["segment_ids"] for b in batches])[24:] == 0).all()  # padding pairs


def test_a_pair_whose_prompt_fills_the_row_is_dropped_and_counted(chat_folder, tmp_path):
    enc = _encoder(chat_folder)
    rows = _pairs(np.random.default_rng(), 3)
    rows[1]["prompt"][0]["content"] = " ".join(["alpha"] * 60)
    write_sequences(rows, enc, tmp_path / "p", kind="preference", split="train", source="t")
    loader = PreferenceLoader(tmp_path / "p", seq_len=40, batch_size=1, shuffle=False)
    assert (loader.truncation.dropped, loader.truncation.rows, loader.steps_per_epoch) == (1, 2, 2)
    first = next(loader)
    np.testing.assert_array_equal(first["inputs"][0, :5], enc.encode_pair(rows[0]).chosen.ids[:5])


def test_prepare_holds_out_every_tenth_row_of_a_local_file_and_names_bad_lines(
    chat_folder: Path, tmp_path: Path
):
    rng = np.random.default_rng()
    rows = [{"messages": random_conversation(rng)} for _ in range(25)]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    enc = _encoder(chat_folder)
    prepared = prepare_chat_data(str(data), enc, tmp_path / "cache")
    assert prepared.held_out
    assert {s: i.rows for s, i in prepared.indexes.items()} == {"train": 23, "validation": 2}
    val = list(chat_validation_batches(prepared.dirs["validation"], 256, 4))
    inputs = [tuple(x.tolist()) for b in val for r in range(4) for x, _ in _segments(b, r)]
    expected = [tuple(enc.encode(rows[i]).ids[:-1][:256].tolist()) for i in (9, 19)]
    assert sorted(inputs) == sorted(expected)
    again = prepare_chat_data(str(data), enc, tmp_path / "cache")
    assert again.root == prepared.root
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"^\S*bad.jsonl: line 2: invalid JSON"):
        prepare_chat_data(str(bad), enc, tmp_path / "cache", splits=("train",))
    empty = tmp_path / "none.jsonl"
    empty.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n" * 3)
    with pytest.raises(DataError, match="1 row.* cannot be cut into train and validation"):
        prepare_chat_data(str(empty), enc, tmp_path / "cache", splits=("train",))
    empty.write_text("".join(json.dumps(r) + "\n" for r in [{"text": "x"}, *rows]))
    with pytest.raises(DataError, match=r"none.jsonl: line 1: expected a 'messages' column"):
        prepare_chat_data(str(empty), enc, tmp_path / "cache", splits=("train",))
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    with pytest.raises(DataError, match="rows .*not text files"):
        prepare_chat_data(str(text), enc, tmp_path / "cache")


def test_rows_come_from_parquet_split_folders_and_the_hub_name_says_offline(
    chat_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import datasets

    from tjx.data import load_rows
    from tjx.data.chat.prepare import split_rows

    rng = np.random.default_rng()
    rows = [{"messages": random_conversation(rng)} for _ in range(4)]
    for split in ("train", "validation"):
        (tmp_path / "d" / split).mkdir(parents=True)
        datasets.Dataset.from_list(rows[:2] if split == "train" else rows[2:]).to_parquet(
            str(tmp_path / "d" / split / "part.parquet")
        )
    prepared = prepare_chat_data(str(tmp_path / "d"), _encoder(chat_folder), tmp_path / "cache")
    assert not prepared.held_out
    assert {s: i.rows for s, i in prepared.indexes.items()} == {"train": 2, "validation": 2}
    assert [r["messages"] for r in load_rows(str(tmp_path / "d"), split="validation")] == [
        r["messages"] for r in rows[2:]
    ]
    single = tmp_path / "one.jsonl"
    single.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n")
    with pytest.raises(DataError, match="has no split 'test'"):
        split_rows(str(single), "test")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe\n")
    with pytest.raises(DataError, match="line 1 is not valid UTF-8"):
        list(load_rows(str(bad)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="could not load 'someone/chats'.*offline mode is on"):
        load_rows("someone/chats")
    with pytest.raises(ValueError, match="kind must be one of"):
        prepare_chat_data(str(single), _encoder(chat_folder), tmp_path / "c", kind="sft")
