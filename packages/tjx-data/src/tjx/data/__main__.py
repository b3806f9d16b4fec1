"""``python -m tjx.data SOURCE``: prepare a source's shards ahead of training (a CPU machine will
do), into the cache a run then finds them in.

    python -m tjx.data allenai/c4 --tokenizer gpt2 --max-tokens 2000000000 \\
        --cache-dir /shared/tjx-cache --num-workers 32

The shards land where `tjx.data.prepare_run_data` (the trainer's ``data`` section with the same
``source``, ``tokenizer``, ``tokenizer_vocab``, ``max_tokens``, ``compressed``, ``zstd``,
``text_field`` and ``cache_dir``) looks for them, so a run started later tokenizes nothing. Bad
input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys

from tjx.data.cache import staged
from tjx.data.errors import DataError
from tjx.data.prepare import prepare_shards
from tjx.data.run.config import DataConfig
from tjx.data.run.setup import compressions_of, left_out_note
from tjx.data.run.tokenizer import run_tokenizer


def main(argv: list[str] | None = None) -> int:
    """Prepare both splits of a source; print where they are. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m tjx.data", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="built-in name, local file/folder/glob or hub name")
    parser.add_argument("--tokenizer", default="byte", help="byte | gpt2 | bpe | a path")
    parser.add_argument("--tokenizer-vocab", type=int, default=2048, help="vocab of a bpe")
    parser.add_argument("--cache-dir", default=None, help="default $TJX_CACHE or ~/.cache/tjx")
    parser.add_argument("--max-tokens", type=int, default=None, help="cap per split")
    parser.add_argument("--num-workers", type=int, default=1, help="encoding processes")
    parser.add_argument(
        "--compressed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read a folder's compressed files (.jsonl.gz, ...); --no-compressed as a run "
        "with data.compressed=false",
    )
    parser.add_argument("--text-field", default="text", help="a row's field holding the text")
    parser.add_argument(
        "--zstd",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --compressed, read .zst files too; --no-zstd as a run with data.zstd=false",
    )
    args = parser.parse_args(argv)
    compressed = compressions_of(DataConfig(compressed=args.compressed, zstd=args.zstd))
    for flag, value in (("--max-tokens", args.max_tokens), ("--num-workers", args.num_workers)):
        if value is not None and value < 1:
            print(f"python -m tjx.data: error: {flag}: must be >= 1, got {value}", file=sys.stderr)
            return 2
    try:
        flags = {"compressed": "--compressed", "zstd": "--zstd"}  # said as --no-zstd
        left = left_out_note([args.source], compressed=compressed, names=flags)
        if left is not None:  # a folder's .json or .csv: named, not skipped
            print(f"python -m tjx.data: {left}", file=sys.stderr)
        with staged() as stage:  # a BPE is published only with the shards it made
            tok = run_tokenizer(args.tokenizer, args.source, vocab=args.tokenizer_vocab,
                                cache_dir=args.cache_dir, staging=stage,
                                compressed=compressed,
                                text_field=args.text_field)  # fmt: skip
            shards = prepare_shards(
                args.source,
                tok,
                args.cache_dir,
                num_workers=args.num_workers,
                progress=sys.stderr.isatty(),
                max_tokens=args.max_tokens,
                staging=stage,
                compressed=compressed,
                text_field=args.text_field,
            )
    except DataError as err:
        print(f"python -m tjx.data: error: {err}", file=sys.stderr)
        return 2
    for split, tokens in shards.tokens.items():
        print(f"{split}: {tokens:,} tokens in {shards.dirs[split]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
