"""Which files the site holds and where: `docs/` at the site's root, the repository's READMEs and
BENCHMARKS.md (and every Markdown page they link, transitively) under ``repo/`` at their
repository paths, and every other file a page links (a test, a preset, an image) copied beside
them. Each relative link is rewritten to the target's place in the site, so a link that works on
GitHub works in the site, and one that leads nowhere fails the build (MkDocs' strict mode).
"""

from __future__ import annotations

import posixpath
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: ``[text](target)`` and ``![alt](target)``; group 1 is the target (an optional "title" after it
#: is kept in the text).
LINK = re.compile(r"(\]\()(<[^>]+>|[^)\s]+)")
#: A fence's opening or closing line (possibly indented inside a list): its marker.
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
#: An inline code span, whose text is no link.
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
#: A URL scheme (``https:``, ``mailto:``): an absolute link, left as it is.
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
#: The repository's pages that the site always holds (beside docs/): the root README and
#: BENCHMARKS.md, and every package's and app's README (the guides link into them).
SEED_GLOBS = ("README.md", "BENCHMARKS.md", "packages/*/README.md", "apps/*/README.md")
#: Where the repository's own pages go in the site.
REPO_PREFIX = "repo"


class MissingTargetError(ValueError):
    """A relative link names no file of the repository."""


def prose_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """``(index, line, fenced)`` of every line of Markdown ``text``; ``fenced`` is true for the
    lines of a fenced code block, its fences included."""
    marker: str | None = None
    for index, line in enumerate(text.split("\n")):
        found = FENCE.match(line)
        if marker is None and found:
            marker = found.group(1)
            yield index, line, True
        elif marker is not None:
            closes = found and found.group(1)[0] == marker[0] and len(found.group(1)) >= len(marker)
            if closes and not line.strip()[len(found.group(1)) :].strip():  # type: ignore[union-attr]
                marker = None
            yield index, line, True
        else:
            yield index, line, False


def _links_in(line: str) -> Iterator[re.Match[str]]:
    """The link targets of one prose line, outside inline code spans."""
    spans = [m.span() for m in CODE_SPAN.finditer(line)]
    for found in LINK.finditer(line):
        if not any(a <= found.start(2) < b for a, b in spans):
            yield found


def is_relative(target: str) -> bool:
    """Whether link ``target`` names a file of the repository (not a URL, not ``#anchor`` alone)."""
    return bool(target) and not SCHEME.match(target) and not target.startswith(("#", "/"))


def split_target(target: str) -> tuple[str, str]:
    """``"a/b.md#x"`` → (``"a/b.md"``, ``"#x"``); angle brackets are dropped."""
    target = target.strip("<>")
    path, sep, fragment = target.partition("#")
    return path, sep + fragment


def links(text: str) -> list[str]:
    """Every link target of Markdown ``text`` outside code, in order."""
    prose = (line for _, line, fenced in prose_lines(text) if not fenced)
    return [m.group(2) for line in prose for m in _links_in(line)]


def site_path(repo_path: str) -> str:
    """Where repository file ``repo_path`` (posix, relative) lies in the site: ``docs/X`` at
    ``X``, anything else under ``repo/``."""
    if repo_path.startswith("docs/"):
        return repo_path[len("docs/") :]
    return f"{REPO_PREFIX}/{repo_path}"


def resolve(page: str, target_path: str) -> str:
    """The repository path that relative link ``target_path`` on page ``page`` names."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(page), target_path))
    return "" if joined == "." else joined


def rewrite(text: str, page: str) -> str:
    """Markdown ``text`` of repository page ``page`` with each relative link pointing at its
    target's place in the site (`site_path`), relative to the page's own place."""
    here = posixpath.dirname(site_path(page))
    lines = text.split("\n")
    for index, line, fenced in prose_lines(text):
        if fenced:
            continue
        pieces, last = [], 0
        for found in _links_in(line):
            target = found.group(2)
            if not is_relative(target):
                continue
            path, fragment = split_target(target)
            if not path:
                continue
            where = site_path(resolve(page, path))
            new = posixpath.relpath(where, here or ".")
            pieces.append(line[last : found.start(2)] + new + fragment)
            last = found.end(2)
        lines[index] = "".join(pieces) + line[last:]
    return "\n".join(lines)


@dataclass
class Pages:
    """The repository files a site holds: Markdown ``pages`` and other ``files``, by their
    repository paths (posix, relative to ``root``)."""

    root: Path
    pages: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    #: Pages the build writes itself (the references), as the repository paths they stand for
    #: (``docs/reference/config.md``): links to them resolve, and they are not read here.
    generated: set[str] = field(default_factory=set)

    def add_closure(self, seeds: Iterable[str]) -> None:
        """Add ``seeds`` (Markdown pages) and, transitively, every file their links name.

        Raises
        ------
        MissingTargetError
            A link names no file here (one line: the page, the link and the path it resolves to).
        """
        todo = [s for s in seeds if s not in self.pages]
        self.pages.update(todo)
        while todo:
            page = todo.pop()
            for target in links((self.root / page).read_text(encoding="utf-8")):
                if not is_relative(target):
                    continue
                path, _ = split_target(target)
                if not path:
                    continue
                found = resolve(page, path)
                if found in self.generated:
                    continue
                where = self.root / found
                if not where.exists():
                    raise MissingTargetError(
                        f"{page}: link {target!r} names {found}, which does not exist"
                    )
                if where.is_dir():
                    raise MissingTargetError(
                        f"{page}: link {target!r} names the folder {found}; link a file in it "
                        "(its README.md)"
                    )
                if found.endswith(".md"):
                    if found not in self.pages:
                        self.pages.add(found)
                        todo.append(found)
                else:
                    self.files.add(found)

    def stage(self, out: Path) -> None:
        """Write every page (its links rewritten) and copy every file into site folder ``out``."""
        for page in sorted(self.pages):
            dest = out / site_path(page)
            dest.parent.mkdir(parents=True, exist_ok=True)
            text = (self.root / page).read_text(encoding="utf-8")
            dest.write_text(rewrite(text, page), encoding="utf-8")
        for name in sorted(self.files):
            dest = out / site_path(name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / name, dest)


def docs_pages(root: Path) -> list[str]:
    """Every Markdown page under ``docs/`` (repository paths)."""
    return sorted(p.relative_to(root).as_posix() for p in (root / "docs").rglob("*.md"))


def seed_pages(root: Path) -> list[str]:
    """`docs_pages` and the repository pages of `SEED_GLOBS` that exist."""
    seeds = [p.relative_to(root).as_posix() for g in SEED_GLOBS for p in sorted(root.glob(g))]
    return docs_pages(root) + seeds
