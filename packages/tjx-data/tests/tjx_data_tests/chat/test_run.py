"""A post-training run's data: the generated arithmetic task, the ChatML BPE made for a source, and
`ChatRunData` (RunData's interface over the chat loaders)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tjx.data import (
    ARITHMETIC,
    GENERATED,
    REVERSE,
    REVERSE_LONG,
    REVERSE_LONG_LENGTHS,
    ChatRunData,
    DataError,
    arithmetic_rows,
    prepare_arithmetic,
    prepare_chat_run_data,
    prepare_generated,
    reverse_long_rows,
    reverse_rows,
)
from tjx.data.chat.store import load_sequences, read_prompt_rows

#: reverse_rows' first row with seed 0, as it was before its lengths were a setting.
FIRST_REVERSE = "Reverse: w v g z f"
NAMES = {"tokenizer": "data.tokenizer", "source": "data.source", "batch_size": "data.batch_size"}


def test_the_arithmetic_rows_are_seeded_and_every_rejected_answer_is_wrong():
    chat = list(arithmetic_rows(200, seed=3))
    assert chat == list(arithmetic_rows(200, seed=3)) != list(arithmetic_rows(200, seed=4))
    for row in chat:
        question, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        a, op, b = question.removeprefix("What is ").removesuffix("?").split()
        assert int(answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    pairs = list(arithmetic_rows(500, seed=1, kind="preference"))
    for row in pairs:
        a, op, b = row["prompt"][0]["content"].removeprefix("What is ").removesuffix("?").split()
        right = int(a) + int(b) if op == "+" else int(a) - int(b)
        assert int(row["chosen"][0]["content"]) == right
        assert int(row["rejected"][0]["content"]) != right
    swapped = [r for r in pairs if abs(int(r["rejected"][0]["content"])) not in
               (abs(int(r["chosen"][0]["content"]) + d) for d in (-1, 1, 10))]  # fmt: skip
    assert swapped  # the digit-swap near miss occurs


def test_the_reverse_rows_are_seeded_reversals_and_every_rejected_answer_is_wrong():
    seed = int(np.random.default_rng().integers(1 << 20))
    chat = list(reverse_rows(300, seed=seed))
    assert chat == list(reverse_rows(300, seed=seed)) != list(reverse_rows(300, seed=seed + 1))
    for row in chat:
        letters = row["messages"][0]["content"].removeprefix("Reverse: ").split(" ")
        assert 3 <= len(letters) <= 5 and all(len(c) == 1 and c.islower() for c in letters)
        assert row["messages"][1]["content"] == " ".join(letters[::-1])
    pairs = list(reverse_rows(500, seed=seed, kind="preference"))
    for row in pairs:
        letters = row["prompt"][0]["content"].removeprefix("Reverse: ").split(" ")
        right, wrong = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert right == " ".join(letters[::-1]) != wrong
        if len(set(letters)) > 1:  # a near miss: the same letters (one repeated: see below)
            assert sorted(wrong.split(" ")) == sorted(letters)
    prompts = list(reverse_rows(50, seed=seed, kind="prompts"))
    assert [p["answer"] for p in prompts] == [c["messages"][1]["content"] for c in chat[:50]]
    # Held-out rows are new strings: of 400 validation rows few repeat a training row's.
    rows = list(reverse_rows(4000, seed=0))
    train = {r["messages"][0]["content"] for i, r in enumerate(rows) if i % 10}
    held = [r["messages"][0]["content"] for i, r in enumerate(rows) if i % 10 == 0]
    assert sum(q in train for q in held) < 20
    with pytest.raises(ValueError, match="kind must be one of"):
        next(reverse_rows(1, kind="pairs"))


def test_the_long_reversal_task_draws_its_own_lengths_and_the_short_one_is_unchanged():
    seed = int(np.random.default_rng().integers(1 << 20))
    lo, hi = REVERSE_LONG_LENGTHS
    chat = list(reverse_long_rows(400, seed=seed))
    lengths = {len(r["messages"][0]["content"].removeprefix("Reverse: ").split(" ")) for r in chat}
    assert lengths == set(range(lo, hi + 1))  # every length drawn, none outside
    for row in chat:
        letters = row["messages"][0]["content"].removeprefix("Reverse: ").split(" ")
        assert row["messages"][1]["content"] == " ".join(letters[::-1])
    for row in reverse_long_rows(300, seed=seed, kind="preference"):
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    assert chat == list(reverse_rows(400, seed=seed, lengths=REVERSE_LONG_LENGTHS))
    # The 3-5 letter task keeps its rows (runs made before the lengths were a setting read them).
    assert list(reverse_rows(50, seed=seed)) == list(reverse_rows(50, seed=seed, lengths=(3, 5)))
    assert next(reverse_rows(1, seed=0))["messages"][0]["content"] == FIRST_REVERSE
    for bad in ((1, 4), (5, 4)):
        with pytest.raises(ValueError, match="lengths must be"):
            next(reverse_rows(1, lengths=bad))


def test_a_row_of_one_repeated_letter_gets_a_near_miss_that_differs():
    # "a a a" reversed is itself, and so is every swap of its letters: the rejected answer changes
    # one letter instead (swapping until it differed never ended: CI's stop 65 hung here).
    found = []
    for seed in range(200):
        for row in reverse_rows(2000, seed=seed, kind="preference"):
            letters = row["prompt"][0]["content"].removeprefix("Reverse: ").split(" ")
            if len(set(letters)) == 1:
                found.append((letters, row["rejected"][0]["content"].split(" ")))
        if len(found) >= 3:
            break
    assert len(found) >= 3
    for letters, wrong in found:
        changed = [i for i, (a, b) in enumerate(zip(letters, wrong, strict=True)) if a != b]
        assert len(changed) == 1 and wrong[changed[0]].islower()


def test_each_generated_source_is_prepared_once_under_its_name(tmp_path):
    assert set(GENERATED) == {ARITHMETIC, REVERSE, REVERSE_LONG}
    path = prepare_generated(REVERSE, "prompts", tmp_path)
    assert path.parent.name == "reverse-prompts-v1" and path == prepare_generated(
        REVERSE, "prompts", tmp_path
    )
    lines = path.read_text().splitlines()
    assert len(lines) == 4000 and json.loads(lines[0]) == next(reverse_rows(1, kind="prompts"))
    run = prepare_chat_run_data(
        REVERSE, "bpe", kind="prompts", seq_len=32, cache_dir=tmp_path, tokenizer_vocab=300
    )
    chat = prepare_chat_run_data(
        REVERSE, "bpe", kind="chat", seq_len=32, cache_dir=tmp_path, tokenizer_vocab=300
    )
    assert run.tokenizer_dir == chat.tokenizer_dir  # one tokenizer per task: SFT's is GRPO's
    held = read_prompt_rows(load_sequences(run.val_dir))
    assert len(held) == 400 and all(json.dumps(row) in lines for row in held)  # every 10th row


def test_a_chat_run_reads_the_generated_task_with_a_chatml_bpe_made_once(tmp_path):
    first = prepare_chat_run_data(
        ARITHMETIC, "bpe", kind="chat", seq_len=32, cache_dir=tmp_path, tokenizer_vocab=300
    )
    again = prepare_chat_run_data(
        ARITHMETIC, "bpe", kind="chat", seq_len=32, cache_dir=tmp_path, tokenizer_vocab=300
    )
    assert again.tokenizer_dir == first.tokenizer_dir and again.template == first.template
    assert (first.tokenizer_dir / "tokenizer_config.json").is_file()
    assert first.vocab_size <= 300 and first.bytes_per_token is None and first.mixture is None
    loader = first.train_loader(8, seed=0, process_index=1, process_count=2)
    batch = next(loader)
    assert batch["inputs"].shape == (4, 32)
    trained = batch["targets"] != -100
    assert 0 < trained.sum() < (batch["segment_ids"] > 0).sum()
    val = list(first.validation_batches(8, 3))
    assert len(val) == 3
    info = first.describe(tmp_path / "run")
    assert info["format"] == "chat" and info["tokenizer"] == str(first.tokenizer_dir)
    json.dumps(info)
    pairs = prepare_chat_run_data(
        ARITHMETIC, first.tokenizer_dir.as_posix(), kind="preference", seq_len=32,
        cache_dir=tmp_path,
    )  # fmt: skip
    rows = next(pairs.train_loader(4, seed=0))
    assert rows["inputs"].shape == (8, 32)  # chosen, rejected of each pair
    chosen, rejected = rows["targets"][0::2], rows["targets"][1::2]
    assert not np.array_equal(chosen, rejected)
    assert prepare_arithmetic("chat", tmp_path).is_file()
    # "bpe" on the generated pairs is the tokenizer an SFT run on its conversations learnt
    bpe_pairs = prepare_chat_run_data(
        ARITHMETIC, "bpe", kind="preference", seq_len=32, cache_dir=tmp_path, tokenizer_vocab=300
    )
    assert bpe_pairs.tokenizer_dir == first.tokenizer_dir
    # Built aside and published: the encoder and the splits' index name the tokenizer's place.
    assert first.encoder.tokenizer.name == str(first.tokenizer_dir)
    assert first.encoder.template is not None
    assert first.encoder.template.name == str(first.tokenizer_dir / "tokenizer_config.json")
    assert load_sequences(first.train_dir).tokenizer["name"] == str(first.tokenizer_dir)
    assert not list(tmp_path.rglob(".*staged-*")) and not list(tmp_path.rglob("*.lock"))


def test_bad_chat_run_inputs_are_one_data_error_naming_the_setting(tmp_path):
    with pytest.raises(DataError, match=r"^data\.tokenizer: chat data needs a Hugging Face"):
        prepare_chat_run_data(
            ARITHMETIC, "byte", kind="chat", seq_len=32, cache_dir=tmp_path, names=NAMES
        )
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    rows.write_text(rows.read_text() * 3)
    with pytest.raises(DataError, match=r"^data\.source: .*no assistant turn"):
        prepare_chat_run_data(
            str(rows), "bpe", kind="chat", seq_len=32, cache_dir=tmp_path, names=NAMES
        )
    data = prepare_chat_run_data(ARITHMETIC, "bpe", kind="chat", seq_len=32, cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"^data\.batch_size: .*fewer than one global batch"):
        data.train_loader(10**6, seed=0, names=NAMES)
    with pytest.raises(ValueError, match="kind must be chat, preference or prompts"):
        prepare_chat_run_data(ARITHMETIC, "bpe", kind="text", seq_len=32)


def test_a_chat_runs_description_reads_back_and_names_a_changed_template(tmp_path):
    made = prepare_chat_run_data(ARITHMETIC, "bpe", kind="chat", seq_len=32, cache_dir=tmp_path)
    info = json.loads(json.dumps(made.describe(tmp_path)))  # as data.json holds it
    back = ChatRunData.from_description(info)
    assert (back.kind, back.seq_len, back.val_dir, back.template) == (
        "chat",
        32,
        made.val_dir,
        made.template,
    )
    messages = [{"role": "user", "content": "What is 1 + 2?"}]
    np.testing.assert_array_equal(
        back.encoder.encode_prompt(messages), made.encoder.encode_prompt(messages)
    )
    with pytest.raises(DataError, match="not the one the run trained with") as err:
        ChatRunData.from_description({**info, "template": "0" * 16})
    assert err.value.argument == "tokenizer"
    with pytest.raises(DataError, match="not a chat, preference or prompts run"):
        ChatRunData.from_description({**info, "format": "text"})


def test_a_prompts_run_loads_prompts_with_the_chat_rows_tokenizer(tmp_path):
    chat = prepare_chat_run_data(ARITHMETIC, "bpe", kind="chat", seq_len=32, cache_dir=tmp_path)
    made = prepare_chat_run_data(ARITHMETIC, "bpe", kind="prompts", seq_len=32, cache_dir=tmp_path)
    assert made.tokenizer_dir == chat.tokenizer_dir  # GRPO reads the ids SFT learnt
    batch = next(made.train_loader(4, seed=0))
    assert set(batch) == {"prompts", "lengths", "row_ids"} and batch["prompts"].shape == (4, 32)
    rows = read_prompt_rows(load_sequences(made.train_dir))
    row = rows[int(batch["row_ids"][0])]
    want = made.encoder.encode_prompt(row["prompt"])
    np.testing.assert_array_equal(batch["prompts"][0, : batch["lengths"][0]], want)
    back = ChatRunData.from_description(json.loads(json.dumps(made.describe(tmp_path))))
    assert back.kind == "prompts" and back.train_dir == made.train_dir
