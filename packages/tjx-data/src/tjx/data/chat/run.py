"""The data of a post-training run: chat conversations (SFT), preference pairs (DPO) or prompts
(GRPO).

`prepare_chat_run_data` is `prepare_run_data`'s twin for ``data.format`` ``chat``,
``preference`` and ``prompts``: a Hugging Face tokenizer folder with a chat template (or
``"bpe"``: a byte-level BPE with ChatML's special tokens and template, trained on the source's own
text and cached), the
encoded splits (`prepare_chat_data`), and a `ChatRunData` with `RunData`'s interface: loaders of
this process's rows, the first validation batches, ``data.json``. There are no bytes per token
(the loss counts the assistant's tokens only, so bits/byte does not apply).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tjx.data.bpe import load_tokenizer, train_bpe
from tjx.data.cache import Staging, atomic_prepare, cache_root, staged
from tjx.data.chat.encode import ChatEncoder
from tjx.data.chat.loader import (
    ChatLoader,
    PreferenceLoader,
    PromptLoader,
    chat_validation_batches,
)
from tjx.data.chat.prepare import load_rows, prepare_chat_data
from tjx.data.chat.tasks import CHATML_SPECIALS, GENERATED, prepare_generated, write_chatml_folder
from tjx.data.chat.template import ChatTemplate
from tjx.data.errors import DataError
from tjx.data.prepare import shard_key
from tjx.data.run.tokenizer import Names, fault
from tjx.data.sources.local import Compressed

__all__ = ["DATA_FORMATS", "ChatRunData", "prepare_chat_run_data"]

#: ``data.format``: plain text windows, chat conversations (SFT), preference pairs (DPO), prompts
#: with their rows' answers (GRPO: the completions are sampled during training).
DATA_FORMATS = ("text", "chat", "preference", "prompts")
#: The loader of each post-training format's splits.
_LOADERS = {"chat": ChatLoader, "preference": PreferenceLoader, "prompts": PromptLoader}


@dataclass(frozen=True)
class ChatRunData:
    """What a post-training run reads (see the module docstring); `RunData`'s interface."""

    source: str
    kind: str
    encoder: ChatEncoder
    tokenizer_dir: Path
    train_dir: Path
    val_dir: Path
    seq_len: int
    bytes_per_token: None = None
    mixture: None = None
    images: None = None

    @property
    def tokenizer(self) -> Any:
        """The Hugging Face tokenizer."""
        return self.encoder.tokenizer

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary."""
        return int(self.encoder.tokenizer.vocab_size)

    @property
    def template(self) -> str:
        """The chat template's fingerprint (a resume with another template is refused)."""
        return self.encoder.template.fingerprint if self.encoder.template else "plain"

    def _loader(self, folder: Path, batch_size: int, **kw: Any) -> Any:
        return _LOADERS[self.kind](folder, seq_len=self.seq_len, batch_size=batch_size, **kw)

    def train_loader(
        self,
        batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        names: Names = None,
    ) -> ChatLoader | PreferenceLoader | PromptLoader:
        """The resumable, shuffled loader of this process's ``batch_size // process_count``
        rows (pairs for preference data, prompts for prompt data) of each global batch."""
        try:  # a split too small for one batch names batch_size (the loader's own check)
            return self._loader(
                self.train_dir,
                batch_size // process_count,
                seed=seed,
                shuffle=shuffle,
                process_index=process_index,
                process_count=process_count,
            )
        except DataError as err:
            raise fault(names, err.argument or "source", str(err)) from None

    def validation_batches(
        self,
        batch_size: int,
        max_batches: int | None = None,
        *,
        process_index: int = 0,
        process_count: int = 1,
    ) -> Iterator[dict[str, Any]]:
        """The first ``max_batches`` held-out batches, always the same (the last one padded)."""
        batches = chat_validation_batches(
            self.val_dir,
            self.seq_len,
            batch_size // process_count,
            process_index=process_index,
            process_count=process_count,
        )
        return itertools.islice(batches, max_batches)

    @classmethod
    def from_description(cls, info: dict[str, Any]) -> ChatRunData:
        """The `ChatRunData` a chat or preference run's ``data.json`` describes (`describe`), its
        tokenizer folder and chat template loaded again (what the evaluator scores and prompts).

        Raises
        ------
        DataError
            Not a chat or preference description, a tokenizer folder that no longer loads, or a
            template whose fingerprint is no longer the one the run trained with
            (``argument="tokenizer"``).
        """
        kind = info.get("format")
        if kind not in _LOADERS:
            raise DataError(f"not a chat, preference or prompts run's data (format {kind!r})")
        folder = Path(str(info.get("tokenizer") or ""))
        encoder = ChatEncoder(load_tokenizer(folder), ChatTemplate.from_folder(folder))
        data = cls(
            str(info.get("source") or ""),
            str(kind),
            encoder,
            folder,
            Path(str(info.get("train_dir") or "")),
            Path(str(info.get("val_dir") or "")),
            seq_len=int(info["seq_len"]),
        )
        saved = info.get("template")
        if saved is not None and saved != data.template:
            raise DataError(
                f"{folder}: its chat template is not the one the run trained with (fingerprint "
                f"{saved}, now {data.template}); restore the folder's template",
                argument="tokenizer",
            )
        return data

    def describe(self, run_dir: str | Path) -> dict[str, Any]:
        """``data.json``: the format, the splits, the tokenizer folder and template."""
        del run_dir  # the tokenizer folder is the run's own (or the cache's) already
        return {
            "source": self.source,
            "format": self.kind,
            "tokenizer": str(self.tokenizer_dir),
            "template": self.template,
            "train_dir": str(self.train_dir),
            "val_dir": str(self.val_dir),
            "bytes_per_token": None,
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
        }


def _rows_text(source: str, compressed: Compressed) -> Iterator[str]:
    """Every string in the source's train rows (what a BPE for it learns from)."""

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    for row in load_rows(source, split="train", compressed=compressed):
        yield " ".join(strings(row))


def chatml_tokenizer(
    source: str,
    vocab: int,
    cache_dir: str | Path | None,
    *,
    staging: Staging | None = None,
    compressed: Compressed = True,
) -> Path:
    """A ChatML tokenizer folder trained on ``source``'s rows (made once in the cache).

    Returns the folder's place in the cache; a new one is built in ``staging`` when given (read
    it at ``staging.where(folder)`` until its owner publishes it), else published at once.
    """

    def build(staging: Path) -> None:
        texts = ["user assistant system", *_rows_text(source, compressed)]
        tok = train_bpe(texts, vocab, special_tokens=CHATML_SPECIALS, show_progress=False)
        write_chatml_folder(tok, staging)

    key = f"{shard_key(source, compressed=compressed)}-{vocab}"
    folder = cache_root(cache_dir) / "chatml-bpe" / key
    with staged(staging) as stage:
        atomic_prepare(stage.place(folder), build)
    return folder


def _encoder(folder: Path, built: Path, messages_field: str) -> ChatEncoder:
    """The encoder of the tokenizer folder built at ``built`` (its staged copy, or ``folder``
    itself), named by ``folder``: messages and the sequences' index name its place."""
    tokenizer = load_tokenizer(built)
    template = ChatTemplate.from_folder(built)
    if built != folder:
        tokenizer.name = str(folder)
        template.name = str(folder / Path(template.name).name)
    return ChatEncoder(tokenizer, template, messages_field=messages_field)


def prepare_chat_run_data(
    source: str,
    tokenizer: str,
    *,
    kind: str,
    seq_len: int,
    cache_dir: str | Path | None = None,
    tokenizer_vocab: int = 2048,
    messages_field: str = "messages",
    names: Names = None,
    staging: Staging | None = None,
    compressed: Compressed = True,
) -> ChatRunData:
    """Tokenizer, chat template and encoded splits of a chat, preference or prompts source.

    ``source`` is a local ``.jsonl``/``.parquet`` source, a hub dataset, or a generated task
    (``"arithmetic"``, ``"reverse"``: `tjx.data.chat.tasks`, made offline). ``tokenizer`` is a
    Hugging Face folder with a chat template, or ``"bpe"`` (ChatML, trained on the source). Errors
    are `DataError`s naming the argument at fault (``names`` words them): a row the template cannot
    render because the sandbox stopped it, or a chat row without template, names ``tokenizer``. What
    is missing (a ChatML tokenizer, the encoded splits) is built in ``staging`` when given (its
    owner publishes it), else published here once all is made: a refused source leaves the cache as
    it was. ``compressed``: a local folder's compressed files are read (`load_rows`).
    """
    if kind not in _LOADERS:
        raise ValueError(f"kind must be chat, preference or prompts, got {kind!r}")
    generated = source in GENERATED
    path = str(prepare_generated(source, kind, cache_root(cache_dir))) if generated else source
    # A generated task has one tokenizer (learnt from its chat rows), so a DPO run on its pairs
    # (or a GRPO run on its prompts) reads the ids an SFT run on its conversations learnt.
    chat = str(prepare_generated(source, "chat", cache_root(cache_dir))) if generated else path
    with staged(staging) as stage:
        try:
            folder = (
                chatml_tokenizer(
                    chat, tokenizer_vocab, cache_dir, staging=stage, compressed=compressed
                )
                if tokenizer == "bpe"
                else Path(tokenizer).expanduser()
            )
            if not stage.where(folder).is_dir():
                raise DataError(
                    f"chat data needs a Hugging Face tokenizer folder with a chat template (or "
                    f"bpe); got {tokenizer!r}",
                    argument="tokenizer",
                )
            encoder = _encoder(folder, stage.where(folder), messages_field)
        except DataError as err:
            raise fault(names, "tokenizer", str(err).removeprefix("tokenizer: ")) from None
        try:
            prepared = prepare_chat_data(
                path, encoder, cache_dir, kind=kind, staging=stage, compressed=compressed
            )
        except DataError as err:  # the template's own fault (the sandbox stopped it) is its key
            key = "tokenizer" if err.argument == "tokenizer" else "source"
            raise fault(names, key, str(err)) from None
    dirs = prepared.dirs
    return ChatRunData(
        source, kind, encoder, folder, dirs["train"], dirs["validation"], seq_len=seq_len
    )
