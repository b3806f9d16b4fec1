"""``python -m tjx_docs.build [--out DIR] [--root REPO]``: stage the site (docs/, the
repository's pages, the generated references) and build it with MkDocs in strict mode into DIR
(default ``dist/docs``). A broken link, a missing heading or any other MkDocs warning fails the
build: one line naming it, exit 2.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tjx_docs import reference
from tjx_docs.pages import MissingTargetError, Pages, seed_pages
from tjx_docs.venv import DocsVenvError, clean_env, docs_python

#: The MkDocs config, beside the guides.
CONFIG = Path("docs") / "mkdocs.yml"


class BuildError(RuntimeError):
    """The site did not build (a broken link, a MkDocs warning): the message says which."""


def find_root(start: Path) -> Path:
    """The repository holding ``start``: the nearest folder up with docs/mkdocs.yml."""
    for folder in (start, *start.parents):
        if (folder / CONFIG).is_file():
            return folder
    raise BuildError(f"no {CONFIG} in {start} or a folder above it; run from the repository")


def stage(root: Path, src: Path) -> Path:
    """Write the site's sources into ``src`` (emptied first) and its MkDocs config beside it;
    return the config's path."""
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    generated = reference.all_pages()
    pages = Pages(root, generated={f"docs/{path}" for path in generated})
    try:
        pages.add_closure(seed_pages(root))
    except MissingTargetError as err:
        raise BuildError(str(err)) from None
    pages.stage(src)
    for path, text in generated.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_text(text, encoding="utf-8")
    config = src.parent / "mkdocs.yml"
    text = (root / CONFIG).read_text(encoding="utf-8")
    config.write_text(text + f"\ndocs_dir: {src.name}\n", encoding="utf-8")
    return config


def build(root: Path, out: Path, *, say: Callable[[str], None] = print) -> float:
    """Build the site of repository ``root`` into ``out`` (replaced); return the seconds taken.

    Raises
    ------
    BuildError
        A page links nowhere, or MkDocs warned (its warnings are the message).
    """
    start = time.monotonic()
    try:
        python = docs_python(say=say)
    except DocsVenvError as err:
        raise BuildError(str(err)) from None
    with tempfile.TemporaryDirectory(prefix="tjx-docs-") as tmp:
        config = stage(root, Path(tmp) / "src")
        out = out.resolve()
        command = [str(python), "-m", "mkdocs", "build", "--strict", "--clean"]
        command += ["--config-file", str(config), "--site-dir", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, env=clean_env(), check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        problems = [line for line in lines if line.startswith(("WARNING", "ERROR"))] or lines[-5:]
        raise BuildError("the docs site did not build (strict mode):\n" + "\n".join(problems))
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    """Build the site; errors are one line (or MkDocs' warning lines) and exit 2."""
    parser = argparse.ArgumentParser(prog="tools/docs build", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="dist/docs", help="where the static site goes")
    parser.add_argument("--root", default=None, help="the repository (default: found from here)")
    args = parser.parse_args(argv)
    try:
        root = Path(args.root).resolve() if args.root else find_root(Path.cwd().resolve())
        seconds = build(root, Path(args.out))
    except BuildError as err:
        print(f"docs: error: {err}", file=sys.stderr)
        return 2
    print(f"docs: built {Path(args.out) / 'index.html'} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
