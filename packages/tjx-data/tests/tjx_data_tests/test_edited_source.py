"""A source edited since a loader's state was saved is refused on resume, even when its token
count did not change (the shards' digest); a copy of the same text is the same data; states and
shards made before the digest resume as they did."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tjx.data import (
    ByteTokenizer,
    ChatLoader,
    DataError,
    PackedLoader,
    pretokenize,
    write_sequences,
)
from tjx.data.mixture_loader import MixtureLoader
from tjx.data.shards import load_index
from tjx_data_tests._helpers import random_docs
from tjx_data_tests.chat.test_loader import _encoder
from tjx_data_tests.chat.test_template import random_conversation

S, B = 8, 2


#: Small chunks and shards: a split of several shards, so the digest spans files.
SMALL = {"num_workers": 1, "progress": False, "chunk_chars": 200, "shard_tokens": 300}


def _shards(docs: list[str], root: Path) -> Path:
    pretokenize(docs, ByteTokenizer(), root, split="train", **SMALL)
    return root


def _state_after(folder: Path, steps: int) -> dict:
    loader = PackedLoader(folder, seq_len=S, batch_size=B, seed=1, prefetch=0)
    for _ in range(steps):
        next(loader)
    state = json.loads(json.dumps(loader.state_dict()))  # as a checkpoint keeps it
    loader.close()
    return state


def _without_digest(split: Path) -> None:
    """Make ``split`` look made before tjx-data 0.21: its index has no digest."""
    data = json.loads((split / "index.json").read_text())
    del data["digest"]
    (split / "index.json").write_text(json.dumps(data))


@pytest.fixture
def docs() -> list[str]:
    return random_docs(int(np.random.default_rng().integers(1 << 30)), 40, max_words=12)


def test_the_digest_is_the_sha256_of_the_token_stream_as_stored(docs, tmp_path):
    index = load_index(_shards(docs, tmp_path), "train")
    assert len(index.shards) > 1
    assert index.digest == hashlib.sha256(index.read_all().tobytes()).hexdigest()


def test_a_source_reordered_to_the_same_token_count_is_refused_on_resume(docs, tmp_path):
    state = _state_after(_shards(docs, tmp_path / "a"), 3)
    edited = _shards(docs[::-1], tmp_path / "b")  # the same documents in another order
    loader = PackedLoader(edited, seq_len=S, batch_size=B, seed=1, prefetch=0)
    assert loader.state_dict()["tokens"] == state["tokens"]
    with pytest.raises(DataError) as err:
        loader.load_state_dict(state)
    message = str(err.value)
    assert f"digest: saved '{state['digest'][:12]}...', now '" in message
    assert "its source changed since the state was saved, though not its token count" in message
    assert message.endswith("resume with the data and settings it was saved with")
    assert "tokens:" not in message
    # A copy of the same text (another folder, other times) is the same data: it resumes.
    copy = PackedLoader(_shards(docs, tmp_path / "c"), seq_len=S, batch_size=B, seed=1,
                        prefetch=0)  # fmt: skip
    copy.load_state_dict(state)
    assert copy.state_dict()["step"] == 3


def test_a_changed_token_count_is_said_once_not_again_as_a_digest(docs, tmp_path):
    state = _state_after(_shards(docs, tmp_path / "a"), 1)
    grown = PackedLoader(_shards([*docs, "one more"], tmp_path / "b"), seq_len=S, batch_size=B,
                         seed=1, prefetch=0)  # fmt: skip
    with pytest.raises(DataError, match=r"tokens: saved \d+, now \d+") as err:
        grown.load_state_dict(state)
    assert "digest" not in str(err.value)


def test_states_and_shards_made_before_the_digest_resume_as_they_did(docs, tmp_path):
    state = _state_after(_shards(docs, tmp_path / "a"), 2)
    edited = _shards(docs[::-1], tmp_path / "b")
    # A state saved before the digest: nothing to compare it with, so it resumes.
    old_state = {k: v for k, v in state.items() if k != "digest"}
    PackedLoader(edited, seq_len=S, batch_size=B, seed=1, prefetch=0).load_state_dict(old_state)
    # Shards made before it: the same.
    _without_digest(edited / "train")
    loader = PackedLoader(edited, seq_len=S, batch_size=B, seed=1, prefetch=0)
    assert loader.state_dict()["digest"] is None
    loader.load_state_dict(state)
    assert loader.state_dict()["step"] == 2


def test_a_mixture_names_the_source_that_changed(tmp_path):
    rng = np.random.default_rng()
    docs = [random_docs(int(rng.integers(1 << 30)), n, max_words=12) for n in (30, 20)]
    spec = [("web", _shards(docs[0], tmp_path / "w"), 1.0),
            ("code", _shards(docs[1], tmp_path / "c"), 1.0)]  # fmt: skip
    first = MixtureLoader(spec, seq_len=S, batch_size=4, seed=2)
    next(first)
    state = json.loads(json.dumps(first.state_dict()))
    spec[1] = ("code", _shards(docs[1][::-1], tmp_path / "c2"), 1.0)
    edited = MixtureLoader(spec, seq_len=S, batch_size=4, seed=2)
    with pytest.raises(DataError) as err:
        edited.load_state_dict(state)
    message = str(err.value)
    assert "code: its source changed since the state was saved" in message
    assert "web:" not in message and "resume with the sources and settings" in message
    # A mixture state saved before the digests resumes.
    edited.load_state_dict({k: v for k, v in state.items() if k != "digests"})
    assert edited.step == 1


def test_a_chat_split_whose_rows_were_reordered_is_refused_on_resume(chat_folder, tmp_path):
    rng = np.random.default_rng()
    rows = [{"messages": random_conversation(rng)} for _ in range(30)]
    enc = _encoder(chat_folder)
    made = {}
    for name, these in (("a", rows), ("b", rows[::-1])):
        made[name] = write_sequences(these, enc, tmp_path / name, kind="chat", split="train",
                                     source="t")  # fmt: skip
    tokens, mask, offsets = made["a"].open()
    reference = hashlib.sha256()
    for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        reference.update(np.int64(end - start).tobytes())
        reference.update(tokens[start:end].tobytes() + mask[start:end].tobytes())
    assert made["a"].digest == reference.hexdigest()
    first = ChatLoader(tmp_path / "a", seq_len=32, batch_size=2, seed=3)
    next(first)
    state = json.loads(json.dumps(first.state_dict()))
    edited = ChatLoader(tmp_path / "b", seq_len=32, batch_size=2, seed=3)
    assert edited.state_dict()["tokens"] == state["tokens"]
    with pytest.raises(DataError, match=r"chat loader state does not match this loader: digest"):
        edited.load_state_dict(state)
    edited.load_state_dict({k: v for k, v in state.items() if k != "digest"})
