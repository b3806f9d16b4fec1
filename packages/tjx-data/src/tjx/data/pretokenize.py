"""Documents → flat uint16/uint32 token shards + ``index.json``, in parallel, atomically."""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from tjx.data.cache import atomic_prepare
from tjx.data.documents import DocumentTable, Origin
from tjx.data.errors import DataError
from tjx.data.shards import ShardIndex, check_tokenizer, dtype_for_vocab, load_index, record_made
from tjx.data.tokenizers import Tokenizer

__all__ = ["encode_documents", "pretokenize"]

Chunk = tuple[np.ndarray, int, int, int]  # tokens (with EOS), documents, empty documents, bytes
#: A chunk with, of each kept document, its index in the chunk and its tokens (EOS included).
Kept = tuple[Chunk, list[int], list[int]]

_WORKER_TOKENIZER: Tokenizer | None = None


def encode_documents(texts: list[str], tokenizer: Tokenizer, dtype: str) -> Chunk:
    """Encode documents into one flat array: each non-empty document's ids, then EOS.

    Returns
    -------
    tuple
        ``(tokens, documents, empty_documents, bytes)``; a document is empty if it encodes to no
        tokens, and empty documents add neither tokens nor bytes.

    Raises
    ------
    DataError
        An id outside ``0..vocab_size-1`` (it would wrap around in ``dtype``).
    """
    return _encode(texts, tokenizer, dtype)[0]


def _encode(texts: list[str], tokenizer: Tokenizer, dtype: str) -> Kept:
    """`encode_documents`, with the kept documents' indices and token counts (EOS included)."""
    encoded = tokenizer.encode_batch(texts)
    keep = [i for i, ids in enumerate(encoded) if len(ids) > 0]
    total = sum(len(encoded[i]) + 1 for i in keep)
    eos = tokenizer.eos_id
    flat = np.fromiter(
        itertools.chain.from_iterable(itertools.chain(encoded[i], (eos,)) for i in keep),
        dtype=np.int64,
        count=total,
    )
    if total and (flat.min() < 0 or flat.max() >= tokenizer.vocab_size):
        raise DataError(
            f"tokenizer {tokenizer.name!r} produced id {int(flat.max())} outside its vocabulary "
            f"of {tokenizer.vocab_size}"
        )
    num_bytes = sum(tokenizer.count_bytes([texts[i] for i in keep]))
    chunk = flat.astype(dtype), len(keep), len(texts) - len(keep), num_bytes
    return chunk, keep, [len(encoded[i]) + 1 for i in keep]


def _init_worker(tokenizer: Tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # processes, not threads


def _encode_in_worker(texts: list[str], dtype: str) -> Kept:
    assert _WORKER_TOKENIZER is not None
    return _encode(texts, _WORKER_TOKENIZER, dtype)


Work = tuple[list[str], list[Origin | None]]


def _chunks(docs: Iterable[tuple[str, Origin | None]], chars: int) -> Iterator[Work]:
    """Group documents (with their origins) into work items of about ``chars`` characters (at
    least one document)."""
    chunk: list[str] = []
    origins: list[Origin | None] = []
    size = 0
    for doc, origin in docs:
        if not isinstance(doc, str):
            raise DataError(f"documents must be str, got {type(doc).__name__}")
        chunk.append(doc)
        origins.append(origin)
        size += len(doc)
        if size >= chars:
            yield chunk, origins
            chunk, origins, size = [], [], 0
    if chunk:
        yield chunk, origins


def _located(docs: Iterable[str]) -> Iterator[tuple[str, Origin | None]]:
    """``docs`` with their origins: a `Documents`' own, else None for each."""
    located = getattr(docs, "located", None)
    if callable(located):
        yield from located()
        return
    for doc in docs:
        yield doc, None


START_METHODS = ("fork", "spawn", "forkserver")


def _start_method(requested: str | None) -> str:
    """``fork`` where available and no thread-heavy runtime (jax) is loaded, else ``spawn``.

    fork needs no import-safe ``__main__``; spawn is the safe choice once jax runs threads.
    """
    if requested is not None:
        if requested not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}, got {requested!r}")
        return requested
    forkable = "fork" in multiprocessing.get_all_start_methods()
    return "fork" if forkable and "jax" not in sys.modules else "spawn"


def _refuse_reentry() -> None:
    # A spawned worker imports the parent's __main__; an unguarded script would call pretokenize
    # again there and wait forever on the split's lock. Fail loudly instead.
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "tjx.data.pretokenize was called while a worker process imported the main module; "
            "put the script's code under `if __name__ == '__main__':` (or use num_workers=1)"
        )


def _encoded_chunks(
    docs: Iterable[str],
    tokenizer: Tokenizer,
    dtype: str,
    workers: int,
    chunk_chars: int,
    start_method: str | None,
) -> Iterator[tuple[list[Origin | None], Kept]]:
    """Yield ``(origins of the chunk's documents, encoded)`` in document order."""
    if workers <= 1:
        for chunk, origins in _chunks(_located(docs), chunk_chars):
            yield origins, _encode(chunk, tokenizer, dtype)
        return
    ctx = multiprocessing.get_context(_start_method(start_method))
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(tokenizer,)) as pool:  # fmt: skip
            pending: deque[tuple[list[Origin | None], Future[Kept]]] = deque()
            for chunk, origins in _chunks(_located(docs), chunk_chars):
                pending.append((origins, pool.submit(_encode_in_worker, chunk, dtype)))
                if len(pending) >= 2 * workers:  # bounded: memory stays flat on huge corpora
                    n, future = pending.popleft()
                    yield n, future.result()
            while pending:
                n, future = pending.popleft()
                yield n, future.result()
    except BrokenProcessPool as exc:
        raise RuntimeError(
            "a pretokenize worker process died (out of memory, or, with start_method='spawn', a "
            "main script without `if __name__ == '__main__':`; see its error above)"
        ) from exc


def _progress(enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # Counted in tokens, so the bar's rate is the preparation's tokens/s.
    return tqdm(desc=desc, unit=" tok", unit_scale=True, dynamic_ncols=True, leave=False)


def _write(
    staging: Path,
    docs: Iterable[str],
    tokenizer: Tokenizer,
    *,
    split: str,
    source: str,
    workers: int,
    chunk_chars: int,
    shard_tokens: int,
    progress: bool,
    start_method: str | None,
    max_tokens: int | None = None,
) -> None:
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    shards: list[dict[str, Any]] = []
    tokens = documents = empty = num_bytes = 0
    stream = hashlib.sha256()  # of the bytes written, as they are written: no second read
    handle = None
    table = DocumentTable()  # where each kept document starts, and where it came from
    bar = _progress(progress, f"pretokenize {source}")
    try:
        for origins, (chunk, keep, lengths) in _encoded_chunks(
            docs, tokenizer, dtype, workers, chunk_chars, start_method
        ):
            flat, n_docs, n_empty, n_bytes = chunk
            if max_tokens is not None and tokens + flat.size > max_tokens:
                # The cap: keep its first tokens (the last document cut), bytes pro rata.
                kept = max_tokens - tokens
                n_bytes = n_bytes * kept // max(int(flat.size), 1)
                flat = flat[:kept]
            starts = tokens + np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)])
            kept_docs = int(np.count_nonzero(starts < tokens + flat.size)) if lengths else 0
            table.add(starts[:kept_docs], [origins[i] for i in keep[:kept_docs]])
            if flat.size:
                if handle is None or shards[-1]["tokens"] >= shard_tokens:
                    if handle is not None:
                        handle.close()
                    shards.append({"file": f"shard_{len(shards):05d}.bin", "tokens": 0})
                    # closed on rollover and in `finally`: one file stays open across chunks
                    handle = open(staging / shards[-1]["file"], "wb")  # noqa: SIM115
                flat.tofile(handle)
                stream.update(flat.data)  # 1-D and contiguous: its bytes as written
                shards[-1]["tokens"] += int(flat.size)
            tokens += int(flat.size)
            documents, empty, num_bytes = documents + n_docs, empty + n_empty, num_bytes + n_bytes
            if bar is not None:
                bar.update(int(flat.size))
                bar.set_postfix(docs=documents, refresh=False)
            if max_tokens is not None and tokens >= max_tokens:
                break  # the rest of the source is never read
    finally:
        if handle is not None:
            handle.close()
        if bar is not None:
            bar.close()
    if tokens == 0:
        raise DataError(
            f"empty dataset: {source} has no non-empty documents "
            f"({empty} empty document(s) skipped)"
        )
    tok_info: dict[str, object] = {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint}
    tok_info |= {"vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id}
    index = ShardIndex(split, source, dtype, tokens, documents, empty, num_bytes, tok_info, shards,
                       digest=stream.hexdigest())  # fmt: skip
    table.save(staging)
    # The files as made match the digest: a later start reads them again only if one moves.
    record_made(staging, [shard["file"] for shard in shards], stream.hexdigest())
    index.save(staging)  # last: a folder with index.json is complete


def pretokenize(
    source_docs: Iterable[str],
    tokenizer: Tokenizer,
    out_dir: str | Path,
    *,
    split: str = "train",
    num_workers: int | None = None,
    source: str | None = None,
    chunk_chars: int = 1 << 20,
    shard_tokens: int = 1 << 28,
    progress: bool = True,
    overwrite: bool = False,
    start_method: str | None = None,
    max_tokens: int | None = None,
) -> ShardIndex:
    """Tokenize documents into ``out_dir/split/`` shards and return their index.

    Parameters
    ----------
    source_docs:
        Documents (e.g. ``load_source("shakespeare", split="train")``).
    tokenizer:
        Any :class:`~tjx.data.tokenizers.Tokenizer`; picklable when ``num_workers > 1``.
    out_dir:
        Root folder; the split goes to ``out_dir/split``.
    split:
        Split name (``"train"``, ``"validation"``, ...).
    num_workers:
        Encoding processes (spawned); ``None`` = ``os.cpu_count()``; ``1`` encodes in this
        process (HF tokenizers then still use their own threads).
    source:
        Label stored in the index; default ``source_docs.source`` (set by ``load_source``).
    chunk_chars:
        Characters per work item (documents are grouped until they reach it).
    shard_tokens:
        A new shard starts once the current one holds this many tokens (documents are never
        split across shards).
    progress:
        Show a tqdm progress bar (tokens, tokens/s, documents).
    overwrite:
        Rebuild even if the split exists (the old shards stay readable until the swap).
    start_method:
        Worker start method (``"fork"``, ``"spawn"``, ``"forkserver"``); default ``"fork"``
        unless jax is imported (then ``"spawn"``, which requires an import-safe main module:
        ``if __name__ == "__main__":``).
    max_tokens:
        Stop after this many tokens (the last document is cut there; the rest of the source is
        not read). ``None``: the whole source.

    Returns
    -------
    ShardIndex
        The index. If the split already exists with the same tokenizer and source, nothing is
        recomputed (idempotent). The split folder appears in one rename after the index is
        written, so an interrupted run leaves nothing that looks complete, and the next run
        starts over cleanly.

    Raises
    ------
    DataError
        Empty dataset, undecodable input, or existing shards from another tokenizer / source.
    """
    _refuse_reentry()
    for name, value in (("chunk_chars", chunk_chars), ("shard_tokens", shard_tokens)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    if workers < 1:
        raise ValueError(f"num_workers must be >= 1 or None, got {num_workers}")
    label = source or str(getattr(source_docs, "source", "documents"))
    final = Path(out_dir) / split

    def build(staging: Path) -> None:
        _write(staging, source_docs, tokenizer, split=split, source=label, workers=workers,
               chunk_chars=chunk_chars, shard_tokens=shard_tokens, progress=progress,
               start_method=start_method, max_tokens=max_tokens)  # fmt: skip

    atomic_prepare(final, build, replace=overwrite)
    index = load_index(final)
    check_tokenizer(index, tokenizer)
    if index.source != label:
        raise DataError(
            f"{final}: holds shards of {index.source!r}, not {label!r}; "
            "use another out_dir or pass overwrite=True"
        )
    index.validate()
    return index
