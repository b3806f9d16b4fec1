"""A run directory URL tjx cannot use is one line naming the problem and the fix, before anything
is written: a scheme tjx cannot serve, a bucket that does not exist, no credentials, a refused
permission (real servers on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest
import tjx_teststores as teststores

from tjx.ckpt import CheckpointManager, RunFolder, check_can_create, storage


@pytest.mark.parametrize("url", ["hdfs://nn/run", "http://host/run", "az://c/run"])
def test_a_scheme_tjx_cannot_serve_is_named_with_the_ones_it_can(url: str) -> None:
    with pytest.raises(storage.UnsupportedURLError) as err:
        RunFolder(url)
    assert str(err.value).startswith(f"{url!r}: tjx cannot write to {url.split(':')[0]}://")
    assert "gs://BUCKET/PATH or s3://BUCKET/PATH" in str(err.value)
    with pytest.raises(storage.UnsupportedURLError):
        CheckpointManager(url)
    with pytest.raises(storage.UnsupportedURLError):
        check_can_create(url)


def test_file_urls_are_local_paths(tmp_path: Path) -> None:
    assert RunFolder(f"file://{tmp_path}/run").path == tmp_path / "run"


def test_a_bucket_that_does_not_exist_is_said_and_nothing_is_written(
    store: teststores.LocalStore,
) -> None:
    url = f"{store.scheme}://no-such-bucket-tjx/run"
    with pytest.raises(storage.BucketNotFoundError) as err:
        check_can_create(url)
    message = str(err.value)
    assert message.startswith(f"bucket {store.scheme}://no-such-bucket-tjx does not exist")
    assert "create it first" in message and "\n" not in message
    with pytest.raises(storage.BucketNotFoundError):
        CheckpointManager(f"{url}/checkpoints", read_only=True)
    with pytest.raises(storage.BucketNotFoundError):
        CheckpointManager(f"{url}/checkpoints")
    assert not storage.filesystem(url).exists("no-such-bucket-tjx")  # nor was it made


@pytest.fixture
def bare_env(store: teststores.LocalStore, tmp_path: Path) -> Iterator[None]:
    """No credentials anywhere a client looks (metadata probes stay on loopback)."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(("AWS_", "GOOGLE_"))]:
        del os.environ[key]
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    os.environ.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_no_credentials_is_said_with_where_to_put_them(
    store: teststores.LocalStore, bare_env: None
) -> None:
    with pytest.raises(storage.NoCredentialsError) as err:
        check_can_create(store.url("run"))
    message = str(err.value)
    if store.scheme == "s3":
        assert "no AWS credentials found: set AWS_ACCESS_KEY_ID" in message
    else:
        assert (
            "no Google Cloud credentials found (none in the standard places): run `gcloud"
            in message
        )
    assert teststores.FAKE_KEY_ID not in message and teststores.FAKE_SECRET not in message


@pytest.mark.parametrize("store", ["gs"], indirect=True)  # S3's chain has no key-file variable
def test_a_gcs_key_file_that_cannot_be_used_is_named(
    store: teststores.LocalStore, bare_env: None, tmp_path: Path
) -> None:
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "missing-key.json")
    with pytest.raises(storage.NoCredentialsError) as err:
        check_can_create(store.url("run"))
    assert "missing-key.json" in str(err.value) and "\n" not in str(err.value)


def _moto_auth_after(store: teststores.LocalStore, requests: float) -> None:
    """moto checks signatures and IAM policies once ``requests`` more requests were served."""
    request = urllib.request.Request(
        f"{store.endpoint}/moto-api/reset-auth",
        data=str(requests).encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},  # a form body would be parsed away
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


# fake-gcs-server has no permissions to refuse; moto checks IAM policies when asked to.
@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_a_refused_permission_is_said_with_the_fix(store: teststores.LocalStore) -> None:
    iam = botocore.session.get_session().create_client(
        "iam", endpoint_url=store.endpoint, region_name="us-east-1"
    )
    user = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                       "Resource": "*"}],
    }  # fmt: skip
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    saved = dict(os.environ)
    fs_class = type(storage.filesystem(store.url()))
    _moto_auth_after(store, 0)
    try:
        os.environ.update(
            AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"]
        )
        fs_class.clear_instance_cache()  # a new client, with these keys
        with pytest.raises(storage.AccessDeniedError) as err:
            check_can_create(store.url("refused"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        fs_class.clear_instance_cache()
        _moto_auth_after(store, float("inf"))
    message = str(err.value)
    assert message.startswith(f"permission refused to write to {store.url('refused')}")
    assert "grant these credentials read and write access" in message
    assert key["SecretAccessKey"] not in message


def test_a_refused_gcs_request_is_said_the_same_way() -> None:
    # What gcsfs raises for a 403 (fake-gcs-server never refuses): the same line as for S3.
    err = storage.storage_error(
        "gs://b/run", PermissionError("Forbidden: caller lacks storage.objects.create"), "write to"
    )
    assert isinstance(err, storage.AccessDeniedError)
    assert str(err) == (
        "permission refused to write to gs://b/run (Forbidden: caller lacks "
        "storage.objects.create): grant these credentials read and write access to objects in "
        "gs://b, or use another bucket"
    )
    other = storage.storage_error("s3://b/run", TimeoutError("timed out"), "read")
    assert str(other) == "cannot read s3://b/run: TimeoutError: timed out"
