"""A run's data settings (`DataConfig`): where text comes from and how it is cut into batches.

Every field is interpreted here in tjx.data (the source and its format, the tokenizer, the shard
cache, the loader's batches, a weighted mixture), so it is declared here once, with its help,
choices and bounds (`setting`); the trainer's ``data:`` section is this class. Rules between
fields (`check_max_tokens`, `check_mixture`) are the caller's to run, so that its messages can
name its own keys.
"""

# `setting()` returns dataclasses.field objects (with validation metadata).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass

from tjx.core.fields import setting
from tjx.data.chat.run import DATA_FORMATS
from tjx.data.mixture import ON_EXHAUSTED

__all__ = ["DataConfig"]


@dataclass(frozen=True)
class DataConfig:
    """Where text comes from and how it is cut into batches."""

    source: str = setting("shakespeare", help="built-in name, hub name or local path")
    format: str = setting(
        "text",
        choices=DATA_FORMATS,
        help="text (windows of documents), chat (SFT: the loss on assistant tokens only), "
        "preference (DPO pairs: prompt, chosen, rejected) or prompts (GRPO: prompt, answer)",
    )
    messages_field: str = setting("messages", help="chat data: the column of a row's turns")
    text_field: str = setting(
        "text",
        help="text data: the field of a JSON Lines row, or the Parquet or hub column, that holds "
        "a document's text (The Stack's: content); a mixture entry may give its own",
    )
    tokenizer: str = setting(
        "byte", help="byte | gpt2 | bpe | a tokenizer path (chat data: a folder with a template)"
    )
    tokenizer_vocab: int = setting(2048, min=260, max=1 << 20, help="vocab of a trained bpe")
    cache_dir: str | None = setting(
        None,
        help="local folder of pre-tokenized shards (default ~/.cache/tjx/data; no URL)",
        resumable=True,
    )
    seq_len: int = setting(128, min=2, max=1 << 20, help="tokens per training sequence")
    batch_size: int = setting(16, min=1, help="global batch (sequences per optimizer step)")
    num_workers: int = setting(1, min=1, max=256, help="processes tokenizing during preparation")
    shuffle: bool = setting(True, help="shuffle the windows each epoch")
    compressed: bool = setting(
        True,
        help="read a local folder's or glob's compressed files (.jsonl.gz, .json.gz, .txt.gz; "
        ".bz2, .xz; .zst as data.zstd says); a run started before tjx-data 0.23 read none and "
        "resumes so",
    )
    zstd: bool = setting(
        True,
        help="with data.compressed, read zstd files too (.jsonl.zst: The Pile's, SlimPajama's); "
        "a run started before tjx-data 0.24 read none and resumes so",
    )
    max_tokens: int | None = setting(
        None, min=1, help="prepare at most this many tokens per split (of each mixture source)"
    )
    sources: list[dict] | None = setting(
        None,
        help="a weighted mixture instead of data.source: [{source: ..., weight: 3, name: web}, "
        "...] (tjx.data.check_mixture); val_loss/<name> per source",
    )
    on_exhausted: str = setting(
        "repeat",
        choices=ON_EXHAUSTED,
        help="a mixture source that has given every window: repeat (a new epoch) or drop",
    )
    exclude: list[int] = setting(
        lambda: [],
        factory=True,
        min=0,
        resumable=True,
        help="documents of the train split never scored, by number (0 = the first; the numbers "
        "a replay report names): their tokens are no targets, the batches otherwise the same, "
        "so a --resume may add some (one data.source of text)",
    )

    def batch_rows(self, size: int) -> int:
        """The rows of a batch of ``size`` examples: a preference pair is two (chosen, rejected).

        >>> DataConfig(format="preference").batch_rows(8), DataConfig().batch_rows(8)
        (16, 8)
        """
        return 2 * size if self.format == "preference" else size
