"""The shard cache is a local folder: a URL is one DataError naming what to do instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from tjx.data import DataError, load_tokenizer, prepare_shards
from tjx.data.cache import cache_root, local_cache_folder


@pytest.mark.parametrize("url", ["gs://bucket/cache", "s3://bucket/cache", "hdfs://nn/c"])
def test_a_url_cache_is_refused_with_the_way_to_share_one(url: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        prepare_shards(str(tmp_path / "t.txt"), load_tokenizer("byte"), url)
    assert err.value.argument == "cache_dir"
    assert str(err.value).startswith(f"{url!r}: the shard cache must be a local folder")
    assert "python -m tjx.data SOURCE --cache-dir DIR" in str(err.value)
    with pytest.raises(DataError):
        cache_root(url)
    assert list(tmp_path.iterdir()) == []


def test_local_folders_and_file_urls_are_the_cache(tmp_path: Path) -> None:
    assert local_cache_folder(f"file://{tmp_path}") == tmp_path
    assert local_cache_folder("~/x") == Path.home() / "x"
    assert cache_root(str(tmp_path)) == tmp_path
