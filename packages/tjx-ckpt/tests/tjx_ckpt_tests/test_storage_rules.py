"""The rules behind run directories in object storage, without a server: URL parsing, the
endpoint setup, tensorstore's s3 spec, a missing client package, and keep-N / best-K."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import fsspec  # pants: no-infer-dep  (the BUILD names gcsfs and s3fs, which bring it)
import pytest

from tjx.ckpt import storage
from tjx.ckpt.retention import steps_to_remove


def test_urls_and_local_paths_are_told_apart() -> None:
    assert storage.scheme_of("gs://b/x") == "gs" and storage.scheme_of("S3://b") == "s3"
    assert storage.scheme_of("runs/x") is None and storage.scheme_of(Path("a:b")) is None
    assert storage.is_remote("s3://b/x") and not storage.is_remote("hdfs://x")
    assert storage.bucket_and_key("gs://b/a/b/") == ("b", "a/b")
    assert storage.bucket_and_key("s3://b") == ("b", "")
    assert storage.as_path("file:///tmp/x") == Path("/tmp/x")
    assert str(storage.as_path("gs://b/run") / "checkpoints") == "gs://b/run/checkpoints"


def test_tensorstore_gets_the_s3_endpoint_and_region_from_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    assert storage.tensorstore_s3_spec("s3://b/k/x") == {
        "driver": "s3",
        "bucket": "b",
        "path": "k/x",
    }
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    spec = storage.tensorstore_s3_spec("s3://b/k")
    assert spec["endpoint"] == "http://127.0.0.1:1" and spec["aws_region"] == "eu-west-1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")  # the S3-specific one wins
    assert storage.tensorstore_s3_spec("s3://b/k")["endpoint"] == "http://127.0.0.1:2"


def test_an_emulator_reaches_tensorstore_and_gcsfs_and_is_undone_when_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("TENSORSTORE_GCS_HTTP_URL", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")
    storage.configure()
    try:
        assert storage.os.environ["TENSORSTORE_GCS_HTTP_URL"] == "http://127.0.0.1:4443"
        assert fsspec.config.conf["gcs"]["token"] == "anon"
        assert fsspec.config.conf["s3"]["use_listings_cache"] is False
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:5555/")
        storage.configure()
        assert storage.os.environ["TENSORSTORE_GCS_HTTP_URL"] == "http://127.0.0.1:5555"
    finally:
        monkeypatch.delenv("STORAGE_EMULATOR_HOST")
        storage.configure()
    assert "TENSORSTORE_GCS_HTTP_URL" not in storage.os.environ
    assert "token" not in fsspec.config.conf["gcs"]


def test_a_missing_client_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs fails
    with pytest.raises(storage.StorageError) as err:
        storage.filesystem("s3://b/run")
    assert str(err.value) == (
        "s3:// needs the Python package s3fs, which is not installed: pip install 'tjx-ckpt[s3]'"
    )


def test_keep_last_and_best_follow_orbaxs_rule() -> None:
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: 0.5, 5: 3.0, 6: math.nan, 7: None}
    rule = dict(metric_of=losses.get, keep_last=2, keep_best=2)
    assert steps_to_remove(list(losses), **rule) == [1, 3, 5]  # keep 6, 7 (last) + 4, 2 (best)
    assert steps_to_remove(list(losses), **rule, best_mode="max") == [2, 4, 5]  # + 1, 3
    assert steps_to_remove([3, 1, 2], keep_last=1, keep_best=None, metric_of=losses.get) == [1, 2]
    assert steps_to_remove([1, 2], keep_last=None, keep_best=1, metric_of=losses.get) == []
