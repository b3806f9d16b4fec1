"""Launch parameters: generic table, per-device JSON tables, validation, merging, and a call."""

from __future__ import annotations

import dataclasses
import json
import types
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tjx.kernels.flash as flash
from tjx.kernels import AttentionMask, LaunchDefaults, default_launch, flash_attention
from tjx.kernels._checks import AttentionShapes
from tjx.kernels.launch import (
    ENV_VAR,
    clear_launch_cache,
    device_kind_of_default_device,
    entry_key,
    generic_launch,
    load_launch_tables,
    merge_launch_table,
)

from ._ref import np_attention, np_mask, rel_err

F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16
H100 = "NVIDIA H100 80GB HBM3"
SMALL = LaunchDefaults(16, 32, 2, 32, 16, 1, num_stages=3, num_stages_bwd=1)
ENTRY = {
    "block_q": 64,
    "block_k": 32,
    "num_warps": 4,
    "num_stages": 3,
    "block_q_bwd": 16,
    "block_k_bwd": 32,
    "num_warps_bwd": 2,
    "num_stages_bwd": 4,
}


@pytest.fixture
def table(tmp_path, monkeypatch):
    """Write a launch-table file, point $TJX_FLASH_LAUNCH_TABLES at it; returns the writer."""
    path = tmp_path / "tables.json"

    def write(devices, schema=1):
        text = (
            devices
            if isinstance(devices, str)
            else json.dumps({"schema": schema, "devices": devices})
        )
        path.write_text(text)
        monkeypatch.setenv(ENV_VAR, str(path))
        clear_launch_cache()
        return path

    yield write
    clear_launch_cache()


def test_generic_fallback_and_keys():
    assert entry_key(BF16, 64) == "bf16-64" and entry_key(F16, 80) == "fp16-128"
    assert entry_key(jnp.dtype("float32"), 256) == "fp32-256"
    assert (
        default_launch(64, BF16)
        == generic_launch(64, BF16)
        == LaunchDefaults(128, 128, 8, 64, 64, 4)
    )
    assert default_launch(64, F16, device_kind="no such GPU") == generic_launch(64, F16)
    assert default_launch(256, F32).num_stages == 2 and default_launch(256, F32).num_stages_bwd == 2
    assert device_kind_of_default_device() is None  # the tests run on CPU
    with pytest.raises(ValueError, match="float64"):
        entry_key(jnp.float64, 64)
    with pytest.raises(ValueError, match="head_dim 300"):
        entry_key(F32, 300)


def test_device_table_from_env_var_and_16bit_fallback(table):
    table({H100: {"source": "test", "entries": {"bf16-64": ENTRY}}})
    want = LaunchDefaults(**ENTRY)
    # Device kinds compare case-insensitively with whitespace collapsed.
    assert default_launch(64, BF16, device_kind="nvidia  h100 80gb\tHBM3") == want
    assert default_launch(32, F16, device_kind=H100) == want  # fp16 falls back to the bf16 entry
    assert default_launch(64, F32, device_kind=H100) == generic_launch(64, F32)  # fp32 does not
    assert default_launch(128, BF16, device_kind=H100) == generic_launch(128, BF16)
    assert default_launch(64, BF16) == generic_launch(64, BF16)  # CPU: no device table
    assert load_launch_tables()[H100].source == "test"


def test_exact_dtype_entry_wins_over_the_other_16bit(table):
    fp16 = dict(ENTRY, block_q=16)
    table({H100: {"source": "s", "entries": {"bf16-64": ENTRY, "fp16-64": fp16}}})
    assert default_launch(64, F16, device_kind=H100).block_q == 16
    assert default_launch(64, BF16, device_kind=H100).block_q == 64


def test_default_device_kind_on_a_cuda_gpu(table, monkeypatch):
    table({H100: {"source": "s", "entries": {"fp32-128": ENTRY}}})
    client = types.SimpleNamespace(platform_version="cuda 12080")
    device = types.SimpleNamespace(device_kind=H100, client=client)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "devices", lambda: [device])
    assert device_kind_of_default_device() == H100
    assert default_launch(128, F32) == LaunchDefaults(**ENTRY)
    client.platform_version = "rocm 60000"
    assert device_kind_of_default_device() is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"block_q": 24}, "block_q"),
        ({"block_k_bwd": 8}, "block_k_bwd"),
        ({"num_warps": 3}, "num_warps"),
        ({"num_warps_bwd": True}, "num_warps_bwd"),
        ({"num_stages": 0}, "num_stages"),
        ({"num_stages_bwd": 9}, "num_stages_bwd"),
    ],
)
def test_launch_validation_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LaunchDefaults(**{**ENTRY, **kwargs})


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "malformed JSON"),
        ({H100: {"source": "s", "entries": {"bf16-64": dict(ENTRY, block_q=48)}}}, "block_q"),
        ({H100: {"source": "s", "entries": {"bf16-64": dict(ENTRY, num_warps=5)}}}, "num_warps"),
        ({H100: {"source": "s", "entries": {"bf16-96": ENTRY}}}, "unknown key format"),
        (
            {H100: {"source": "s", "entries": {"bf16-64": dict(ENTRY, spare=1)}}},
            "exactly the fields",
        ),
        ({H100: {"source": "s", "entries": {"fp32-64": {"block_q": 16}}}}, "exactly the fields"),
        ({H100: {"source": "s", "entries": {"fp32-64": [1, 2]}}}, "must be an object"),
        ({H100: {"entries": {}}}, "want {'source'"),
        ({H100: {"source": 3, "entries": {}}}, "want {'source'"),
        ('{"schema": 2, "devices": {}}', "want {'schema': 1"),
        ("[]", "want {'schema'"),
    ],
)
def test_bad_tables_name_the_file_device_and_key(table, content, match):
    path = table(content)
    with pytest.raises(ValueError, match=match) as err:
        default_launch(64, BF16, device_kind=H100)
    message = str(err.value)
    assert str(path) in message
    if isinstance(content, dict):
        assert repr(H100) in message
        assert all(repr(key) in message for key in content[H100].get("entries", {}))


def test_merge_round_trip(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "tables.json"
    path.parent.mkdir()
    monkeypatch.setenv(ENV_VAR, str(path))
    a, b = LaunchDefaults(**ENTRY), LaunchDefaults(32, 32, 4, 16, 16, 4)
    merge_launch_table(path, H100, {"bf16-64": a, "fp32-256": b}, "first sweep")
    assert default_launch(64, F16, device_kind=H100) == a
    merge_launch_table(path, "nvidia h100 80gb hbm3", {"bf16-64": SMALL}, "second sweep")
    merge_launch_table(path, "NVIDIA H200", {"fp16-128": b}, "h200")
    text = path.read_text()
    assert text.endswith("}\n") and text.startswith('{\n "devices": {\n')
    tables = load_launch_tables(path)
    assert sorted(tables) == ["NVIDIA H200", "nvidia h100 80gb hbm3"]
    h100 = tables["nvidia h100 80gb hbm3"]
    assert h100.source == "second sweep"
    assert dict(h100.entries) == {"bf16-64": SMALL, "fp32-256": b}
    assert default_launch(64, F16, device_kind=H100) == SMALL  # the merge cleared the cache
    assert json.loads(text)["devices"]["NVIDIA H200"]["entries"]["fp16-128"] == dataclasses.asdict(
        b
    )
    assert [p.name for p in path.parent.iterdir()] == ["tables.json"]  # no temporary left


def test_merge_rejects_bad_input(tmp_path):
    path = tmp_path / "t.json"
    with pytest.raises(ValueError, match="'bf16-1024'"):
        merge_launch_table(path, H100, {"bf16-1024": SMALL}, "s")
    with pytest.raises(ValueError, match="num_warps"):
        merge_launch_table(path, H100, {"bf16-64": dict(ENTRY, num_warps=3)}, "s")
    with pytest.raises(ValueError, match="must be an object"):
        merge_launch_table(path, H100, {"bf16-64": (16,) * 6}, "s")
    with pytest.raises(ValueError, match="device_kind"):
        merge_launch_table(path, "  ", {"bf16-64": SMALL}, "s")
    assert not path.exists()
    path.write_text("{oops")
    with pytest.raises(ValueError, match="malformed JSON"):
        merge_launch_table(path, H100, {"bf16-64": SMALL}, "s")


def test_a_failed_merge_leaves_the_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    merge_launch_table(path, H100, {"bf16-64": SMALL}, "s")
    before = path.read_text()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        merge_launch_table(path, H100, {"bf16-128": SMALL}, "s")
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_packaged_table_parses_and_validates(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    clear_launch_cache()
    packaged = resources.files("tjx.kernels") / "launch_tables.json"
    data = json.loads(packaged.read_text("utf-8"))
    assert data["schema"] == 1 and isinstance(data["devices"], dict)
    tables = load_launch_tables()
    assert len(tables) == len(data["devices"])
    for kind, table in tables.items():
        assert table.source.strip(), kind
        for launch in table.entries.values():
            launch.validate()


def test_explicit_launch_reaches_the_kernel_config_and_matches(monkeypatch):
    b, s, h, d = 2, 50, 2, 32
    rng = np.random.default_rng(21)
    q, k, v, do = (rng.standard_normal((b, s, h, d)) for _ in range(4))
    ids = np.ones((b, s), np.int32)
    ids[0, 20:] = 2
    ids[1, 40:] = 0
    seen = []
    real = flash._make_config

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out[0])
        return out

    monkeypatch.setattr(flash, "_make_config", spy)

    @jax.jit
    def fwd_bwd(q, k, v, do):
        fn = lambda q, k, v: flash_attention(
            q, k, v, mask=AttentionMask(causal=True, segment_ids=jnp.asarray(ids)), launch=SMALL
        )
        out, vjp = jax.vjp(fn, q, k, v)
        return (out, *vjp(do))

    got = fwd_bwd(*(jnp.asarray(x, F32) for x in (q, k, v, do)))
    expected = np_attention(q, k, v, np_mask(b, s, s, causal=True, q_ids=ids, kv_ids=ids), d_out=do)
    for a, e in zip(got, expected, strict=True):
        assert rel_err(np.asarray(a), e) <= 1e-5
    cfg = seen[0]
    blocks = (cfg.block_q, cfg.block_k, cfg.block_q_bwd, cfg.block_k_bwd)
    assert blocks == (16, 32, 32, 16)
    assert (cfg.num_warps, cfg.num_warps_bwd, cfg.num_stages, cfg.num_stages_bwd) == (2, 1, 3, 1)
    assert cfg.q_len == cfg.kv_len == 64  # padded to the largest block of either pass
    assert cfg.compiler_params(backward=True).num_stages == 1


def test_block_arguments_override_the_launch_and_blocks_shrink():
    shapes = AttentionShapes(1, 20, 20, 2, 2, 32)
    common = {"dtype": F32, "causal": False, "has_segments": False, "scale": 1.0, "interpret": True}
    big = LaunchDefaults(128, 128, 8, 64, 64, 4, num_stages=4)
    cfg, q_pad, kv_pad, _ = flash._make_config(
        shapes, block_q=None, block_k=16, launch=big, **common
    )
    assert (cfg.block_q, cfg.block_k, cfg.block_q_bwd, cfg.block_k_bwd) == (32, 16, 32, 16)
    assert (q_pad, kv_pad, cfg.num_stages, cfg.compiler_params().num_stages) == (32, 32, 4, 4)
    with pytest.raises(ValueError, match="launch"):
        flash_attention(jnp.ones((1, 8, 2, 16)), *[jnp.ones((1, 8, 2, 16))] * 2, launch=(16,) * 6)


def test_head_split_is_optional_in_tables_validated_and_clamped_to_16_columns(table):
    table(
        {
            H100: {
                "source": "s",
                "entries": {"bf16-64": ENTRY, "bf16-128": dict(ENTRY, head_split_bwd=4)},
            }
        }
    )
    assert default_launch(64, BF16, device_kind=H100).head_split_bwd == 1  # omitted: 1
    assert default_launch(128, BF16, device_kind=H100).head_split_bwd == 4
    with pytest.raises(ValueError, match="head_split_bwd"):
        LaunchDefaults(64, 64, 8, 32, 64, 8, head_split_bwd=3)
    assert generic_launch(256, BF16, hopper=True).head_split_bwd == 2  # sm_90 only, 16-bit only
    assert generic_launch(256, F16, hopper=False).head_split_bwd == 1
    assert generic_launch(256, F32, hopper=True).head_split_bwd == 1
    common = {"dtype": F32, "causal": True, "has_segments": False, "scale": 1.0, "interpret": True}
    split8 = LaunchDefaults(16, 16, 1, 16, 32, 1, head_split_bwd=8)
    for d, want in ((16, 1), (40, 4), (256, 8)):  # at least 16 columns a slice
        cfg, *_ = flash._make_config(AttentionShapes(1, 20, 20, 2, 2, d), block_q=None,
                                     block_k=None, launch=split8, **common)  # fmt: skip
        assert cfg.head_split_bwd == want
    # With a split both lengths are padded to both backward tiles (dQ's are swapped): 20 → 32.
    cfg, q_pad, kv_pad, _ = flash._make_config(
        AttentionShapes(1, 20, 20, 2, 2, 64), block_q=None, block_k=None, launch=split8, **common
    )
    assert (q_pad, kv_pad, cfg.dq_blocks()) == (32, 32, (32, 16))
