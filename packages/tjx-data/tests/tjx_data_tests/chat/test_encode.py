"""Chat and preference rows → ids and the mask of what the model learns to write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tjx.data import ByteTokenizer, ChatEncoder, ChatTemplate, DataError, load_tokenizer
from tjx_data_tests.chat.test_template import random_conversation


def encoder(folder: Path) -> ChatEncoder:
    return ChatEncoder(load_tokenizer(folder), ChatTemplate.from_folder(folder))


def masked_text(enc: ChatEncoder, ids: np.ndarray, mask: np.ndarray) -> str:
    return enc.tokenizer.decode(ids[mask].tolist())


def test_a_conversations_mask_is_every_assistant_answer_and_its_end_of_turn_token(
    chat_folder: Path,
):
    enc = encoder(chat_folder)
    rng = np.random.default_rng()
    for _ in range(6):
        conversation = random_conversation(rng)
        out = enc.encode({"messages": conversation})
        answers = "".join(
            m["content"].strip() + "<|end|>" for m in conversation if m["role"] == "assistant"
        )
        assert masked_text(enc, out.ids, out.mask) == answers
        text = enc.template.render(conversation)  # type: ignore[union-attr]
        assert out.ids.tolist() == enc.tokenizer.encode(text)


def test_a_chat_prompt_completion_trains_only_the_completions_assistant_turns(chat_folder: Path):
    enc = encoder(chat_folder)
    prompt = [{"role": "user", "content": "alpha"}, {"role": "assistant", "content": "beta"},
              {"role": "user", "content": "gamma"}]  # fmt: skip
    completion = [{"role": "assistant", "content": "delta zeta"}]
    out = enc.encode({"prompt": prompt, "completion": completion})
    assert masked_text(enc, out.ids, out.mask) == "delta zeta<|end|>"
    whole = enc.encode({"messages": prompt + completion})
    np.testing.assert_array_equal(out.ids, whole.ids)  # the same text; only the mask differs
    assert masked_text(enc, whole.ids, whole.mask) == "beta<|end|>delta zeta<|end|>"


def test_a_plain_completion_trains_on_itself_and_the_eos(chat_folder: Path):
    enc = encoder(chat_folder)
    out = enc.encode({"prompt": "alpha beta ", "completion": "gamma delta"})
    assert enc.tokenizer.decode(out.ids.tolist()) == "alpha beta gamma delta<|end|>"
    assert masked_text(enc, out.ids, out.mask).endswith("delta<|end|>")
    assert not out.mask[0] and out.mask[-1]
    # A completion that already ends with the EOS text gets no second one.
    again = enc.encode({"prompt": "alpha beta ", "completion": "gamma delta<|end|>"})
    np.testing.assert_array_equal(again.ids, out.ids)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"content": "hi"}]}, r"messages\[0\] has no string 'role'"),
        ({"messages": [{"role": "assistant", "content": 3}]}, "'content' must be a string"),
        ({"text": "hi"}, "expected a 'messages' column or 'prompt' and 'completion'"),
        ({"prompt": "hi", "completion": ""}, "the completion is empty"),
        ({"prompt": "hi", "completion": [{"role": "assistant"}]}, "must both be strings or both"),
        ({"prompt": [{"role": "user", "content": "a"}], "completion": [{"role": "user",
                                                                        "content": "b"}]},
         "completion has no assistant turn"),  # fmt: skip
        ("just text", "a row must be a JSON object"),
    ],
)
def test_a_bad_row_is_one_error_naming_the_row_and_the_problem(
    chat_folder: Path, row: object, message: str
):
    with pytest.raises(DataError, match=rf"row 7: .*{message}"):
        encoder(chat_folder).encode(row, "row 7")  # type: ignore[arg-type]


def test_a_template_that_fails_on_a_row_names_the_row_and_the_template(chat_folder: Path):
    tok = load_tokenizer(chat_folder)
    strict = ChatTemplate(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('start with a user') }}"
        "{% endif %}{% for m in messages %}{% generation %}{{ m['content'] }}{% endgeneration %}"
        "{% endfor %}",
        name="strict.jinja",
    )
    with pytest.raises(DataError, match="row 3: strict.jinja: .*failed to render: start with a"):
        ChatEncoder(tok, strict).encode({"messages": [{"role": "assistant", "content": "x"}]},
                                        "row 3")  # fmt: skip
    with pytest.raises(DataError, match="row 0: a chat row needs a chat template"):
        ChatEncoder(tok).encode({"messages": [{"role": "assistant", "content": "x"}]}, "row 0")


def test_chat_data_refuses_a_tokenizer_without_offsets():
    with pytest.raises(DataError, match="needs a Hugging Face tokenizer"):
        ChatEncoder(ByteTokenizer())


@pytest.mark.parametrize("chat", [False, True])
def test_a_preference_pair_shares_its_prompt_and_masks_only_each_completion(
    chat_folder: Path, chat: bool
):
    enc = encoder(chat_folder)
    if chat:
        prompt = [{"role": "user", "content": "alpha beta"}]
        chosen = [{"role": "assistant", "content": "gamma"}]
        rejected = [{"role": "assistant", "content": "delta zeta theta"}]
        ends = ("gamma<|end|>", "delta zeta theta<|end|>")
    else:
        prompt, chosen, rejected = "alpha beta", " gamma", " delta zeta theta"
        ends = (" gamma<|end|>", " delta zeta theta<|end|>")
    pair = enc.encode_pair({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    keep = int(np.argmax(pair.chosen.mask))
    assert keep == int(np.argmax(pair.rejected.mask)) > 0
    np.testing.assert_array_equal(pair.chosen.ids[:keep], pair.rejected.ids[:keep])
    for side, end in zip((pair.chosen, pair.rejected), ends, strict=True):
        assert side.mask[keep:].all() and not side.mask[:keep].any()
        assert enc.tokenizer.decode(side.ids[keep:].tolist()).endswith(end.strip())


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "a", "chosen": "b"}, r"missing \['rejected'\]"),
        ({"prompt": "a", "chosen": "", "rejected": "c"}, "the chosen completion is empty"),
        ({"prompt": "a", "chosen": "b", "rejected": []}, "the rejected completion is empty"),
        ({"prompt": "a", "chosen": [{"role": "assistant", "content": "b"}], "rejected": "c"},
         "must all be strings or all lists"),  # fmt: skip
    ],
)
def test_a_bad_preference_row_is_one_error(chat_folder: Path, row: dict, message: str):
    with pytest.raises(DataError, match=rf"row 2: .*{message}"):
        encoder(chat_folder).encode_pair(row, "row 2")


def test_a_chat_prompt_is_the_conversation_so_far_and_generation_stops_at_the_end_of_turn(
    chat_folder: Path,
):
    enc = encoder(chat_folder)
    messages = [{"role": "user", "content": "alpha beta"}]
    prompt = enc.encode_prompt(messages)
    answer = enc.encode({"messages": [*messages, {"role": "assistant", "content": "gamma"}]})
    np.testing.assert_array_equal(answer.ids[: prompt.size], prompt)
    assert not answer.mask[: prompt.size].any() and answer.mask[prompt.size :].all()
    assert enc.end_of_turn_id == enc.tokenizer.tokenizer.token_to_id("<|end|>")
    assert answer.ids[-1] == enc.end_of_turn_id
    with pytest.raises(DataError, match="prompt: messages must be a non-empty list"):
        enc.encode_prompt([])
