"""One tokenizer protocol for tjx: HF ``tokenizers`` models and a byte-level tokenizer.

Every tokenizer gives ``encode_batch``, ``decode``, ``vocab_size``, ``eos_id``, a ``fingerprint``
(sha256 of what decides the ids: vocabulary, merges, added tokens) and ``count_bytes`` (UTF-8
bytes per text, for bits/byte).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import tokenizers as hf

from tjx.data.errors import DataError

__all__ = [
    "EOS_CANDIDATES",
    "ByteTokenizer",
    "HFTokenizer",
    "Tokenizer",
    "encode_prompts",
    "fingerprint_of",
]

EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[SEP]")
#: What `Tokenizer.decode` writes for an id its vocabulary does not hold (U+FFFD, as for bytes
#: that are not UTF-8).
REPLACEMENT = "\ufffd"


@runtime_checkable
class Tokenizer(Protocol):
    """What tjx.data needs from a tokenizer."""

    name: str

    @property
    def vocab_size(self) -> int:
        """Number of ids (every id is in ``[0, vocab_size)``)."""
        ...

    @property
    def eos_id(self) -> int:
        """The id written after every document (the packing separator)."""
        ...

    @property
    def fingerprint(self) -> str:
        """A hash of the vocabulary and rules: equal fingerprints encode text identically."""
        ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text (no EOS added)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; never fails: an id it does not know is U+FFFD."""
        ...

    def count_bytes(self, texts: Sequence[str]) -> list[int]:
        """UTF-8 bytes of each text, for bits/byte."""
        ...


def fingerprint_of(payload: Any) -> str:
    """sha256 (hex, first 16 bytes) of a JSON-able payload in canonical form."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def encode_prompts(tokenizer: Tokenizer, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Prompts as one right-padded id array and their lengths, for batched generation.

    Parameters
    ----------
    tokenizer : Tokenizer
        Encodes the prompts (no EOS added).
    prompts : sequence of str
        At least one; an empty prompt becomes the EOS id alone (a model continues from a token).

    Returns
    -------
    (ids, lengths)
        int32 ``[n, max_len]`` with each prompt's ids first and 0 after them, and int32 ``[n]``
        — the layout of ``tjx.nn.generate``'s ``prompt_lengths``.
    """
    if not prompts:
        raise DataError("no prompts to encode")
    rows = [row or [tokenizer.eos_id] for row in tokenizer.encode_batch(list(prompts))]
    lengths = np.asarray([len(row) for row in rows], np.int32)
    ids = np.zeros((len(rows), int(lengths.max())), np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, lengths


def _count_bytes(texts: Sequence[str]) -> list[int]:
    return [len(t.encode("utf-8")) for t in texts]


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255 plus ``eos_id = 256`` (vocab 257): character-level baselines."""

    name = "bytes"
    EOS_TEXT = "<|endoftext|>"

    @property
    def vocab_size(self) -> int:
        """257: the 256 byte values and EOS."""
        return 257

    @property
    def eos_id(self) -> int:
        """256."""
        return 256

    @property
    def fingerprint(self) -> str:
        """A constant: the byte mapping never changes."""
        return fingerprint_of({"type": "bytes", "version": 1, "eos": 256})

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """UTF-8 bytes of each text."""
        return [list(t.encode("utf-8")) for t in texts]

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of one text."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        """Bytes back to text (invalid UTF-8 → U+FFFD); EOS is written as ``<|endoftext|>``.

        An id outside 0..256 (a model with a larger vocabulary, e.g. one started from a Hugging
        Face checkpoint, samples one) is written as U+FFFD too: decoding what a model generated
        never fails (it used to raise `DataError`, and a trainer run lost its last samples).
        """
        out, run = [], bytearray()
        for i in ids:
            if 0 <= i < 256:
                run.append(i)
                continue
            out.append(run.decode("utf-8", errors="replace"))
            out.append(self.EOS_TEXT if i == 256 else REPLACEMENT)
            run = bytearray()
        return "".join(out) + run.decode("utf-8", errors="replace")

    def count_bytes(self, texts: Sequence[str]) -> list[int]:
        """UTF-8 bytes per text."""
        return _count_bytes(texts)

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (ByteTokenizer, ())


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` behind the tjx protocol.

    Parameters
    ----------
    tokenizer:
        The HF tokenizer (BPE, WordPiece, Unigram, ...).
    name:
        A label (``"gpt2"``, a path, a hub name).
    eos_token:
        The end-of-document token; default: the first of ``EOS_CANDIDATES`` in the vocabulary.
    """

    def __init__(self, tokenizer: hf.Tokenizer, *, name: str, eos_token: str | None = None):
        self.tokenizer = tokenizer
        self.name = name
        candidates = (eos_token,) if eos_token else EOS_CANDIDATES
        for token in candidates:
            eos = tokenizer.token_to_id(token)
            if eos is not None:
                self.eos_token, self._eos_id = token, int(eos)
                break
        else:
            raise DataError(
                f"tokenizer {name!r} has no end-of-document token among {list(candidates)}; "
                "pass eos_token= naming one in its vocabulary"
            )
        self._fingerprint: str | None = None

    @property
    def vocab_size(self) -> int:
        """Size of the id space, added tokens included."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def eos_id(self) -> int:
        """Id of the end-of-document token."""
        return self._eos_id

    @property
    def fingerprint(self) -> str:
        """Stable hash of vocabulary, merges, added tokens and EOS (not of the JSON layout)."""
        if self._fingerprint is None:
            data = json.loads(self.tokenizer.to_str())
            model = data.get("model", {})
            vocab = model.get("vocab")
            if isinstance(vocab, dict):  # BPE / WordPiece: token -> id, canonical as id order
                vocab = sorted(vocab.items(), key=lambda kv: kv[1])
            # tokenizers < 0.20 wrote merges as "a b", newer as ["a", "b"]: hash one form.
            merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
            added = [(t["id"], t["content"], t["special"]) for t in data.get("added_tokens", [])]
            payload = {"type": model.get("type"), "vocab": vocab, "merges": merges}
            payload |= {"added": added, "eos": self._eos_id}
            self._fingerprint = fingerprint_of(payload)
        return self._fingerprint

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text (no special tokens added; EOS is appended by the shard writer)."""
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        """Ids of one text."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids, special tokens kept (so EOS shows as its token text).

        An id the vocabulary does not hold (a model's padded vocabulary is larger than its
        tokenizer's) is written as U+FFFD, where ``tokenizers`` would drop it without a word.
        """
        ids = [int(i) for i in ids]
        size = self.vocab_size
        if all(0 <= i < size for i in ids):  # the usual case: one call
            return str(self.tokenizer.decode(ids, skip_special_tokens=False))
        out, run = [], []
        for i in ids:
            if 0 <= i < size and self.tokenizer.id_to_token(i) is not None:
                run.append(i)
                continue
            out += [str(self.tokenizer.decode(run, skip_special_tokens=False)), REPLACEMENT]
            run = []
        return "".join(out) + str(self.tokenizer.decode(run, skip_special_tokens=False))

    def count_bytes(self, texts: Sequence[str]) -> list[int]:
        """UTF-8 bytes per text."""
        return _count_bytes(texts)

    def save(self, path: str | Path) -> Path:
        """Write ``tokenizer.json`` (into ``path`` if it is a folder or has no ``.json`` suffix).

        Returns
        -------
        Path
            The file written; ``load_tokenizer`` of it gives the same fingerprint.
        """
        target = Path(path)
        if target.suffix != ".json":
            target.mkdir(parents=True, exist_ok=True)
            target = target / "tokenizer.json"
        self.tokenizer.save(str(target))
        return target

    def __getstate__(self) -> dict[str, Any]:
        return {"json": self.tokenizer.to_str(), "name": self.name, "eos": self.eos_token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            hf.Tokenizer.from_str(state["json"]), name=state["name"], eos_token=state["eos"]
        )
