"""tjx-data's chat rendering and assistant mask against transformers' ``apply_chat_template``.

For Llama 3's, Qwen2's and Qwen2.5's real templates (fixtures, `_chat_fixtures`) and their twins
with ``{% generation %}`` markers, on fixed and fresh random conversations: the ids equal
transformers' token for token; with markers the assistant mask equals transformers'
``return_assistant_tokens_mask`` output; without markers (where transformers gives no mask at
all) tjx's mask equals transformers' mask of the marked twin. One peer process for the module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests_integration._chat_fixtures import CONVERSATIONS, TEMPLATES, make_tokenizer_folder
from tests_integration._hf_peer import run_peer
from tjx.data import ChatEncoder, ChatTemplate, load_tokenizer

WORDS = "the quick brown fox What is capital Paris legs spider Eight 42 Café naïve 東京".split()


def _random_conversations(n: int) -> list[list[dict[str, str]]]:
    rng = np.random.default_rng()
    out = []
    for _ in range(n):
        turns = [{"role": "system", "content": "Answer briefly."}] if rng.random() < 0.5 else []
        for _ in range(int(rng.integers(1, 4))):
            for role in ("user", "assistant"):
                text = " ".join(rng.choice(WORDS, int(rng.integers(1, 9))))
                turns.append({"role": role, "content": text + ("\n" if rng.random() < 0.3 else "")})
        out.append(turns)
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("chat-peer")
    conversations = CONVERSATIONS + _random_conversations(4)
    folders = {}
    for name, (family, plain, tagged) in TEMPLATES.items():
        for kind, template in (("plain", plain), ("tagged", tagged)):
            folders[name, kind] = make_tokenizer_folder(work / f"{name}-{kind}", family, template)
    run_peer(
        [{"chat": [str(f) for f in folders.values()], "conversations": conversations,
          "out": str(work / "peer.json")}],  # fmt: skip
        work,
    )
    peer = json.loads((work / "peer.json").read_text())
    ours = {}
    for key, folder in folders.items():
        encoder = ChatEncoder(load_tokenizer(folder), ChatTemplate.from_folder(folder))
        ours[key] = [encoder.encode({"messages": c}) for c in conversations]
    return {"peer": {k: peer[str(f)] for k, f in folders.items()}, "ours": ours}


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_rendered_ids_and_the_assistant_mask_equal_transformers_token_for_token(
    rendered: dict[str, Any], name: str
):
    for kind in ("plain", "tagged"):
        for ours, peer in zip(rendered["ours"][name, kind], rendered["peer"][name, kind],
                              strict=True):  # fmt: skip
            assert ours.ids.tolist() == peer["ids"]
    for ours, peer, twin in zip(rendered["ours"][name, "tagged"], rendered["peer"][name, "tagged"],
                                rendered["ours"][name, "plain"], strict=True):  # fmt: skip
        assert ours.mask.astype(int).tolist() == peer["mask"]
        assert 0 < sum(peer["mask"]) < len(peer["mask"])
        # Without markers transformers has no mask; tjx's prefix rule gives the marked one.
        assert twin.mask.astype(int).tolist() == peer["mask"]
    assert all(sum(p["mask"]) == 0 for p in rendered["peer"][name, "plain"])


def test_the_fixture_tokenizers_are_the_ones_transformers_read(tmp_path: Path):
    # A guard on the fixture itself: Llama's folder adds BOS to plain text, Qwen's does not.
    llama = load_tokenizer(make_tokenizer_folder(tmp_path / "l", "llama3", TEMPLATES["llama3"][1]))
    qwen = load_tokenizer(make_tokenizer_folder(tmp_path / "q", "qwen2", TEMPLATES["qwen2"][1]))
    assert llama.tokenizer.encode("hi").ids[0] == llama.tokenizer.token_to_id("<|begin_of_text|>")
    assert qwen.tokenizer.encode("hi").ids[0] != qwen.tokenizer.token_to_id("<|im_start|>")
