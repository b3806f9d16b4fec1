"""One writer per run directory: a lock taken before anything in the directory is written.

Two training processes in one run directory corrupt it: the second rewrites the first one's
``config.yaml``, both append to one metrics log, both save the same steps. `RunLock` lets one
process at a time write a run directory, whatever its storage, and says who holds it to the
next one (`RunLockedError`); `check_unlocked` asks without taking it (nothing is written).
Readers (an evaluation of a run that trains) take no lock.

=============  ========================================  ========================================
storage        the lock                                  when its holder dies (``kill -9`` too)
=============  ========================================  ========================================
local disk     ``flock(2)`` on ``RUN/.tjx-lock``, which  the kernel releases it at once: the
               names the holder (owner, host, pid,       next process takes it (the file, left
               time)                                     behind, is rewritten)
``gs://``,     a lease object ``RUN/.tjx-lease/N.json``  its heartbeat stops; once the lease is
``s3://``      created only if absent (GCS               `LEASE_TIMEOUT_S` old (by the store's
               ``ifGenerationMatch=0``, S3               clock against the taker's) the next
               ``If-None-Match: *``), rewritten every    process creates lease ``N+1`` (again
               `HEARTBEAT_S` by a thread of its holder   only if absent) and removes the old one;
                                                         at once if the taker runs on the same
                                                         machine and pid namespace and finds no
                                                         process with the holder's pid
=============  ========================================  ========================================

Why these: a local file system gives advisory locks that die with their process, so a crashed
run never strands its directory; an object store has no locks and no rename, only an object
written whole and the precondition "create it only if absent", checked and written as one step
(both stores, and their emulators). A taken-over lease is never written again: a new holder
creates the next number, so of two processes taking over one stale lease exactly one wins, and
a holder that was only late (a suspended machine, a network cut longer than the timeout) finds
its lease gone or a newer one at its next heartbeat: it says so in one line (``on_lost``) and
keeps no claim. What a lease cannot give: a late holder keeps running until the app stops it,
and the takeover trusts this machine's clock to within the timeout (NTP keeps clocks within
milliseconds).

A lock is released when its holder ends: the lock file removed (the directory too, if the lock
made it and nothing else was written there), the lease deleted. `release_held_locks` releases
every lock of the process before it leaves with ``os._exit``, which runs no ``finally``.

Standard library only (fsspec through `tjx.ckpt.objects` for a URL): an app locks its run
directory before it imports jax.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from tjx.ckpt import objects, storage
from tjx.ckpt.errors import CheckpointError, NotCreatableError
from tjx.ckpt.storage import StorageError, StoragePath

#: The local lock file in a run directory (``flock``ed by its holder, holding its record).
LOCK_FILE = ".tjx-lock"
#: The prefix of a run directory in object storage that holds its lease objects (``N.json``).
LEASE_DIR = ".tjx-lease"
#: A lease whose last heartbeat is older than this is taken over (seconds).
LEASE_TIMEOUT_S = 60.0
#: How often a lease's holder rewrites it (seconds): six heartbeats fit in the timeout, so a
#: request or two that fail (a network hiccup) cost nothing.
HEARTBEAT_S = 10.0
#: How long a local `RunLock.acquire` retries a lock another process holds before it gives up:
#: `check_unlocked` holds it (shared) for an instant, which must not refuse a real start.
LOCAL_SETTLE_S = 0.5
#: The ``format`` of a lock's record.
RECORD_FORMAT = "tjx-run-lock"
#: errnos of a file system whose ``flock`` cannot work (NFS without a lock daemon, some FUSE
#: mounts, Lustre without its ``flock`` option): the run goes on, said in `RunLock.note`.
FLOCK_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL)
_TRIES = 5  # takeovers lost to another process in a row before a lease counts as held


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """Who holds a run directory's lock, from its record.

    Attributes
    ----------
    owner : str
        What the holder called itself (``"trainer"``).
    host : str
        Its host name.
    pid : int
        Its process id on that host.
    since : str
        When it took the lock, ``YYYY-MM-DDTHH:MM:SSZ`` (UTC).
    """

    owner: str
    host: str
    pid: int
    since: str

    @classmethod
    def from_record(cls, text: str | bytes) -> LockHolder | None:
        """The holder a lock's record names, or None for a record that names none (empty: the
        holder is writing it; not ours)."""
        try:
            data = json.loads(text)
            return cls(str(data["owner"]), str(data["host"]), int(data["pid"]), str(data["since"]))
        except (ValueError, TypeError, KeyError):  # JSONDecodeError and UnicodeDecodeError too
            return None

    def words(self) -> str:
        """``pid 4242 on host node-1 since 2026-11-28 01:37:34 UTC``."""
        return f"pid {self.pid} on host {self.host} since {self.since.replace('T', ' ')[:19]} UTC"


class RunLockedError(CheckpointError):
    """Another process holds the run directory's lock; the message says who, in one line.

    ``'runs/x' is in use by another trainer (pid 4242 on host node-1 since 2026-11-28 01:37:34
    UTC)``; for a lease in object storage, also when it would be taken over. An app adds what
    to do (its flag to change).

    Attributes
    ----------
    path : Path or epath.Path
        The run directory.
    holder : LockHolder or None
        Who holds it (None: its record names nobody).
    age_s : float or None
        A lease's seconds since its last heartbeat (object storage); None for a local lock.
    timeout_s : float or None
        The age at which that lease is taken over; None for a local lock.
    """

    def __init__(
        self,
        path: StoragePath,
        holder: LockHolder | None,
        *,
        age_s: float | None = None,
        timeout_s: float | None = None,
    ) -> None:
        owner = holder.owner if holder else "process"
        who = holder.words() if holder else "its lock names no holder"
        message = f"{str(path)!r} is in use by another {owner} ({who})"
        if age_s is not None and timeout_s is not None:
            message += (
                f"; its lease is taken over once its heartbeat is {timeout_s:g} s old (the last "
                f"was {max(age_s, 0.0):.0f} s ago)"
            )
        super().__init__(message)
        self.path = path
        self.holder = holder
        self.age_s = age_s
        self.timeout_s = timeout_s


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _default_on_lost(message: str) -> None:
    print(f"tjx.ckpt: warning: {message}", file=sys.stderr, flush=True)


_HELD: set[RunLock] = set()  # every lock this process holds (`release_held_locks`)


class RunLock:
    """The lock of one run directory (the module docstring says how each storage keeps it).

    A context manager: ``with RunLock(path, owner="trainer"):`` takes it (or raises
    `RunLockedError`) and releases it however the block ends.

    Parameters
    ----------
    path : path, URL or str
        The run directory: a local folder (made, with its parents, if missing: the lock file is
        the first thing written there) or a ``gs://`` / ``s3://`` URL.
    owner : str
        What the holder is, for the record and the next process's message (``"trainer"``).
    timeout_s, heartbeat_s : float
        A lease's timeout and its heartbeat's period (object storage only).
    on_lost : callable, optional
        Called with one line (from the heartbeat's thread) when this process finds that its
        lease was taken over; default: printed as ``tjx.ckpt: warning: ...`` to stderr.

    Attributes
    ----------
    note : str or None
        Set by `acquire` on a file system that cannot lock (``flock`` refused: NFS without a lock
        daemon...): the run goes on unprotected, and an app should print this line.
    """

    def __init__(
        self,
        path: StoragePath | str,
        *,
        owner: str = "process",
        timeout_s: float = LEASE_TIMEOUT_S,
        heartbeat_s: float = HEARTBEAT_S,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.path = storage.as_path(path)
        self.owner = owner
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.on_lost = on_lost or _default_on_lost
        self.note: str | None = None
        self.token = uuid.uuid4().hex
        self.since = ""
        self._remote = storage.is_remote(self.path)
        self._fd: int | None = None
        self._made: list[Path] = []  # local folders the lock made, deepest last
        self._epoch = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _record(self, **extra: str) -> bytes:
        record = {
            "format": RECORD_FORMAT,
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": self.since,
            "token": self.token,
            **_machine(),
            **extra,
        }
        return json.dumps(record, indent=1, sort_keys=True).encode("utf-8")

    def acquire(self) -> RunLock:
        """Take the lock; returns ``self``.

        Raises
        ------
        RunLockedError
            Another process holds it (a live holder: a local lock whose process runs, a lease
            whose heartbeat is younger than ``timeout_s``).
        NotCreatableError
            A local run directory that cannot be made (`StorageError` for a store's refusal).
        """
        if self.held:
            return self
        self.since = _utc_now()
        if self._remote:
            self._acquire_lease()
        else:
            self._acquire_file()
        self.held = True
        _HELD.add(self)
        return self

    def release(self) -> None:
        """Give the lock back (nothing if not held); never raises: a release that fails leaves a
        lock file that locks nothing, or a lease that goes stale in ``timeout_s``."""
        if not self.held:
            return
        self.held = False
        _HELD.discard(self)
        with contextlib.suppress(Exception):
            if self._remote:
                self._release_lease()
            else:
                self._release_file()

    # A local folder: flock(2).

    def _make_folder(self) -> None:
        folder = Path(self.path)
        missing: list[Path] = []
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for made in reversed(missing):
            try:
                made.mkdir()
            except FileExistsError:
                continue  # another process made it meanwhile: not ours to remove
            except OSError as err:
                raise NotCreatableError(
                    self.path, f"cannot create {str(self.path)!r} ({err.strerror or err})"
                ) from None
            self._made.append(made)

    def _acquire_file(self) -> None:
        self._make_folder()
        file = Path(self.path) / LOCK_FILE
        settle = time.monotonic() + LOCAL_SETTLE_S
        while True:
            try:
                fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                raise NotCreatableError(
                    self.path, f"cannot write into {str(self.path)!r} ({err.strerror or err})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < settle:  # perhaps a check_unlocked's instant
                    time.sleep(0.05)
                    continue
                self._remove_made()  # nothing of ours stays (a folder made is empty)
                raise RunLockedError(self.path, _file_holder(file)) from None
            except OSError as err:
                if err.errno not in FLOCK_UNSUPPORTED:
                    os.close(fd)
                    raise
                self.note = (
                    f"{str(self.path)!r} is on a file system that cannot lock files "
                    f"({err.strerror}): another process writing this run directory would not "
                    "be noticed"
                )
            # Its last holder may have removed the file between our open and our flock: then
            # we hold a lock on a file nobody else can find, so open the file there now.
            try:
                same = os.stat(file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._record(), 0)
        self._fd = fd

    def _release_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        file = Path(self.path) / LOCK_FILE
        try:
            # Removed while still locked (a process that opened it meanwhile finds it gone and
            # opens the new one): a finished run's folder keeps no lock file.
            if os.stat(file).st_ino == os.fstat(fd).st_ino:
                os.unlink(file)
        finally:
            os.close(fd)  # the flock goes with the last descriptor of the open file
            self._remove_made()

    def _remove_made(self) -> None:
        """The folders the lock made, if empty: a start refused before it wrote leaves none."""
        for made in reversed(self._made):
            with contextlib.suppress(OSError):
                made.rmdir()  # only when empty
        self._made.clear()

    # An object store: a lease.

    def _lease(self, epoch: int) -> str:
        return f"{os.fspath(self.path).rstrip('/')}/{LEASE_DIR}/{epoch:010d}.json"

    def _acquire_lease(self) -> None:
        url = os.fspath(self.path)
        try:
            for _ in range(_TRIES):
                epochs = _lease_epochs(self.path)
                latest = epochs[-1] if epochs else 0
                if latest:
                    try:
                        holder, age, dead = _lease_holder(self._lease(latest))
                    except FileNotFoundError:
                        continue  # released (or taken over) meanwhile: look again
                    if age < self.timeout_s and not dead:
                        raise RunLockedError(self.path, holder, age_s=age, timeout_s=self.timeout_s)
                try:
                    objects.create_whole(self._lease(latest + 1), self._record())
                except FileExistsError:
                    continue  # another process took this number first: look again
                self._epoch = latest + 1
                for old in epochs:  # a stale holder that wakes finds its lease gone
                    with contextlib.suppress(FileNotFoundError):
                        storage.filesystem(url).rm_file(self._lease(old))
                break
            else:  # every number taken by another process first: it holds the lock now
                holder, age, _ = _lease_holder(self._lease(_lease_epochs(self.path)[-1]))
                raise RunLockedError(self.path, holder, age_s=age, timeout_s=self.timeout_s)
        except (RunLockedError, StorageError):
            raise
        except Exception as err:  # fsspec's, botocore's and aiohttp's errors: one line
            raise storage.storage_error(url, err, "lock") from None
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"tjx-run-lock-{self._epoch}", daemon=True
        )
        self._thread.start()

    def _lost(self) -> str | None:
        """Why this lease is no longer ours (taken over), or None while it is."""
        try:
            record = json.loads(objects.read_bytes(self._lease(self._epoch)))
        except FileNotFoundError:
            record = None
        newer = [e for e in _lease_epochs(self.path) if e > self._epoch]
        if record is not None and record.get("token") == self.token and not newer:
            return None
        taker = _lease_holder(self._lease(newer[-1]))[0] if newer else None
        by = f" by {taker.owner} {taker.words()}" if taker else ""
        return (
            f"the lease of {str(self.path)!r} was taken over{by} (this process's heartbeat was "
            f"over {self.timeout_s:g} s late, or the lease was removed): two processes may now "
            "write the run directory"
        )

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                lost = self._lost()
                if lost is not None:
                    self.held = False
                    _HELD.discard(self)
                    self.on_lost(lost)
                    return
                objects.write_whole(self._lease(self._epoch), self._record(heartbeat=_utc_now()))
            except Exception:  # a failed request: the next heartbeat tries again
                continue

    def _release_lease(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        lease = self._lease(self._epoch)
        with contextlib.suppress(FileNotFoundError):
            # Only our own: a lease taken over (and so perhaps reused) is its new holder's.
            if json.loads(objects.read_bytes(lease)).get("token") == self.token:
                storage.filesystem(lease).rm_file(lease)


def _file_holder(file: Path) -> LockHolder | None:
    """The holder a locked local lock file names (read again for a moment while it is empty:
    its holder writes it just after taking the lock)."""
    deadline = time.monotonic() + LOCAL_SETTLE_S
    while True:
        try:
            holder = LockHolder.from_record(file.read_bytes())
        except OSError:
            holder = None
        if holder is not None or time.monotonic() >= deadline:
            return holder
        time.sleep(0.05)


def _lease_epochs(path: StoragePath) -> list[int]:
    """The numbers of the lease objects under a run directory URL, ascending."""
    fs = storage.filesystem(path)
    try:
        names = fs.ls(f"{os.fspath(path).rstrip('/')}/{LEASE_DIR}", detail=False)
    except FileNotFoundError:
        return []
    stems = [str(n).rstrip("/").rsplit("/", 1)[-1].removesuffix(".json") for n in names]
    return sorted(int(s) for s in stems if s.isdigit())


def _machine() -> dict[str, str]:
    """What tells this machine and pid namespace apart from any other (Linux: the boot's id and
    the pid namespace's inode; elsewhere nothing): a lease's holder is known dead at once only
    where its pid means the same process as here."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return {"boot_id": boot, "pid_ns": str(os.stat("/proc/self/ns/pid").st_ino)}
    except OSError:
        return {}


def _dead(record: dict[str, object]) -> bool:
    """Whether the process holding a lease is known gone: it ran on this machine, in this pid
    namespace (`_machine`, and the host's name), and no process has its pid now. Anything else
    (another machine, a container of its own, a pid reused since: alive) waits for the timeout."""
    here = _machine()
    if not here or record.get("host") != socket.gethostname():
        return False
    if any(record.get(key) != value for key, value in here.items()):
        return False
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, another user's
        return False
    return False


def _lease_holder(lease: str) -> tuple[LockHolder | None, float, bool]:
    """A lease's holder (None: its record names none), the seconds since its last heartbeat, and
    whether its process is known dead (`_dead`); ``FileNotFoundError`` when it is gone."""
    age = objects.age_s(lease)
    raw = objects.read_bytes(lease)
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    dead = isinstance(record, dict) and _dead(record)
    return LockHolder.from_record(raw), age, dead


def check_unlocked(path: StoragePath | str, *, timeout_s: float = LEASE_TIMEOUT_S) -> None:
    """Raise `RunLockedError` if a live process holds the lock of run directory ``path``.

    Nothing is written: a missing lock file or lease means free; a local lock file is locked
    (shared) for an instant to ask the kernel. Run it before a run's other checks, so that a
    second process is told first what is really in its way; `RunLock.acquire` decides.

    Raises
    ------
    RunLockedError
        A live holder (as `RunLock.acquire` would say).
    StorageError
        A store's request failed.
    """
    path = storage.as_path(path)
    if storage.is_remote(path):
        try:
            epochs = _lease_epochs(path)
            if not epochs:
                return
            lease = f"{os.fspath(path).rstrip('/')}/{LEASE_DIR}/{epochs[-1]:010d}.json"
            try:
                holder, age, dead = _lease_holder(lease)
            except FileNotFoundError:
                return  # released meanwhile
        except StorageError:
            raise
        except Exception as err:
            raise storage.storage_error(os.fspath(path), err, "read the lock of") from None
        if age < timeout_s and not dead:
            raise RunLockedError(path, holder, age_s=age, timeout_s=timeout_s)
        return
    file = Path(path) / LOCK_FILE
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no lock file (or none readable): nobody holds it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunLockedError(path, _file_holder(file)) from None
    except OSError:
        return  # a file system that cannot lock: RunLock.acquire says so
    finally:
        os.close(fd)


def release_held_locks() -> None:
    """Release every `RunLock` this process holds: call it before ``os._exit`` (a second Ctrl-C,
    a lost peer), which runs no ``finally`` and so no ``with`` block's release."""
    for lock in list(_HELD):
        lock.release()


__all__ = [
    "HEARTBEAT_S",
    "LEASE_DIR",
    "LEASE_TIMEOUT_S",
    "LOCK_FILE",
    "LockHolder",
    "RunLock",
    "RunLockedError",
    "check_unlocked",
    "release_held_locks",
]
