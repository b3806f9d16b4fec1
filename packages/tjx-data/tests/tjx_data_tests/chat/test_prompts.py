"""GRPO's prompts: a prompts split keeps each row, and the loader gives each kept prompt once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tjx.data import (
    ChatEncoder,
    ChatTemplate,
    DataError,
    PromptLoader,
    arithmetic_rows,
    chat_validation_batches,
    load_sequences,
    load_tokenizer,
    read_prompt_rows,
    write_sequences,
)


def _encoder(folder: Path) -> ChatEncoder:
    return ChatEncoder(load_tokenizer(folder), ChatTemplate.from_folder(folder))


def test_each_prompt_is_the_rendered_generation_prompt_and_its_row_is_kept(chat_folder, tmp_path):
    rng = np.random.default_rng()
    rows = list(arithmetic_rows(30, seed=int(rng.integers(1 << 20)), kind="prompts"))
    rows[3] = {"prompt": "What is 1 + 1?", "answer": "2"}  # plain text prompts too
    enc = _encoder(chat_folder)
    index = write_sequences(rows, enc, tmp_path / "p", kind="prompts", split="train", source="t")
    assert read_prompt_rows(index) == rows
    loader = PromptLoader(tmp_path / "p", seq_len=64, batch_size=4, drop_last=False,
                          num_epochs=1, seed=3)  # fmt: skip
    seen = []
    for batch in loader:
        for ids, n, row in zip(batch["prompts"], batch["lengths"], batch["row_ids"], strict=True):
            if row < 0:
                assert n == 0 and not ids.any()
                continue
            want = (enc.encode_prompt(rows[row]["prompt"]) if row != 3
                    else enc.encode_prompt_row(rows[3]).ids)  # fmt: skip
            np.testing.assert_array_equal(ids[:n], want)
            assert not ids[n:].any()
            seen.append(int(row))
    assert sorted(seen) == list(range(30))  # every prompt once an epoch
    # The ids are the template's text with its generation prompt: the model answers next.
    text = enc.tokenizer.tokenizer.decode(list(enc.encode_prompt(rows[0]["prompt"])),
                                          skip_special_tokens=False)  # fmt: skip
    assert enc.template is not None
    rendered = enc.template.render(rows[0]["prompt"], add_generation_prompt=True)
    assert text == rendered and rendered.endswith("assistant\n")


def test_prompts_longer_than_seq_len_are_left_out_and_none_left_is_refused(chat_folder, tmp_path):
    rows = [{"prompt": "short", "answer": "1"}, {"prompt": "a much longer prompt " * 8}]
    enc = _encoder(chat_folder)
    write_sequences(rows, enc, tmp_path / "p", kind="prompts", split="train", source="t")
    short = len(enc.encode_prompt_row(rows[0]).ids)
    loader = PromptLoader(tmp_path / "p", seq_len=short, batch_size=1, num_epochs=1)
    assert loader.truncation.dropped == 1 and loader.steps_per_epoch == 1
    assert next(loader)["row_ids"].tolist() == [0]
    with pytest.raises(DataError, match="are longer than seq_len tokens"):
        PromptLoader(tmp_path / "p", seq_len=short - 1, batch_size=1)
    held = list(chat_validation_batches(tmp_path / "p", short, 1))
    assert [b["row_ids"].tolist() for b in held] == [[0]]


def test_a_prompts_row_without_a_prompt_or_with_a_bad_one_is_named(chat_folder, tmp_path):
    enc = _encoder(chat_folder)
    for row, needle in [({"question": "x"}, "needs a 'prompt'"),
                        ({"prompt": 3}, "must be a string or a list of messages"),
                        ("text", "must be a JSON object")]:  # fmt: skip
        with pytest.raises(DataError, match=needle):
            write_sequences([row], enc, tmp_path / needle[:5], kind="prompts", split="train",
                            source="t")  # fmt: skip
    chat = tmp_path / "chat"
    write_sequences([{"messages": [{"role": "user", "content": "a"},
                                   {"role": "assistant", "content": "b"}]}],
                    enc, chat, kind="chat", split="train", source="t")  # fmt: skip
    with pytest.raises(DataError, match="holds chat data, not prompts"):
        read_prompt_rows(load_sequences(chat))
    with pytest.raises(DataError, match="not prompts data"):
        PromptLoader(chat, seq_len=8, batch_size=1)
