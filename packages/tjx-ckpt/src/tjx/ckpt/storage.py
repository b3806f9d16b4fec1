"""Where a run lives: a local folder, or a ``gs://`` / ``s3://`` URL, and what tjx needs of each.

A run directory (and a checkpoint directory) may be a local path or a URL of an object store:

========  ===================  ========================================================
scheme    served by            endpoint and credentials (the standard settings)
========  ===================  ========================================================
(none)    the OS               a local (or mounted) file system
``gs://`` gcsfs, tensorstore   ``STORAGE_EMULATOR_HOST`` (an emulator); Application
                               Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
                               ``gcloud auth application-default login``, the VM's account)
``s3://`` s3fs, tensorstore    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (MinIO, moto,
                               R2...); the AWS chain (``AWS_ACCESS_KEY_ID`` ...,
                               ``AWS_PROFILE`` and ``~/.aws``, an instance role)
========  ===================  ========================================================

Why these libraries: orbax takes and hands back `etils.epath` paths, so one path type goes
through the run directory, the checkpoint manager and orbax's own metadata files; epath serves
``gs://`` and ``s3://`` through fsspec's gcsfs and s3fs (etils' ``epath-gcs`` / ``epath-s3``
extras), which read the endpoint and credential settings above themselves. The arrays are
written by tensorstore's own ``gcs`` and ``s3`` key-value stores (orbax's choice: parallel,
ranged, retried). What tjx adds is what those libraries do not give: one process-wide setup
(:func:`configure`) so that every layer reaches the same endpoint, a check before anything is
written (:func:`check_remote`: credentials, the bucket, a write), whole-object writes, the size
list and the marker-first deletion of a step (``tjx.ckpt.remote``).

Standard library only at import (``import tjx.ckpt`` stays light): etils and fsspec are imported
for the first URL.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any, Union

from tjx.ckpt.errors import NotCreatableError, one_line
from tjx.core.lazy import lazy_imports

with lazy_imports(globals()):  # a local run never needs it (nor its fsspec)
    from etils import epath

#: A location tjx writes a run to: a local `Path`, or an `epath.Path` for a URL.
StoragePath = Union[Path, "epath.Path"]

#: The URL schemes tjx serves → (the fsspec package that serves it, the pip extra that adds it).
SCHEMES = {"gs": ("gcsfs", "tjx-ckpt[gcs]"), "s3": ("s3fs", "tjx-ckpt[s3]")}
_FSSPEC_PROTOCOL = {"gs": "gcs", "s3": "s3"}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: What a write probe is called (made and removed at once by `check_remote`).
PROBE_PREFIX = ".tjx-write-probe-"


class StorageError(NotCreatableError):
    """A run directory URL tjx cannot use: ``.path`` the URL; the message names the problem and
    the fix in one line (an app prints it as its error line and exits 2).

    A `NotCreatableError` (so a `CheckpointError` and a ``ValueError``): an app that checks a
    folder it will make with `check_can_create` catches it there too.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)  # .path: the URL as given


class UnsupportedURLError(StorageError):
    """A URL whose scheme tjx cannot serve (``hdfs://``, ``http://``, ...)."""


class BucketNotFoundError(StorageError):
    """The URL's bucket does not exist."""


class NoCredentialsError(StorageError):
    """No credentials were found in the standard places."""


class AccessDeniedError(StorageError):
    """The store refused the request (a permission missing)."""


def scheme_of(path: Any) -> str | None:
    """``"gs"``, ``"s3"`` (or any other URL's scheme), or None for a local path."""
    match = _URL.match(os.fspath(path)) if isinstance(path, str | os.PathLike) else None
    return match.group(1).lower() if match else None


def is_remote(path: Any) -> bool:
    """Whether ``path`` is an object-store URL (``gs://``, ``s3://``)."""
    return scheme_of(path) in SCHEMES


def as_path(location: str | os.PathLike[str]) -> StoragePath:
    """The path object tjx uses for ``location``: a `Path`, or an `epath.Path` for a URL.

    ``file://PATH`` is the local ``PATH``.

    Raises
    ------
    UnsupportedURLError
        A URL of another scheme.
    """
    text = os.fspath(location)
    scheme = scheme_of(text)
    if scheme is None:
        return location if isinstance(location, Path) else Path(text)
    if scheme == "file":
        return Path(text[len("file://") :])
    if scheme not in SCHEMES:
        raise UnsupportedURLError(
            text,
            f"{text!r}: tjx cannot write to {scheme}:// URLs; use a local path, "
            "gs://BUCKET/PATH or s3://BUCKET/PATH",
        )
    configure()
    return epath.Path(text)


def bucket_and_key(path: Any) -> tuple[str, str]:
    """``("bucket", "a/b")`` of ``gs://bucket/a/b`` (no trailing slash)."""
    rest = _URL.sub("", os.fspath(path), count=1)
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


_UNSET = object()
_configured_for: Any = _UNSET  # the STORAGE_EMULATOR_HOST the settings below were made for
_set_by_us: dict[str, str] = {}


def configure() -> None:
    """Point every layer tjx uses at the same endpoints (for the first URL; again only when
    ``STORAGE_EMULATOR_HOST`` changed).

    - ``STORAGE_EMULATOR_HOST`` (what Google's clients and gcsfs read) is given to tensorstore
      as ``TENSORSTORE_GCS_HTTP_URL`` (unless the user set that): its ``gcs`` store reads only
      that. An emulator takes anonymous requests, as google-cloud-storage's client sends them
      there: gcsfs is told so (``token="anon"``) unless ``GOOGLE_APPLICATION_CREDENTIALS``
      names a key; and gcsfs' bucket-type lookup, a gRPC call emulators do not serve (each one
      waits 60 s), is turned off (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` unless set).
    - ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` are read by botocore (s3fs) themselves;
      tensorstore's ``s3`` store takes the endpoint in its spec (`tensorstore_s3_spec`).
    - fsspec's listing cache is off for both: another process (a peer host, a later run) writes
      the same directories, and a cached listing would hide its steps.
    """
    global _configured_for
    emulator = os.environ.get("STORAGE_EMULATOR_HOST") or None
    if emulator == _configured_for:
        return
    _configured_for = emulator
    for key, value in list(_set_by_us.items()):  # undo what was set for another emulator
        if key.startswith("fsspec:"):
            continue
        if os.environ.get(key) == value:
            del os.environ[key]
        del _set_by_us[key]
    if emulator:
        url = (emulator if "://" in emulator else f"http://{emulator}").rstrip("/")
        for key, value in (
            ("TENSORSTORE_GCS_HTTP_URL", url),
            ("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false"),
        ):
            if key not in os.environ:
                os.environ[key] = _set_by_us[key] = value
    import fsspec

    for scheme, protocol in _FSSPEC_PROTOCOL.items():
        conf = fsspec.config.conf.setdefault(protocol, {})
        conf.setdefault("use_listings_cache", False)
        if scheme == "gs":
            if conf.get("token") == "anon" and _set_by_us.pop("fsspec:gcs.token", None):
                del conf["token"]  # set for an emulator that is gone
            anonymous = emulator and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
            if anonymous and "token" not in conf:
                conf["token"] = _set_by_us["fsspec:gcs.token"] = "anon"


def filesystem(path: Any) -> Any:
    """The fsspec file system serving URL ``path`` (the instance epath uses too).

    Raises
    ------
    StorageError
        The package that serves the scheme is not installed (the message names the extra).
    """
    scheme = scheme_of(path)
    if scheme not in SCHEMES:
        raise UnsupportedURLError(str(path), f"{str(path)!r} is not a gs:// or s3:// URL")
    configure()
    package, extra = SCHEMES[scheme]
    try:
        __import__(package)
    except ImportError:
        raise StorageError(
            str(path),
            f"{scheme}:// needs the Python package {package}, which is not installed: "
            f"pip install '{extra}'",
        ) from None
    import fsspec

    # epath asks for exactly these arguments, so fsspec hands back its cached instance.
    kwargs = {"finalize_on_close": True} if scheme == "gs" else {}
    return fsspec.filesystem(_FSSPEC_PROTOCOL[scheme], **kwargs)


def credentials_problem(scheme: str) -> str | None:
    """Why no credentials for ``scheme`` are found in the standard places, or None.

    Only whether some are found (nothing is printed or kept): GCS through ``google.auth.default``
    (not needed with an emulator), S3 through botocore's chain. An emulator or S3-compatible
    store still needs (any) AWS keys for the request signature.
    """
    if scheme == "gs":
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            return None
        import google.auth  # pants: no-infer-dep  (gcsfs's dependency: the gcs extra)
        import google.auth.exceptions  # pants: no-infer-dep

        try:
            google.auth.default()
        except google.auth.exceptions.DefaultCredentialsError as err:
            # google-auth's reason names a file it could not use, never a secret.
            reason = "none in the standard places" if "were not found" in str(err) else err
            return (
                f"no Google Cloud credentials found ({one_line(str(reason))}): run `gcloud "
                "auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service-account key file"
            )
        return None
    import botocore.session  # pants: no-infer-dep  (s3fs's dependency: the s3 extra)

    if botocore.session.Session().get_credentials() is None:
        return (
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "AWS_PROFILE with a profile in ~/.aws/credentials (or run with an instance role)"
        )
    return None


def storage_error(path: Any, err: BaseException, doing: str) -> StorageError:
    """One-line `StorageError` for a failed request ``doing`` (``"write to"``) on ``path``.

    fsspec's stores raise ``FileNotFoundError`` for a bucket that does not exist (the only way a
    write, or a listing of a narrow prefix, can be "not found") and ``PermissionError`` for a
    refused request; the store's own reason is kept, credentials never are (they are not in
    these messages).
    """
    url = os.fspath(path)
    bucket, _ = bucket_and_key(url)
    scheme = scheme_of(url) or ""
    reason = one_line(str(err)) or type(err).__name__
    if isinstance(err, FileNotFoundError):
        return BucketNotFoundError(
            url,
            f"bucket {scheme}://{bucket} does not exist (cannot {doing} {url}): create it "
            "first, or check the bucket's name",
        )
    if isinstance(err, PermissionError):
        return AccessDeniedError(
            url,
            f"permission refused to {doing} {url} ({reason}): grant these credentials "
            f"read and write access to objects in {scheme}://{bucket}, or use another bucket",
        )
    return StorageError(url, f"cannot {doing} {url}: {type(err).__name__}: {reason}")


def check_remote(path: Any, *, write: bool) -> None:
    """Raise a one-line `StorageError` unless the run directory URL ``path`` can be used.

    In order: the scheme's client package is installed, credentials are found, and the bucket
    answers: with ``write``, a probe object (``.tjx-write-probe-<uuid>``) is written under
    ``path`` and deleted (only doing proves a write is allowed); without, a listing of a prefix
    under ``path`` that holds nothing. Nothing else is written.
    """
    fs = filesystem(path)
    url = os.fspath(path).rstrip("/")
    problem = credentials_problem(scheme_of(url) or "")
    if problem:
        raise NoCredentialsError(url, f"cannot use {url}: {problem}")
    probe = f"{url}/{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        if write:
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
        else:
            fs.find(probe)
    except Exception as err:  # fsspec's OSErrors, botocore's and aiohttp's own: one line each
        raise storage_error(url, err, "write to" if write else "read") from None


def tensorstore_s3_spec(url: str) -> dict[str, Any]:
    """tensorstore's ``s3`` key-value store spec of ``url`` (``s3://bucket/key``).

    tensorstore does not read ``AWS_ENDPOINT_URL``: the endpoint (``AWS_ENDPOINT_URL_S3``, else
    ``AWS_ENDPOINT_URL``) and the region (``AWS_REGION`` / ``AWS_DEFAULT_REGION``; else
    tensorstore asks the bucket) go into the spec. Credentials: tensorstore's default AWS chain
    (environment, profile files, instance metadata), as botocore's.
    """
    bucket, key = bucket_and_key(url)
    spec: dict[str, Any] = {"driver": "s3", "bucket": bucket, "path": key}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        spec["endpoint"] = endpoint.rstrip("/")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        spec["aws_region"] = region
    return spec


__all__ = [
    "PROBE_PREFIX",
    "SCHEMES",
    "AccessDeniedError",
    "BucketNotFoundError",
    "NoCredentialsError",
    "StorageError",
    "StoragePath",
    "UnsupportedURLError",
    "as_path",
    "bucket_and_key",
    "check_remote",
    "configure",
    "credentials_problem",
    "filesystem",
    "is_remote",
    "scheme_of",
    "storage_error",
    "tensorstore_s3_spec",
]
