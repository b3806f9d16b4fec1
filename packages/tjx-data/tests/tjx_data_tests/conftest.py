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
