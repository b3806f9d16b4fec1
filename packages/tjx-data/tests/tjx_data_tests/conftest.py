"""Shared fixtures: small corpora written by the tests, and one session-wide download cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tjx_data_tests._helpers import random_docs


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One TJX_CACHE for the whole session: PyPI downloads happen at most once per run."""
    path = tmp_path_factory.mktemp("tjx-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("TJX_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture
def text_corpus(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder with train/ (.txt and .jsonl) and validation/ files; returns (root, train docs)."""
    root = tmp_path / "corpus"
    (root / "train").mkdir(parents=True)
    (root / "validation").mkdir()
    docs = random_docs(1, 6)
    (root / "train" / "a.txt").write_text(docs[0], encoding="utf-8")
    (root / "train" / "b.txt").write_text(docs[1], encoding="utf-8")
    with open(root / "train" / "c.jsonl", "w", encoding="utf-8") as out:
        for doc in docs[2:5]:
            out.write(json.dumps({"text": doc, "id": 1}) + "\n")
    (root / "train" / ".hidden.txt").write_text("ignored", encoding="utf-8")
    (root / "train" / "notes.csv").write_text("ignored", encoding="utf-8")
    (root / "validation" / "v.txt").write_text(docs[5], encoding="utf-8")
    return root, docs[:5]


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start|>' + m['role'] + '\n' }}"
    "{{ m['content'] | trim + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start|>assistant\n' }}{% endif %}"
)


def write_chat_folder(folder: Path, template: str | None = CHAT_TEMPLATE) -> Path:
    """A tokenizer folder: a small byte-level BPE with chat special tokens, and ``template``."""
    import tokenizers as hf

    from tjx_data_tests._helpers import WORDS

    model = hf.ByteLevelBPETokenizer()
    text = " ".join(WORDS * 8) + " user assistant system hello world\n\n"
    specials = ["<|endoftext|>", "<|bos|>", "<|start|>", "<|end|>"]
    model.train_from_iterator(
        [text] * 4, vocab_size=320, min_frequency=2, show_progress=False, special_tokens=specials
    )
    folder.mkdir(parents=True, exist_ok=True)
    model._tokenizer.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<|bos|>", "eos_token": {"content": "<|end|>", "special": True}}
    if template is not None:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def chat_folder(tmp_path: Path) -> Path:
    """A tokenizer folder with a chat template (see `write_chat_folder`)."""
    return write_chat_folder(tmp_path / "tok")
