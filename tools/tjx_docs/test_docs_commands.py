"""Every shell command in the guides is run, or says why not (#74): each fenced shell block of a
guide carries a marker (tjx_docs.commands); ``run`` blocks run here on CPU, shrunk, page by page
in a fresh folder; ``ci`` blocks are commands CI runs itself; an unmarked block fails."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests_integration._deviceless import scratch_env
from tests_integration._helpers_apps import app_env
from tjx_docs.commands import (
    Block,
    Invocation,
    MarkerError,
    blocks,
    commands,
    invocation,
    shell_blocks,
    unmarked,
)

ROOT = Path(__file__).resolve().parents[2]
#: The guides: docs/ but the records of past studies and GPU sessions (docs/experiments,
#: docs/gpu), whose commands are what was run then, not instructions.
RECORDS = ("docs/experiments/", "docs/gpu/")
#: The command the site's test runs to build the site (test_docs_site.py): a ``ci`` block may
#: name it.
SITE_BUILD = "tools/docs build --out dist/docs"


def guide_pages() -> list[str]:
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))
    return [p for p in pages if not p.startswith(RECORDS)]


def _blocks(kind: str) -> list[Block]:
    found = []
    for page in guide_pages():
        text = (ROOT / page).read_text(encoding="utf-8")
        found += [b for b in shell_blocks(text, page) if b.marker == kind]
    return found


def test_the_guides_are_there_and_every_shell_block_is_marked() -> None:
    pages = guide_pages()
    assert "docs/guides/quickstart.md" in pages and "docs/guides/checkpoints.md" in pages
    missing = [w for p in pages for w in unmarked((ROOT / p).read_text(encoding="utf-8"), p)]
    assert not missing, f"mark each shell block (run, ci, gpu-only, network): {missing}"
    assert _blocks("run") and _blocks("ci"), "the guides run commands"


def test_an_unmarked_or_mislabelled_block_is_found() -> None:
    text = "Train:\n\n```bash\npython -m trainer --config tiny\n```\n\n"
    text += "<!-- run -->\n```sh\nls\n```\n"
    assert unmarked(text, "p.md") == ["p.md:3"]
    assert unmarked("````\n```bash\nx\n```\n````\n", "p.md") == ["p.md:1"]  # no language
    assert unmarked("<!-- gpu-only -->\n```text\nout\n```\n", "p.md") == []  # output, no shell
    with pytest.raises(MarkerError, match="unknown marker 'skip'"):
        blocks("<!-- skip -->\n```bash\nx\n```\n", "p.md")
    with pytest.raises(MarkerError, match="only run takes substitutions"):
        blocks("<!-- ci: a => b -->\n```bash\nx\n```\n", "p.md")


def test_commands_are_split_shrunk_and_substituted() -> None:
    text = (
        "<!-- run: gpt2_small => tiny -->\n```bash\n# a comment\n"
        "JAX_PLATFORMS=cpu ./pants run apps/trainer -- --config gpt2_small \\\n"
        "    --plan 8xh100   # trailing\n./pants run apps/eval -- --checkpoint runs/tiny\n```\n"
    )
    [block] = blocks(text, "p.md")
    first, second = commands(block)
    assert first == "JAX_PLATFORMS=cpu ./pants run apps/trainer -- --config tiny --plan 8xh100"
    run = invocation(first, ROOT)
    assert run.env == {"JAX_PLATFORMS": "cpu"} and run.app == "trainer" and run.plans
    assert run.argv[1:3] == ["-m", "trainer"]
    assert run.argv[-4:] == ["--config", "tiny", "--plan", "8xh100"]
    assert "train.steps=4" in run.argv  # the shrink, before the block's own flags
    assert invocation(second, ROOT).argv[-2:] == ["--checkpoint", "runs/tiny"]
    assert invocation("tools/docs build", ROOT).argv == [str(ROOT / "tools/docs"), "build"]
    bad = Block("p.md", 1, "bash", "run", [("nothing", "x")], "ls")
    with pytest.raises(MarkerError, match="matches nothing"):
        commands(bad)


def test_ci_blocks_are_commands_ci_runs() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")  # //:ci-script in Pants' sandbox
    for block in _blocks("ci"):
        for command in commands(block):
            ran = command in script or command == SITE_BUILD
            assert ran, f"{block.where}: CI never runs {command!r}"


def _run_pages() -> list[str]:
    return sorted({b.page for b in _blocks("run")})


#: The folders a command left, by that command (its argv and environment) and the files of the
#: folder it started from (`_files`).
Launched = dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...], str], Path]


@pytest.fixture(scope="module")
def launched() -> Launched:
    """Where each command ran, for the pages after it that run it again on the same files.

    Four guides start with the same shrunk ``python -m trainer --config tiny`` in an empty
    folder, and two of them then evaluate that run with the same ``python -m eval``: one process
    runs each, and each later page goes on from a copy of the folder as that command left it (the
    files the same command would write there again), not a process more."""
    return {}


def _files(folder: Path) -> str:
    """One digest of every file under ``folder``: its path, its bytes, its links."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        if path.is_symlink():
            digest.update(b"->" + os.readlink(path).encode())
        elif path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _launch(run: Invocation, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = app_env()
    if run.plans:  # a deviceless compile: jax's CUDA plugin, the deviceless tests' copy
        env = {k: v for k, v in env.items() if not k.startswith("JAX_COMPILATION_CACHE")}
        env["PYTHONPATH"] += os.pathsep + str(scratch_env("cuda12")[0])
    env.update(run.env)
    return subprocess.run(
        run.argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.mark.parametrize("page", _run_pages())
def test_the_run_blocks_of_a_guide_run(
    page: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, launched: Launched
) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    for block in shell_blocks(text, page):
        if block.marker != "run":
            continue
        for command in commands(block):
            run = invocation(command, ROOT)
            key = (tuple(run.argv), tuple(sorted(run.env.items())), _files(tmp_path))
            if key in launched:  # this very command ran before on these very files
                shutil.rmtree(tmp_path)
                shutil.copytree(launched[key], tmp_path, symlinks=True)
                continue
            done = _launch(run, tmp_path)
            assert done.returncode == 0, (
                f"{block.where}: {command!r} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
            launched[key] = tmp_path_factory.mktemp("launched")
            shutil.copytree(tmp_path, launched[key], symlinks=True, dirs_exist_ok=True)
