"""The root README cannot fall behind silently (#58): its links lead somewhere, and it names what
the code knows.

* Every relative link names a file of the repository, and a ``#fragment`` names a heading of that
  Markdown file (GitHub's anchors).
* Every ``model_type`` that tjx-nn's Hugging Face registry (``tjx.nn.hf.HF_MODEL_TYPES``) loads
  appears, in backticks, in a row of the README's capability table.
* Every package's and app's README is linked from it.
* Every trainer preset is named in it, and the architecture page (``docs/architecture.md``, #71:
  in the repository, not beside it) is linked; that page's own links lead somewhere too.
* The peers' versions it and tjx-nn's README cite are the ones ``tests-support/tjx_peers.py``
  pins.

Under Pants the linked files reach the sandbox through the root BUILD's ``readme-links`` target:
a link to a kind of file it does not glob is reported as missing here, with that hint.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tjx_peers

from tjx.nn.hf import HF_MODEL_TYPES

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
#: ``[text](target)``, not an image's ``![…](…)`` (the README has none; they would be checked too).
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a ``# comment`` in a shell block is no heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a Markdown file's headings.

    Parameters
    ----------
    markdown
        The file's text.

    Returns
    -------
    set of str
        Each heading lower-cased, stripped of every character but letters, digits, ``_``, ``-``
        and spaces, spaces turned into ``-``; a repeated anchor gets ``-1``, ``-2``, … as GitHub's.
    """
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(markdown):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def relative_links(markdown: str) -> list[str]:
    """The link targets of a Markdown text that are neither URLs nor e-mail addresses."""
    targets = LINK.findall("\n".join(_prose_lines(markdown)))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def table_rows(markdown: str) -> list[str]:
    """The lines of the Markdown tables outside code blocks."""
    return [line for line in _prose_lines(markdown) if line.lstrip().startswith("|")]


@pytest.mark.parametrize(
    ("page", "least"), [(README, 30), (ARCHITECTURE, 2)], ids=["readme", "docs"]
)
def test_every_relative_link_names_an_existing_file_and_heading(page: Path, least: int) -> None:
    text = page.read_text(encoding="utf-8")
    links = relative_links(text)
    assert len(links) >= least, f"the links of {page.name} were not found: {links}"
    problems = []
    for link in links:
        path, _, fragment = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            problems.append(
                f"{link}: no such file (under Pants: or the root BUILD's readme-links "
                "target does not glob it)"
            )
            continue
        if (
            fragment
            and target.suffix == ".md"
            and fragment not in anchors(target.read_text(encoding="utf-8"))
        ):
            problems.append(f"{link}: {path or page.name} has no heading #{fragment}")
    assert not problems, "\n".join(problems)


def test_every_hugging_face_model_type_tjx_loads_is_in_the_readmes_capability_table() -> None:
    rows = table_rows(README.read_text(encoding="utf-8"))
    named = {name for row in rows for name in re.findall(r"`([^`]+)`", row)}
    missing = sorted(set(HF_MODEL_TYPES) - named)
    assert len(HF_MODEL_TYPES) >= 13
    assert not missing, f"add these model types to the README's table (tjx-nn loads: {missing})"


def test_every_package_and_app_readme_is_linked_from_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    linked = {
        (README.parent / link.partition("#")[0]).resolve()
        for link in relative_links(text)
        if link.partition("#")[0]
    }
    readmes = sorted(ROOT.glob("packages/*/README.md")) + sorted(ROOT.glob("apps/*/README.md"))
    assert len(readmes) >= 11, readmes
    missing = [str(p.relative_to(ROOT)) for p in readmes if p.resolve() not in linked]
    assert not missing, f"the README links no section of {missing}"


def test_every_preset_is_named_and_the_architecture_page_is_in_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    presets = sorted(p.stem for p in (ROOT / "apps" / "trainer" / "configs").glob("*.yaml"))
    assert len(presets) >= 15, presets
    missing = [name for name in presets if f"`{name}`" not in text]
    assert not missing, f"the README names no preset {missing} (apps/trainer/configs)"
    assert "docs/architecture.md" in relative_links(text)
    outside = re.findall(r"\bshared/[\w./-]+", text)
    assert not outside, f"the README sends readers outside the repository: {outside}"


#: How the READMEs cite a peer's version in a claim a peer test checks.
PEER_CLAIMS = {
    README: r"transformers (\S+), PEFT (\S+),\s+TRL (\S+), PyTorch (\S+)\)",
    ROOT
    / "packages"
    / "tjx-nn"
    / "README.md": r"Tested against transformers (\S+) / PyTorch (\S+) ",
}
PEER_NAMES = {
    README: ("transformers", "peft", "trl", "torch"),
    ROOT / "packages" / "tjx-nn" / "README.md": ("transformers", "torch"),
}


@pytest.mark.parametrize("page", sorted(PEER_CLAIMS), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_peer_versions_a_readme_cites_are_the_pinned_ones(page: Path) -> None:
    found = re.search(PEER_CLAIMS[page], page.read_text(encoding="utf-8"))
    assert found, f"{page.relative_to(ROOT)}: no peer versions cited ({PEER_CLAIMS[page]})"
    cited = dict(zip(PEER_NAMES[page], found.groups(), strict=True))
    pinned = {name: tjx_peers.PINS[name] for name in cited}
    assert cited == pinned, f"{page.relative_to(ROOT)} cites {cited}; tjx_peers pins {pinned}"
