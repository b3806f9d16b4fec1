"""Chat templates: read from a tokenizer folder, rendered in a sandbox, the assistant's spans."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from tjx.data import ChatTemplate, DataError
from tjx_data_tests._helpers import WORDS
from tjx_data_tests.conftest import CHAT_TEMPLATE

# The fixture template with its assistant text marked, as transformers' training templates do.
TAGGED = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start|>' + m['role'] + '\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] | trim + '<|end|>' }}"
    "{% endgeneration %}{% else %}{{ m['content'] | trim + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start|>assistant\n' }}{% endif %}"
)
SPECIAL = {"bos_token": "<|bos|>", "eos_token": "<|end|>"}


def random_conversation(rng: np.random.Generator) -> list[dict[str, str]]:
    """A system turn or not, then user/assistant turns of random words (padded with spaces)."""
    turns = []
    if rng.random() < 0.5:
        turns.append({"role": "system", "content": " ".join(rng.choice(WORDS, 3))})
    for _ in range(int(rng.integers(1, 4))):
        for role in ("user", "assistant"):
            words = " ".join(rng.choice(WORDS, int(rng.integers(1, 8))))
            turns.append({"role": role, "content": f" {words}\n" if rng.random() < 0.3 else words})
    return turns


def test_a_template_renders_what_it_says_with_the_folders_special_tokens(chat_folder: Path):
    template = ChatTemplate.from_folder(chat_folder)
    assert template.special_tokens == SPECIAL  # the AddedToken form of eos_token read too
    text = template.render(
        [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "yo"}],
        add_generation_prompt=True,
    )
    assert (
        text == "<|bos|><|start|>user\nhi<|end|><|start|>assistant\nyo<|end|><|start|>assistant\n"
    )


def test_generation_blocks_mark_exactly_the_assistants_text():
    rng = np.random.default_rng()
    template = ChatTemplate(TAGGED, SPECIAL)
    assert template.has_generation_tags
    for _ in range(5):
        conversation = random_conversation(rng)
        text, spans = template.render_spans(conversation)
        answers = [
            m["content"].strip() + "<|end|>" for m in conversation if m["role"] == "assistant"
        ]
        assert [text[a:b] for a, b in spans] == answers


def test_without_markers_the_assistant_span_is_its_turn_up_to_the_eos_as_markers_would_say():
    rng = np.random.default_rng()
    plain, tagged = ChatTemplate(CHAT_TEMPLATE, SPECIAL), ChatTemplate(TAGGED, SPECIAL)
    assert not plain.has_generation_tags
    for _ in range(8):
        conversation = random_conversation(rng)
        assert plain.render_spans(conversation) == tagged.render_spans(conversation)


def test_a_template_that_renders_earlier_turns_differently_later_is_refused_without_markers():
    # Like Qwen3's: an assistant turn followed by more turns loses its text.
    template = ChatTemplate(
        "{% for m in messages %}{{ m['role'] }}: {% if m['role'] != 'assistant' or loop.last %}"
        "{{ m['content'] }}{% endif %};{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}",
        {"eos_token": ";"},
    )
    conversation = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2
    with pytest.raises(DataError, match=r"turn 1 differently.*\{% generation %\}"):
        template.render_spans(conversation)


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}",
        "{{ raise_exception.__globals__ }}",
        "{{ messages.append({'role': 'x'}) }}",
        "{% set ns = namespace(__class__=1) %}{{ ns }}",
        "{{ (messages|first).clear() }}",
    ],
)
def test_a_template_cannot_reach_python_internals_or_mutate_its_input(
    attack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    messages = [{"role": "user", "content": "hi"}]
    try:  # either refused, or the unsafe attribute reads as undefined (renders as nothing)
        leaked = ChatTemplate(attack, name="evil.jinja").render(messages)
    except DataError as exc:
        assert "sandbox forbids" in str(exc) or "failed to render" in str(exc)
        leaked = ""
    assert leaked == ""
    assert messages == [{"role": "user", "content": "hi"}]
    assert not (tmp_path / "PWNED").exists()


def test_a_template_that_raises_or_does_not_parse_is_one_error_naming_it():
    with pytest.raises(DataError, match=r"bad.jinja: .*not valid Jinja \(line 2"):
        ChatTemplate("ok\n{% for m in messages %}", name="bad.jinja")
    raising = ChatTemplate("{{ raise_exception('roles must alternate') }}", name="t.jinja")
    with pytest.raises(DataError, match="t.jinja: the chat template failed to render: roles must"):
        raising.render([{"role": "user", "content": "x"}])
    with pytest.raises(DataError, match="chat template is empty"):
        ChatTemplate("  ")


def test_the_folders_jinja_file_wins_over_the_config_and_a_named_list_gives_its_default(
    chat_folder: Path,
):
    (chat_folder / "chat_template.jinja").write_text("FILE {{ messages|length }}")
    assert ChatTemplate.from_folder(chat_folder).render([{"role": "user"}]) == "FILE 1"
    (chat_folder / "chat_template.jinja").unlink()
    config = json.loads((chat_folder / "tokenizer_config.json").read_text())
    config["chat_template"] = [
        {"name": "tool_use", "template": "T"},
        {"name": "default", "template": "D"},
    ]
    (chat_folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert ChatTemplate.from_folder(chat_folder / "tokenizer.json").render([]) == "D"
    config["chat_template"] = [{"name": "tool_use", "template": "T"}]
    (chat_folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="none named 'default'"):
        ChatTemplate.from_folder(chat_folder)


def test_a_folder_without_a_template_or_at_all_says_so(tmp_path: Path):
    from tjx_data_tests.conftest import write_chat_folder

    folder = write_chat_folder(tmp_path / "base", template=None)
    with pytest.raises(DataError, match="no chat template"):
        ChatTemplate.from_folder(folder)
    with pytest.raises(DataError, match="no such tokenizer folder"):
        ChatTemplate.from_folder(tmp_path / "missing")
    (folder / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(DataError, match="not readable as JSON"):
        ChatTemplate.from_folder(folder)


def test_a_template_pickles_to_an_equal_one_and_its_fingerprint_follows_text_and_tokens():
    template = ChatTemplate(TAGGED, SPECIAL, name="x")
    again = pickle.loads(pickle.dumps(template))
    conversation = random_conversation(np.random.default_rng())
    assert again.render_spans(conversation) == template.render_spans(conversation)
    assert again.fingerprint == template.fingerprint
    assert ChatTemplate(TAGGED, {**SPECIAL, "eos_token": "x"}).fingerprint != template.fingerprint
    assert ChatTemplate(CHAT_TEMPLATE, SPECIAL).fingerprint != template.fingerprint


def test_templates_get_transformers_globals_and_plain_json_inputs():
    import enum

    class Role(str, enum.Enum):
        USER = "user"

    class Count(enum.IntEnum):
        TWO = 2

    template = ChatTemplate(
        "{{ messages | tojson }}|{{ dict(a=1) | tojson }}|{{ dict.fromkeys(['x']) | tojson }}|"
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
        "{% endfor %}{{ ns.n }}|{{ strftime_now('%Y') | length }}"
    )
    messages = [
        {"role": Role.USER, "content": "é <b>", "n": np.int64(3), "k": Count.TWO,
         "f": np.float32(0.5), "ok": np.bool_(True), "t": ("a",), "o": object()},
    ]  # fmt: skip
    text = template.render(messages)
    assert text == (
        '[{"role": "user", "content": "é <b>", "n": 3, "k": 2, "f": 0.5, "ok": true, '
        '"t": ["a"], "o": "<object>"}]|{"a": 1}|{"x": null}|1|4'
    )
