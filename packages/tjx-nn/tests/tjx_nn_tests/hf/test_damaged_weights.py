"""Damaged or foreign safetensors in a HF folder: one ``ValueError`` line naming the file, what
is wrong with it and the fix, found from the headers before any model is built (issue #58)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from tjx import nn as tnn
from tjx.nn.hf.reading import LazyWeights, read_header

FIX = "download or save the checkpoint again"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama saved whole (``one``) and in shards (``sharded``), copied per test."""
    root = tmp_path_factory.mktemp("saved")
    config = tnn.LlamaConfig(
        vocab_size=24,
        max_seq_len=16,
        d_model=16,
        num_layers=1,
        num_heads=2,
        mlp=tnn.MLPConfig(dim=24),
    )
    model = tnn.Llama(config, rngs=nnx.Rngs(0))
    tnn.save_hf(model, root / "one")
    tnn.save_hf(model, root / "sharded", max_shard_size="2KB")
    return root


@pytest.fixture()
def folder(saved, tmp_path):
    """A fresh copy of the whole checkpoint."""
    return Path(shutil.copytree(saved / "one", tmp_path / "ck"))


def _refusal(folder: Path) -> str:
    """The one line both the cheap check and the loader raise (the same one)."""
    with pytest.raises(ValueError, match="^[^\n]*$") as checked:
        tnn.check_hf_weights(folder)
    with pytest.raises(ValueError) as loaded:
        tnn.load_hf(folder)
    assert str(loaded.value) == str(checked.value)
    return str(checked.value)


def _file(header: object, data: bytes) -> bytes:
    """A safetensors file of ``header`` (a JSON object) and ``data``, as the format lays out."""
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_a_file_of_random_bytes_is_not_a_safetensors_file(folder):
    target = folder / "model.safetensors"
    target.write_bytes(os.urandom(int(np.random.default_rng().integers(64, 4096))))
    message = _refusal(folder)
    assert message.startswith(f"{target} is not a safetensors file: its first 8 bytes give")
    assert message.endswith(FIX)


@pytest.mark.parametrize(("where", "needle"), [("data", "describes"), ("header", "needs")])
def test_a_truncated_file_is_named_with_what_it_lacks(folder, where, needle):
    target = folder / "model.safetensors"
    whole = target.read_bytes()
    header = 8 + int.from_bytes(whole[:8], "little")
    rng = np.random.default_rng()
    keep = int(rng.integers(header, len(whole)) if where == "data" else rng.integers(8, header))
    target.write_bytes(whole[:keep])
    message = _refusal(folder)
    assert message.startswith(f"{target} is truncated: its header {needle} ")
    assert message.endswith(FIX)


def test_a_shard_the_index_names_must_be_in_the_folder(saved, tmp_path):
    folder = Path(shutil.copytree(saved / "sharded", tmp_path / "s"))
    shards = sorted(folder.glob("model-0000*.safetensors"))
    gone = shards[int(np.random.default_rng().integers(len(shards)))]
    gone.unlink()
    message = _refusal(folder)
    assert message == (
        f"{gone} is missing: model.safetensors.index.json names it as a shard; {FIX} with all "
        "its shards"
    )


def test_a_tensor_stored_as_integers_is_refused_with_its_file(folder):
    target = folder / "model.safetensors"
    weights = load_file(str(target))
    name = sorted(weights)[int(np.random.default_rng().integers(len(weights)))]
    weights[name] = weights[name].astype(np.int32)
    save_file(weights, str(target))
    assert _refusal(folder) == (
        f"{target}: tensor {name} is stored as I32, config.json's model has floating-point "
        "weights (F16, BF16, F32, F64); save the checkpoint unquantized"
    )


def test_a_tensor_of_another_shape_is_refused_with_its_file(folder):
    target = folder / "model.safetensors"
    weights = load_file(str(target))
    weights["model.norm.weight"] = np.random.default_rng().normal(size=15).astype(np.float32)
    save_file(weights, str(target))
    assert _refusal(folder) == (
        f"{target}: tensor model.norm.weight has shape [15], config.json implies [16]; the "
        "weights are another model's: use the config.json saved with them"
    )


def test_a_half_precision_checkpoint_passes_and_the_check_reads_no_tensor(folder, monkeypatch):
    target = folder / "model.safetensors"
    weights = load_file(str(target))
    save_file({k: v.astype(np.float16) for k, v in weights.items()}, str(target))

    def never(self, name):
        raise AssertionError(f"check_hf_weights read tensor {name}")

    monkeypatch.setattr(LazyWeights, "get", never)
    tnn.check_hf_weights(folder)  # bf16/f16/f32/f64 are all cast to the param dtype on load


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\x01\x02", "is 2 bytes, too short for a safetensors file"),
        (struct.pack("<Q", 3) + b"{x}", "is not a safetensors file: its header is not JSON ("),
        (_file([1, 2], b""), "is not a safetensors file: its header is not a JSON object"),
        (_file({"w": {"dtype": "F32"}}, b""), "header entry 'w' is not a tensor"),
        (
            _file({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, bytes(4)),
            "header entry 'w' is not a tensor",
        ),
        (
            _file({"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, bytes(1)),
            "tensor w has dtype 'F4', which tjx does not read",
        ),
        (
            _file({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)),
            "tensor w spans 8 bytes, its shape [3] and dtype F32 need 12",
        ),
        (
            _file({"w": F32, "v": {**F32, "data_offsets": [12, 20]}}, bytes(20)),
            "tensor v's data starts at byte 12, the one before ends at 8",
        ),
        (_file({"w": F32, "__metadata__": {}}, bytes(11)), "has 3 bytes after its last tensor"),
    ],
    ids=["short", "not-json", "json-list", "no-offsets", "bool-dim", "f4", "span", "gap", "rest"],
)
def test_a_header_safetensors_would_not_read_is_one_line_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="^[^\n]*$") as info:
        read_header(path)
    assert str(info.value).startswith(str(path)) and needle in str(info.value)
    assert str(info.value).endswith(
        FIX if "F4" not in needle else "save the checkpoint in one of those"
    )


def test_a_whole_file_reads_as_safetensors_describes_it(tmp_path):
    rng = np.random.default_rng()
    tensors = {
        "a": rng.normal(size=(3, 2)).astype(np.float32),
        "b": rng.integers(0, 9, size=(4,)).astype(np.int64),
        "c": np.zeros((0, 5), np.float16),
    }
    save_file(tensors, str(tmp_path / "x.safetensors"), metadata={"format": "pt"})
    entries = read_header(tmp_path / "x.safetensors")
    assert {k: (e.dtype, e.shape) for k, e in entries.items()} == {
        "a": ("F32", (3, 2)),
        "b": ("I64", (4,)),
        "c": ("F16", (0, 5)),
    }


@pytest.mark.parametrize(
    ("index", "needle"),
    [
        ("{not json", "model.safetensors.index.json is not valid JSON ("),
        ('{"weight_map": {"w": "../elsewhere.safetensors"}}', "names shard '../elsewhere"),
        ('{"weight_map": []}', "has no 'weight_map' object"),
        (
            '{"weight_map": {"ghost": "model.safetensors"}}',
            "model.safetensors lacks tensor ghost that model.safetensors.index.json names",
        ),
    ],
    ids=["not-json", "outside", "no-map", "ghost-tensor"],
)
def test_an_index_that_does_not_fit_its_shards_is_named(folder, index, needle):
    (folder / "model.safetensors.index.json").write_text(index)
    message = _refusal(folder)
    assert message.startswith(str(folder / "model.safetensors")) and needle in message


def test_a_file_that_cannot_be_opened_is_one_line(folder, monkeypatch):
    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(ValueError) as info:
        read_header(folder / "model.safetensors")
    assert str(info.value) == (
        f"cannot read {folder / 'model.safetensors'} (Permission denied); make it readable"
    )


def test_a_file_cut_after_its_header_was_checked_is_one_line_on_reading(folder):
    target = folder / "model.safetensors"
    with LazyWeights(folder) as weights:
        name = sorted(weights.names())[0]
        target.write_bytes(target.read_bytes()[:100])
        with pytest.raises(ValueError, match="^[^\n]*$") as info:
            weights.get(name)
    assert str(info.value).startswith(f"{target} no longer reads (")
