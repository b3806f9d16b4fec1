"""compressed-tensors' ``pack-quantized`` INT4 folders (Kimi-K2.5's release, #70), dequantized as
they load (`tjx.nn.hf.quantized.dequantize_int4`).

Every comparison is exact: on fresh random int32 words, tjx's dequantization equals a float64
decoding written independently (each value's 4 bits read off the word as a Python integer,
bit ``4·(i % 8)`` of word ``i // 8``), the product rounded once to the scales' dtype; and a packed
folder loads into the same parameters as an unquantized folder holding that decoding.
transformers' own dequantization (compressed-tensors' compressor) is compared in
tests-integration's ``test_hf_quantized_peer.py``.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from tjx import nn as tnn
from tjx.nn.hf import dequantize
from tjx.nn.hf.io import INDEX
from tjx.nn.hf.keys import HFConfigError
from tjx.nn.hf.quantized import dequantize_int4
from tjx.nn.hf.reading import LazyWeights, read_header
from tjx_nn_tests._helpers import saved_random
from tjx_nn_tests.hf.test_kimi_k25 import KIMI, _as_kimi_k25
from tjx_nn_tests.hf.test_quantized import (
    DEEPSEEK_V3,
    FIX,
    _export,
    _refusal,
    _same_params,
    _write_shards,
)

#: The published Kimi-K2.5's scheme (its config's ``config_groups``), with a tiny group size.
GROUP = 4
SCALE_DTYPES = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16}


def _ct_config(group: int | None = GROUP, **weights) -> dict:
    """A ``quantization_config`` as Kimi-K2.5's release writes it (``weights`` changed)."""
    args = {"actorder": None, "block_structure": None, "dynamic": False, "group_size": group,
            "num_bits": 4, "observer": "minmax", "observer_kwargs": {}, "strategy": "group",
            "symmetric": True, "type": "int"} | weights  # fmt: skip
    return {
        "config_groups": {"group_0": {"input_activations": None, "output_activations": None,
                                      "targets": ["Linear"], "weights": args}},
        "format": "pack-quantized",
        "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*"],
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
    }  # fmt: skip


#: Its one ``config_groups`` entry.
GROUP_0 = _ct_config()["config_groups"]["group_0"]


# -- the float64 reference ------------------------------------------------------------------------


def _int4_reference(packed: np.ndarray, scales: np.ndarray, group: int) -> np.ndarray:
    """``packed`` int32 ``[..., O, W]`` decoded value by value, times the scales, in float64."""
    cols = scales.shape[-1] * group
    words = packed.reshape(-1, packed.shape[-1])
    values = np.empty((words.shape[0], cols), np.float64)
    for r, row in enumerate(words):
        for i in range(cols):
            word = int(row[i // 8]) & 0xFFFFFFFF  # its bits, whatever int32's sign
            values[r, i] = ((word >> (4 * (i % 8))) & 0xF) - 8
    values = values.reshape(*scales.shape[:-1], cols)
    return values * np.repeat(scales.astype(np.float64), group, axis=-1)


def _rounded(reference: np.ndarray, scale_dtype) -> np.ndarray:
    """The float64 product rounded once to the scales' dtype (float32 holds it exactly first
    for BF16/F16 scales: at most 4 + 11 significant bits)."""
    return reference.astype(np.float32).astype(scale_dtype)


def _random_packed(rng: np.random.Generator, lead, rows: int, cols: int, group: int, kind: str):
    """Fresh random words (the padding of a last word included) and scales for ``[*lead, rows,
    cols]``; returns packed, scales and the rounded reference."""
    words = -(-cols // 8)
    packed = rng.integers(-(2**31), 2**31, size=(*lead, rows, words), dtype=np.int64)
    packed = packed.astype(np.int32)
    scales = rng.lognormal(-5, 1, size=(*lead, rows, cols // group)).astype(np.float32)
    scales = scales.astype(SCALE_DTYPES[kind])
    return packed, scales, _rounded(_int4_reference(packed, scales, group), SCALE_DTYPES[kind])


@pytest.mark.parametrize("kind", list(SCALE_DTYPES))
@pytest.mark.parametrize("chunk", [None, 64])
def test_int4_is_the_bitwise_decoding_times_the_scale_rounded_once(monkeypatch, kind, chunk):
    if chunk is not None:  # a few rows at a time: the chunks meet inside the tensor
        monkeypatch.setattr(dequantize, "CHUNK_BYTES", chunk)
    rng = np.random.default_rng()
    group = int(rng.choice([2, 4, 6, 32]))
    cols = group * int(rng.integers(1, 5))  # often not a multiple of 8: a padded last word
    packed, scales, want = _random_packed(rng, (2,), int(rng.integers(1, 9)), cols, group, kind)
    got = dequantize_int4(packed, scales, group)
    assert got.shape == (2, packed.shape[1], cols) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))
    got16 = dequantize_int4(packed, scales, group, ml_dtypes.bfloat16)
    assert got16.dtype == ml_dtypes.bfloat16  # the scale dtype's product, then the param dtype
    np.testing.assert_array_equal(got16, want.astype(ml_dtypes.bfloat16))


def test_int4_of_another_layout_is_refused_by_the_function():
    scales = np.ones((3, 4), np.float32)
    with pytest.raises(
        ValueError, match=r"must be int32 \[\.\.\., rows, 2\] for \[\.\.\., rows, 16\]"
    ):
        dequantize_int4(np.zeros((3, 3), np.int32), scales, 4)
    with pytest.raises(ValueError, match="packed INT4 weights uint8"):
        dequantize_int4(np.zeros((3, 2), np.uint8), scales, 4)


# -- folders --------------------------------------------------------------------------------------


def _is_expert(name: str) -> bool:
    return ".mlp.experts." in name and name.endswith(".weight")


def _pack_folder(
    plain_tensors: dict[str, np.ndarray],
    hf: dict,
    out: Path,
    *,
    kind: str = "BF16",
    rename=lambda n: n,
    change=None,
    shards: int = 1,
) -> dict[str, np.ndarray]:
    """``out`` (and ``out-ref``): the routed experts' weights of ``plain_tensors`` replaced by
    random packed INT4 (as Kimi-K2.5's release stores them; ``-ref``: their decoding in float32),
    ``change(tensors)`` applied to ``out``'s (name → (dtype, array)); returns the decoded
    tensors."""
    rng = np.random.default_rng()
    tensors = {k: ("F32", v) for k, v in plain_tensors.items()}
    packed_parts: dict[str, tuple[str, np.ndarray]] = {}
    decoded: dict[str, np.ndarray] = {}
    for name, (_, value) in tensors.items():
        if _is_expert(name):
            rows, cols = value.shape
            packed, scales, want = _random_packed(rng, (), rows, cols, GROUP, kind)
            packed_parts[name + "_packed"] = ("I32", packed)
            packed_parts[name + "_scale"] = (kind, scales)
            packed_parts[name + "_shape"] = ("I64", np.array(value.shape, np.int64))
            decoded[name] = want.astype(np.float32)
    assert decoded
    kept = {k: v for k, v in tensors.items() if k not in decoded}
    ref = {k: ("F32", v) for k, v in decoded.items()}
    quantized_hf = hf | {"quantization_config": _ct_config()}
    if "text_config" in hf:  # an image-text folder: its text_config says it too, as published
        quantized_hf["text_config"] = hf["text_config"] | {"quantization_config": _ct_config()}
    for folder, extra, config in (
        (out, packed_parts, quantized_hf),
        (out.with_name(out.name + "-ref"), ref, hf),
    ):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        stored = {rename(k): v for k, v in {**kept, **extra}.items()}
        if change is not None and folder == out:
            change(stored)
        _write_shards(folder, stored, shards)
    return decoded


@pytest.fixture(scope="module")
def deepseek_plain(tmp_path_factory) -> Path:
    return _export(
        tmp_path_factory.mktemp("ds"), DEEPSEEK_V3, d_model=16, mlp=tnn.MLPConfig(dim=12)
    )


def _packed_deepseek(plain: Path, out: Path, **kw) -> dict[str, np.ndarray]:
    hf = json.loads((plain / "config.json").read_text())
    return _pack_folder(load_file(str(plain / "model.safetensors")), hf, out, **kw)


@pytest.mark.parametrize("kind", ["BF16", "F32"])
def test_a_packed_int4_deepseek_v3_loads_as_its_decoded_weights(deepseek_plain, tmp_path, kind):
    folder = tmp_path / "int4"
    decoded = _packed_deepseek(deepseek_plain, folder, kind=kind)
    assert decoded["model.layers.1.mlp.experts.3.down_proj.weight"].shape == (16, 8)
    dtypes = {k: e.dtype for k, e in read_header(folder / "model.safetensors").items()}
    assert dtypes["model.layers.1.mlp.experts.0.gate_proj.weight_packed"] == "I32"
    assert dtypes["model.layers.1.mlp.shared_experts.up_proj.weight"] == "F32"  # left as is
    tnn.check_hf_weights(folder)
    _same_params(folder)
    _same_params(folder, precision=tnn.Precision("bfloat16", "bfloat16"))


def test_the_header_check_reads_no_tensor_of_a_packed_folder(deepseek_plain, tmp_path, monkeypatch):
    folder = tmp_path / "int4"
    _packed_deepseek(deepseek_plain, folder)

    def never(self, name):
        raise AssertionError(f"check_hf_weights read tensor {name}")

    monkeypatch.setattr(LazyWeights, "get", never)
    tnn.check_hf_weights(folder)  # not even a weight_shape


def test_loading_int4_holds_one_tensor_dequantized_not_a_shard(tmp_path):
    """A 2-shard packed DeepSeek-V3: what NumPy holds at once while loading (tracemalloc) stays
    below one shard's experts dequantized, half the model's: as for FP8 and MXFP4, the model plus
    one tensor (2026-11-28: 2.9 MB at once against 4.7 MB for a shard's experts, 64 KB each)."""
    moe = tnn.MoEConfig(num_experts=8, experts_per_token=2, expert_mlp_dim=128,
                        num_shared_experts=1, first_dense=1, router="sigmoid")  # fmt: skip
    plain = _export(tmp_path, DEEPSEEK_V3, d_model=128, num_layers=8, moe=moe)
    folder = tmp_path / "int4"
    decoded = _packed_deepseek(plain, folder, shards=2)
    index = json.loads((folder / INDEX).read_text())["weight_map"]
    per_shard: dict[str, int] = {}
    for name, value in decoded.items():
        file = index[name + "_packed"]
        per_shard[file] = per_shard.get(file, 0) + value.size * 4  # float32 params
    shard_bytes = min(per_shard.values())
    largest = max(v.size * 4 for v in decoded.values())
    assert len(per_shard) == 2 and shard_bytes >= 16 * largest
    tnn.load_hf(folder)  # imported and traced once, so the measure sees the load alone
    tracemalloc.start()
    try:
        tnn.load_hf(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < shard_bytes, (peak, shard_bytes, largest)


def test_a_kimi_k25_folder_with_int4_experts_loads_and_exports_bf16(tmp_path):
    """The published layout: ``language_model.*`` names, the image-text config with the same
    ``quantization_config`` in its ``text_config``; the export is the bf16 text model."""
    _, tensors = saved_random(tmp_path / "v3", tnn.make_config(tnn.LlamaConfig, KIMI))
    hf = json.loads((tmp_path / "v3" / "config.json").read_text())
    made = _as_kimi_k25(tmp_path / "k25", tensors, hf, lambda n: "language_model." + n)
    config = json.loads((made / "config.json").read_text())
    folder = tmp_path / "int4"
    _pack_folder(tensors, config, folder, rename=lambda n: "language_model." + n)
    loaded, _ = tnn.load_hf(folder)
    want, _ = tnn.load_hf(folder.with_name("int4-ref"))
    a, b = tnn.get_flat_params(loaded), tnn.get_flat_params(want)
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    tnn.save_hf(loaded, tmp_path / "out", dtype="bfloat16")
    back = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in back and back["model_type"] == "deepseek_v3"
    header = read_header(tmp_path / "out" / "model.safetensors")
    assert {e.dtype for e in header.values()} == {"BF16"}
    assert "model.layers.1.mlp.experts.0.gate_proj.weight" in header


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantization", "needle"),
    [
        (_ct_config() | {"format": "float-quantized"},
         "quantization_config.format 'float-quantized' is not read by tjx (it reads "
         "'pack-quantized' for quant_method 'compressed-tensors')"),
        (_ct_config() | {"quantization_status": "frozen"},
         "quantization_config.quantization_status 'frozen' is not read by tjx"),
        (_ct_config(num_bits=8),
         "config_groups.group_0.weights is int8 symmetric, strategy 'group': tjx reads "
         "pack-quantized INT4 weights (int4 symmetric, strategy 'group')"),
        (_ct_config(symmetric=False), "weights is int4 asymmetric, strategy 'group'"),
        (_ct_config(strategy="channel", group_size=None), "weights is int4 symmetric, strategy "
         "'channel'"),
        (_ct_config(group=None), "config_groups.group_0.weights.group_size is missing or null"),
        (_ct_config(actorder="group"), "weights.actorder is 'group': its groups are permuted"),
        (_ct_config(type="float"), "weights is float4 symmetric"),
        (_ct_config() | {"kv_cache_scheme": {"num_bits": 8, "type": "float"}},
         "quantization_config.kv_cache_scheme is set: compressed-tensors would also quantize"),
        ({**_ct_config(), "config_groups": {"W4A16": ["Linear"]}},
         "config_groups.W4A16 is ['Linear'], a preset scheme's name"),
        ({**_ct_config(), "config_groups": {"g": {"targets": ["Linear"], "weights": None,
                                                  "input_activations": {"num_bits": 8}}}},
         "config_groups.g.input_activations is set: the model would quantize its activations"),
        ({**_ct_config(), "config_groups": {
            "a": GROUP_0,
            "b": _ct_config(group=8)["config_groups"]["group_0"]}},
         "config_groups quantize with group sizes {'a': 4, 'b': 8}"),
        ({**_ct_config(), "config_groups": {}}, "config_groups is empty: no weight is quantized"),
        ({**_ct_config(), "config_groups": {"g": {**GROUP_0, "extra": 1}}},
         "config_groups.g has key(s) extra that compressed-tensors' QuantizationScheme does not"),
        ({**_ct_config(), "config_groups": {"g": {**GROUP_0, "format": "float-quantized"}}},
         "config_groups.g.format is 'float-quantized', which tjx does not read"),
        ({**_ct_config(), "config_groups": {"g": {**GROUP_0, "weights": None}}},
         "config_groups.g.weights is missing or null"),
        (_ct_config(zero=1), "weights has key(s) zero that compressed-tensors' QuantizationArgs"),
        (_ct_config(dynamic=True, block_structure=[8, 8]),
         "weights is int4 symmetric, strategy 'group', dynamic, block_structure [8, 8]"),
        ({"quant_method": "compressed-tensors"},
         "quantization_config.config_groups is missing; transformers' CompressedTensorsConfig"),
        (_ct_config() | {"sparsity": 1}, "has key(s) sparsity that transformers' "
         "CompressedTensorsConfig does not read"),
    ],
)  # fmt: skip
def test_a_compressed_tensors_scheme_tjx_does_not_read_is_refused_in_one_line(
    deepseek_plain, tmp_path, quantization, needle
):
    folder = tmp_path / "ck"
    folder.mkdir()
    hf = json.loads((deepseek_plain / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(hf | {"quantization_config": quantization}))
    (folder / "model.safetensors").write_bytes((deepseek_plain / "model.safetensors").read_bytes())
    with pytest.raises(HFConfigError, match=r"^[^\n]*$") as info:
        tnn.read_hf_config(folder)  # as a plan reads it: before any weight
    assert needle in str(info.value)
    assert _refusal(folder) == str(info.value)


EXPERT = "model.layers.1.mlp.experts.2.up_proj.weight"


def _packed_edit(plain: Path, out: Path, change) -> Path:
    """A packed folder with ``change(tensors)`` applied to its tensors before they are written."""
    _packed_deepseek(plain, out, change=change)
    return out / "model.safetensors"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda t: t.pop(EXPERT + "_scale"),
         f"tensor {EXPERT}_packed holds packed INT4 weights (pack-quantized) without "
         f"{EXPERT}_scale; {FIX} with all its files"),
        (lambda t: t.pop(EXPERT + "_shape"), f"without {EXPERT}_shape"),
        (lambda t: t.pop(EXPERT + "_packed"),
         f"tensor {EXPERT}_s"),  # _scale or _shape, whichever is named first
        (lambda t: t.update({EXPERT + "_scale": ("F32", np.ones((8, 2), np.float32))}),
         f"tensor {EXPERT}_scale has shape [8, 2], but {EXPERT}_packed [8, 2] holds 16 values a "
         "row (8 a word) and its scales' groups of quantization_config.config_groups' group_size "
         "4 8: the scales are another group size's"),
        (lambda t: t.update({EXPERT + "_scale": ("I32", np.ones((8, 4), np.int32))}),
         f"tensor {EXPERT}_scale is stored as I32; pack-quantized stores F32 or BF16 or F16"),
        (lambda t: t.update({EXPERT + "_zero_point": ("I32", np.zeros((1, 4), np.int32))}),
         f"tensor {EXPERT}_zero_point is a zero point (an asymmetric scheme)"),
        (lambda t: t.update({EXPERT + "_shape": ("I64", np.array([8, 16, 1], np.int64))}),
         f"tensor {EXPERT}_packed has shape [8, 2] with {EXPERT}_shape of shape [3]"),
        (lambda t: t.update({EXPERT: ("F32", np.zeros((8, 16), np.float32))}),
         f"tensor {EXPERT} is stored both whole and packed ({EXPERT}_packed)"),
    ],
)  # fmt: skip
def test_packed_tensors_of_another_form_are_refused_by_name(
    deepseek_plain, tmp_path, change, needle
):
    path = _packed_edit(deepseek_plain, tmp_path / "q", change)
    message = _refusal(tmp_path / "q")
    assert message.startswith(f"{path}: ") and needle in message


def test_a_weight_shape_the_group_size_does_not_divide_is_refused_on_load(deepseek_plain, tmp_path):
    """The headers fit (16 inputs: 4 groups of 4, 2 words), but the stored ``weight_shape`` says
    14 inputs: a width group_size 4 does not divide, refused when the tensor is read."""
    bad = ("I64", np.array([8, 14], np.int64))
    path = _packed_edit(
        deepseek_plain, tmp_path / "q", lambda t: t.update({EXPERT + "_shape": bad})
    )
    tnn.check_hf_weights(tmp_path / "q")  # headers alone: nothing to see yet
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        tnn.load_hf(tmp_path / "q")
    assert str(info.value) == (
        f"{path}: tensor {EXPERT}_shape says [8, 14], but its packed weights and their scales "
        "(groups of 4 inputs) hold [8, 16]: a width group_size 4 does not divide, or another "
        f"group size's scales; {FIX}"
    )
