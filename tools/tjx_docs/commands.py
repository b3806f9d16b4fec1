"""The shell commands of the guides: every fenced shell block carries a marker comment on the
line before it, saying who runs it (docs/guides/contributing.md, "This site"):

* ``<!-- run -->`` — the docs' command test runs it on CPU, shrunk (`shrunk`);
  ``<!-- run: OLD => NEW; … -->`` — after these text substitutions;
* ``<!-- ci -->`` — CI runs this very command itself;
* ``<!-- gpu-only -->`` — it needs GPUs or several hosts;
* ``<!-- network -->`` — it needs a download.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tjx_docs.pages import FENCE

#: The info strings of a shell block (an unlabelled fence counts as one: it must say what it is).
SHELL_LANGS = frozenset({"", "bash", "sh", "shell", "console", "zsh"})
#: Markers and what they mean.
MARKERS = ("run", "ci", "gpu-only", "network")
MARKER = re.compile(r"^\s*<!--\s*([a-z-]+)\s*(?::\s*(.*?))?\s*-->\s*$")
#: A trainer command's shrink, put before its own flags so that what the block sets wins. One
#: layer: a tiny run's CPU time is mostly tracing and lowering, which grow with the layers (a
#: Pallas run on CPU interprets its kernel per layer: 42 -> 25 CPU-s for kernels.md's, 2026-11-29).
TRAIN_SHRINK = (
    "--set", "train.steps=4", "--set", "train.log_every=1", "--set", "train.eval_every=2",
    "--set", "train.eval_batches=1", "--set", "train.checkpoint_every=2",
    "--set", "train.sample_every=4", "--set", "sampling.max_new_tokens=8",
    "--set", "model.num_layers=1",
)  # fmt: skip
#: An evaluator command's shrink (the same rule).
EVAL_SHRINK = ("--max-batches", "2", "--max-new-tokens", "16")
#: How the guides' ways of starting an app map onto ``python -m APP``.
PANTS_RUN = {("./pants", "run", "apps/trainer", "--"): "trainer",
             ("./pants", "run", "apps/eval", "--"): "eval"}  # fmt: skip


@dataclass
class Block:
    """One fenced block of a page: where it starts, its language, its marker and its text."""

    page: str
    line: int  # 1-based, the opening fence
    lang: str
    marker: str | None
    substitutions: list[tuple[str, str]] = field(default_factory=list)
    text: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


class MarkerError(ValueError):
    """A marker that names no known kind, or a substitution that is not ``OLD => NEW``."""


def _marker(line: str, where: str) -> tuple[str | None, list[tuple[str, str]]]:
    found = MARKER.match(line)
    if not found:
        return None, []
    kind, rest = found.group(1), found.group(2)
    if kind not in MARKERS:
        raise MarkerError(f"{where}: unknown marker {kind!r}; use one of {', '.join(MARKERS)}")
    subs = []
    for part in filter(None, (p.strip() for p in (rest or "").split(";"))):
        old, sep, new = part.partition("=>")
        if not sep or kind != "run":
            raise MarkerError(f"{where}: {part!r}: only run takes substitutions, as OLD => NEW")
        subs.append((old.strip(), new.strip()))
    return kind, subs


def blocks(text: str, page: str) -> list[Block]:
    """Every fenced block of Markdown ``text`` (nested fences are text of their block), with
    the marker on the last non-blank line before it."""
    lines = text.split("\n")
    out: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence = opening.group(1)
        lang = lines[index].strip()[len(fence) :].strip().split(" ")[0].lower()
        before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        kind, subs = _marker(before, f"{page}:{index + 1}")
        body = []
        end = index + 1
        while end < len(lines):
            closing = FENCE.match(lines[end])
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
                break
            body.append(lines[end])
            end += 1
        out.append(Block(page, index + 1, lang, kind, subs, "\n".join(body)))
        index = end + 1
    return out


def shell_blocks(text: str, page: str) -> list[Block]:
    """The blocks of ``text`` whose language is a shell's (or none)."""
    return [b for b in blocks(text, page) if b.lang in SHELL_LANGS]


def unmarked(text: str, page: str) -> list[str]:
    """``page:line`` of every shell block without a marker."""
    return [b.where for b in shell_blocks(text, page) if b.marker is None]


def commands(block: Block) -> list[str]:
    """The block's commands, one a line (``\\`` continuations joined; comments and blank lines
    dropped), after the block's substitutions."""
    text = block.text
    for old, new in block.substitutions:
        if old not in text:
            raise MarkerError(f"{block.where}: substitution {old!r} matches nothing in the block")
        text = text.replace(old, new)
    out, pending = [], ""
    for line in text.split("\n"):
        pending += line
        if pending.rstrip().endswith("\\"):
            pending = pending.rstrip()[:-1] + " "
            continue
        words = shlex.split(pending, comments=True)
        if words:
            out.append(shlex.join(words))
        pending = ""
    return out


@dataclass
class Invocation:
    """One command as the test runs it."""

    argv: list[str]
    env: dict[str, str]
    app: str | None  # "trainer" / "eval" when it starts one

    @property
    def plans(self) -> bool:
        return self.app == "trainer" and "--plan" in self.argv


def invocation(command: str, root: Path) -> Invocation:
    """How the test runs ``command``: leading ``VAR=value`` words as its environment, an app's
    start as ``python -m APP`` (this interpreter) with its shrink, ``tools/…`` from ``root``."""
    words = shlex.split(command)
    env: dict[str, str] = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    app = None
    for prefix, name in PANTS_RUN.items():
        if tuple(words[: len(prefix)]) == prefix:
            app, words = name, words[len(prefix) :]
    if app is None and words[:2] in (["python", "-m"], ["python3", "-m"]):
        app, words = words[2], words[3:]
    if app is not None:
        shrink = TRAIN_SHRINK if app == "trainer" else EVAL_SHRINK if app == "eval" else ()
        return Invocation([sys.executable, "-m", app, *shrink, *words], env, app)
    if words and words[0].startswith("tools/"):
        words = [str(root / words[0]), *words[1:]]
    return Invocation(words, env, None)
