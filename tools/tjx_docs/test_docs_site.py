"""The documentation site (#74): it builds with the one command the contributing guide gives
(strict: a broken link or heading fails it), its references hold every config key, preset, flag
and public name the code has, the goal's three answers are two clicks from the home page, and a
real browser (headless Chromium, Debian's package) searches it and follows its links."""

from __future__ import annotations

import html.parser
import importlib
import os
import posixpath
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from eval.cli import build_parser as eval_parser
from tjx_docs import build as site_build
from tjx_docs import reference
from tjx_docs.browser import chromium, chromium_path, serve
from tjx_docs.pages import MissingTargetError, Pages, rewrite
from trainer.cli import build_parser as trainer_parser
from trainer.config.schema import KINDS
from trainer.config.settings import preset_names
from trainer.config.typed import SCHEMA

ROOT = Path(__file__).resolve().parents[2]
#: The contributing guide's build command (a ``ci`` block there names it: test_docs_commands.py).
SITE_BUILD = ["tools/docs", "build", "--out", "dist/docs"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once by the guide's command (from a scratch folder, so dist/ is its)."""
    here = tmp_path_factory.mktemp("site")
    env = {**os.environ, "TJX_PYTHON": sys.executable}
    start = time.monotonic()
    done = subprocess.run(
        [str(ROOT / SITE_BUILD[0]), *SITE_BUILD[1:]], cwd=here, env=env, capture_output=True,
        text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"the site did not build:\n{done.stdout}\n{done.stderr}"
    print(f"docs site built in {time.monotonic() - start:.1f} s", file=sys.stderr)
    return here / "dist" / "docs"


class _Page(html.parser.HTMLParser):
    """A built page's element ids, and the links of its content (``<article>``), not the
    navigation's."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self._article = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "article":
            self._article += 1
        if tag == "a" and self._article and found.get("href"):
            self.links.append(str(found["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self._article -= 1


def _parsed(site: Path, url_path: str) -> _Page:
    page = _Page()
    path = site / url_path.strip("/") / "index.html"
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_every_config_key_of_the_schema_has_its_entry(site: Path) -> None:
    keys = {key for kind in KINDS for key, _, _ in SCHEMA.leaves(kind)}  # the schema itself
    assert len(keys) > 200 and "train.gpu_autotune" in keys and "grpo.group_size" in keys
    ids = _parsed(site, "reference/config").ids
    assert not keys - ids, f"keys missing from the configuration reference: {sorted(keys - ids)}"


def test_every_preset_flag_and_public_name_has_its_entry(site: Path) -> None:
    presets = _parsed(site, "reference/presets").ids
    assert set(preset_names()) <= presets and "tiny" in presets
    cli = _parsed(site, "reference/cli").ids
    for app, parser in (("trainer", trainer_parser()), ("eval", eval_parser())):
        flags = {a.option_strings[0] for a in parser._actions if a.option_strings} - {"-h"}
        missing = {f for f in flags if f"{app}{f}" not in cli}
        assert not missing and flags, (app, missing)
    for package in reference.PACKAGES:
        exported = importlib.import_module(f"tjx.{package}").__all__
        names = {n for n in exported if not n.startswith("__")}  # __version__: the intro's
        ids = _parsed(site, f"reference/api/tjx-{package}").ids
        missing = {n for n in names if f"tjx.{package}.{n}" not in ids}
        assert not missing, (package, sorted(missing))


def test_the_repository_pages_are_in_the_site_with_working_links(site: Path) -> None:
    trainer = _parsed(site, "repo/apps/trainer")
    assert {"every-key", "planning-for-a-device-you-do-not-have---plan"} <= trainer.ids
    tests = site / "repo" / "tests-integration" / "tests_integration"
    assert (tests / "test_train_tiny.py").is_file()  # a linked test is in the site as a file
    # A README's link into docs/ leads to the site's own page; one between READMEs stays.
    assert rewrite("[a](docs/architecture.md#x)", "README.md") == "[a](../architecture.md#x)"
    assert rewrite("[b](../../BENCHMARKS.md)", "apps/eval/README.md") == "[b](../../BENCHMARKS.md)"
    assert rewrite("[q](guides/quickstart.md) `[c](x.md)`", "docs/index.md") == (
        "[q](guides/quickstart.md) `[c](x.md)`"
    )


def _clicks(site: Path, start: str, limit: int) -> dict[str, int]:
    """Every page#anchor reachable from page ``start`` in at most ``limit`` content clicks →
    the fewest clicks."""
    seen = {start: 0}
    frontier = [start]
    for depth in range(1, limit + 1):
        following = []
        for page in frontier:
            base = page.split("#")[0]
            for href in _parsed(site, base).links:
                if urllib.parse.urlsplit(href).scheme:
                    continue
                path, _, anchor = href.partition("#")
                target = posixpath.normpath(posixpath.join(base, path)) if path else base
                target = target.strip("/").removesuffix("index.html").strip("/") + "/"
                key = target + (f"#{anchor}" if anchor else "")
                if key not in seen and (site / target / "index.html").is_file():
                    seen[key] = depth
                    if not anchor:
                        following.append(key)
                    elif target not in seen:
                        seen[target] = depth
                        following.append(target)
        frontier = following
    return seen


def test_the_goals_answers_are_two_clicks_from_the_home_page(site: Path) -> None:
    reach = _clicks(site, "/", 2)
    for goal in ("guides/checkpoints/#resume-a-run", "reference/config/#train.gpu_autotune",
                 "guides/planning/#plan-an-8-gpu-run"):  # fmt: skip
        assert reach.get(goal, 99) <= 2, f"{goal} is not within 2 clicks of the home page"
        page, _, anchor = goal.partition("#")
        assert anchor in _parsed(site, page).ids, goal


def test_a_broken_link_fails_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[gone](../nothing.md)\n")
    pages = Pages(tmp_path)
    with pytest.raises(MissingTargetError, match=r"nothing\.md, which does not exist"):
        pages.add_closure(["docs/index.md"])
    # A link to a page that exists but a heading it lacks: MkDocs' strict mode refuses it.
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[there](other.md#no-such-heading)\n")
    (tmp_path / "docs" / "other.md").write_text("# Other\n")
    (tmp_path / "docs" / "mkdocs.yml").write_text(
        "site_name: t\nvalidation:\n  links:\n    anchors: warn\n"
    )
    monkeypatch.setattr(reference, "all_pages", dict)
    monkeypatch.setattr("tjx_docs.pages.SEED_GLOBS", ())
    with pytest.raises(site_build.BuildError, match="does not contain an anchor '#no-such-head"):
        site_build.build(tmp_path, tmp_path / "out")


def _browser() -> str:
    found = chromium_path()
    if found is None:
        message = "no chromium: install Debian's package (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI installs it in .ci/run")
        pytest.skip(message)
    return found


def test_a_browser_searches_for_a_config_key_and_follows_links(site: Path, tmp_path: Path) -> None:
    shots = Path(os.environ.get("TJX_DOCS_SCREENSHOTS") or tmp_path)
    with serve(site) as base, chromium(_browser()) as page:
        page.goto(base)
        assert page.evaluate("document.title").startswith("tjx")
        home = page.screenshot(shots / "home.png")
        # Type into Material's search box, as a person would, and wait for its results.
        page.evaluate(
            "(() => { const box = document.querySelector('input.md-search__input');"
            " box.focus(); box.value = 'gpu_autotune';"
            " box.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )
        hits = page.wait_for(
            "Array.from(document.querySelectorAll('.md-search-result__item a'))"
            ".map(a => a.href).filter(h => h.includes('#train.gpu_autotune'))",
            "a search result for train.gpu_autotune",
        )
        page.evaluate(f"document.querySelector('a[href=\"{hits[0]}\"]').click()")
        page.wait_for(
            "document.readyState === 'complete' && location.pathname.endsWith('/reference/config/')"
            " && location.hash === '#train.gpu_autotune'"
            " && document.getElementById('train.gpu_autotune') !== null",
            "the search result to open on the key's entry",
        )
        assert page.evaluate(
            "document.querySelector('article').innerText.includes('xla_gpu_autotune_level')"
        )
        # From the home page to a guide, and from the guide to the resume section.
        page.goto(base)
        page.evaluate("document.querySelector('article a[href*=\"guides/quickstart\"]').click()")
        page.wait_for(
            "document.readyState === 'complete'"
            " && location.pathname.endsWith('/guides/quickstart/')"
            " && document.querySelector('article a[href*=\"checkpoints\"]') !== null",
            "the quickstart",
        )
        guide = page.screenshot(shots / "guide.png")
        page.evaluate("document.querySelector('article a[href*=\"checkpoints\"]').click()")
        page.wait_for(
            "document.readyState === 'complete'"
            " && location.pathname.endsWith('/guides/checkpoints/')"
            " && document.getElementById('resume-a-run') !== null",
            "the resume guide",
        )
    for shot in (home, guide):
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, shot
