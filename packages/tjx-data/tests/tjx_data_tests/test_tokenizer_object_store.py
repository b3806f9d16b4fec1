"""A run directory in object storage keeps the run's trained tokenizer (real gs:// and s3://
servers on 127.0.0.1): saved whole, not rewritten when unchanged, loaded back by its URL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

# The test servers and the endpoint settings a tjx run makes (tjx-ckpt's), for this test only.
import tjx_teststores as teststores

from tjx.ckpt import storage
from tjx.data import DataError, load_tokenizer
from tjx.data.bpe import save_tokenizer, train_bpe


@pytest.fixture(scope="module", params=["gs", "s3"])
def store(request: pytest.FixtureRequest) -> Iterator[teststores.LocalStore]:
    with teststores.using(request.param) as server:  # one server per scheme per process
        storage.configure()
        yield server


def test_a_trained_tokenizer_round_trips_through_a_store(store: teststores.LocalStore) -> None:
    tok = train_bpe(["to be or not to be, that is the question"] * 20, 300)
    folder = store.url(uuid.uuid4().hex, "tokenizer")
    url = save_tokenizer(tok, folder)
    assert url == f"{folder}/tokenizer.json"
    fs = storage.filesystem(url)
    stamp = fs.info(url).get("generation") or fs.info(url).get("ETag")
    assert save_tokenizer(tok, folder) == url  # the same tokenizer: not written again
    assert (fs.info(url).get("generation") or fs.info(url).get("ETag")) == stamp
    back = load_tokenizer(url)
    assert back.fingerprint == tok.fingerprint
    assert back.encode("to be or not") == tok.encode("to be or not")
    with pytest.raises(DataError, match="no such tokenizer file"):
        load_tokenizer(store.url("nothing", "tokenizer.json"))
