"""Quantized checkpoints as published (#70): block-scaled FP8 (DeepSeek-V3, ``quant_method: fp8``)
and gpt-oss's MXFP4 experts, dequantized as they load (`tjx.nn.hf.quantized`).

Every comparison is exact: on fresh random bytes, tjx's dequantization equals a float64 NumPy
decoding of the same bytes rounded once to float32 (an FP8 value times a float32 scale is exact
in float64; e2m1 times a power of two is exact), and a quantized folder loads into the same
parameters as an unquantized folder holding that float64 decoding. transformers' own
dequantization is compared in tests-integration's ``test_hf_quantized_peer.py``.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from tjx import nn as tnn
from tjx.nn.hf import dequantize, quantized
from tjx.nn.hf.io import INDEX
from tjx.nn.hf.keys import HFConfigError
from tjx.nn.hf.quantized import dequantize_fp8, dequantize_mxfp4
from tjx.nn.hf.reading import LazyWeights, read_header

FIX = "download or save the checkpoint again"
#: The FP8 e4m3 codes that are NaN (sign either way): published weights hold none.
FP8_NAN = (0x7F, 0xFF)
GPT_OSS = dict(
    num_kv_heads=2, **{"attention.sinks": True}, use_bias=True,
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, router_logit_bias=True),
    **{"mlp.activation": "swiglu_clamped"},  # over _export's mlp.dim
    **{"attention.sliding_window": 4}, **{"attention.window_pattern": ("local", "global")},
)  # fmt: skip
#: A DeepSeek-V3 whose widths the FP8 block [4, 8] leaves partial blocks in (q_a_proj's 10 rows,
#: q_b_proj's 10 columns, kv_a_proj_with_mqa's 12 rows), as V3's own kv_a_proj_with_mqa (576).
DEEPSEEK_V3 = dict(
    num_kv_heads=4, head_dim=12, **{"attention.type": "mla"},
    mla=tnn.MLAConfig(kv_latent_dim=8, qk_rope_head_dim=4, v_head_dim=6, q_lora_rank=10),
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=8, num_shared_experts=1,
                      first_dense=1, router="sigmoid"),
    norm=tnn.NormConfig(eps=1e-6),
)  # fmt: skip
BLOCK = [4, 8]


# -- float64 references -------------------------------------------------------------------------


def _e8m0(codes: np.ndarray) -> np.ndarray:
    return 2.0 ** (codes.astype(np.float64) - 127)


def _e2m1(codes: np.ndarray) -> np.ndarray:
    """An e2m1 code's value from its bits: sign 3, exponent 2-1 (bias 1), mantissa 0."""
    sign = np.where(codes & 8, -1.0, 1.0)
    exponent, mantissa = (codes >> 1) & 3, (codes & 1).astype(np.float64)
    magnitude = np.where(exponent == 0, mantissa / 2, (1 + mantissa / 2) * 2.0 ** (exponent - 1.0))
    return sign * magnitude


def _fp8_reference(weight: np.ndarray, scales: np.ndarray, block) -> np.ndarray:
    """``weight`` (float8) times its block's scale, in float64 (scales: float or E8M0 bytes)."""
    scale = _e8m0(scales) if scales.dtype == np.uint8 else scales.astype(np.float64)
    rows, cols = weight.shape[-2:]
    scale = np.repeat(np.repeat(scale, block[0], axis=-2), block[1], axis=-1)
    return weight.astype(np.float64) * scale[..., :rows, :cols]


def _mxfp4_reference(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``[E, O, G, 16]`` bytes → ``[E, G·32, O]`` float64: value 2k the low nibble of byte k."""
    values = np.stack([_e2m1(blocks & 0x0F), _e2m1(blocks >> 4)], axis=-1)
    values = values.reshape(*scales.shape, 32) * _e8m0(scales)[..., None]
    return values.reshape(*scales.shape[:2], -1).transpose(0, 2, 1)


def _fp8_bytes(rng: np.random.Generator, shape) -> np.ndarray:
    codes = rng.integers(0, 256, size=shape, dtype=np.uint8)
    codes[np.isin(codes, FP8_NAN)] = 0x38  # 1.0
    return codes.view(ml_dtypes.float8_e4m3fn)


def _scales(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    if kind == "U8":
        return rng.integers(100, 140, size=shape, dtype=np.uint8)
    if kind == "F8_E8M0":
        return rng.integers(100, 140, size=shape, dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu)
    value = rng.lognormal(-6, 2, size=shape).astype(np.float32)
    return value.astype(ml_dtypes.bfloat16) if kind == "BF16" else value


# -- the dequantization itself -------------------------------------------------------------------


@pytest.mark.parametrize("scale_kind", ["F32", "BF16", "F8_E8M0", "U8"])
@pytest.mark.parametrize("chunk", [None, 64])
def test_fp8_is_the_float64_product_rounded_once(monkeypatch, scale_kind, chunk):
    if chunk is not None:  # a few rows at a time: the chunks meet inside the tensor
        monkeypatch.setattr(dequantize, "CHUNK_BYTES", chunk)
    rng = np.random.default_rng()
    block = (int(rng.integers(2, 6)), int(rng.integers(2, 9)))
    shape = (3, int(rng.integers(5, 30)), int(rng.integers(5, 30)))  # partial blocks likely
    weight = _fp8_bytes(rng, shape)
    grid = quantized.fp8_grid(shape, block)
    scales = _scales(rng, grid, scale_kind)
    raw = scales.view(np.uint8) if scale_kind in ("F8_E8M0", "U8") else scales
    want = _fp8_reference(weight, raw, block)
    np.testing.assert_array_equal(dequantize_fp8(weight, scales, block), want.astype(np.float32))
    got16 = dequantize_fp8(weight, scales, block, ml_dtypes.bfloat16)
    assert got16.dtype == ml_dtypes.bfloat16  # the float32 product, then the param dtype
    np.testing.assert_array_equal(got16, want.astype(np.float32).astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("chunk", [None, 64])
def test_mxfp4_is_the_bitwise_e2m1_decoding_transposed(monkeypatch, chunk):
    if chunk is not None:
        monkeypatch.setattr(dequantize, "CHUNK_BYTES", chunk)
    rng = np.random.default_rng()
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 4)))
    blocks = rng.integers(0, 256, size=(*shape, 16), dtype=np.uint8)
    scales = rng.integers(0, 255, size=shape, dtype=np.uint8)  # every exponent but NaN's
    want = _mxfp4_reference(blocks, scales)
    got = dequantize_mxfp4(blocks, scales)
    assert got.shape == (shape[0], shape[2] * 32, shape[1]) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_mismatched_scales_are_refused_by_the_functions():
    weight = np.zeros((8, 8), ml_dtypes.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"do not fit a weight of shape \[8, 8\] in blocks"):
        dequantize_fp8(weight, np.ones((2, 3), np.float32), (4, 4))
    with pytest.raises(ValueError, match="MXFP4 blocks"):
        dequantize_mxfp4(np.zeros((1, 2, 3, 8), np.uint8), np.zeros((1, 2, 3), np.uint8))


# -- folders --------------------------------------------------------------------------------------


def _write(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """A safetensors file of ``tensors`` (name → (dtype name, array)), laid out as the format is:
    written by hand, as NumPy's safetensors writer has no float8."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        dtype, array = tensors[name]
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}  # fmt: skip
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(chunks))


def _quantize_folder(
    plain: Path, out: Path, method: str, *, scale_kind: str = "F32", shards: int = 1
) -> dict[str, np.ndarray]:
    """``plain`` (an unquantized export) with its quantizable tensors replaced by random
    quantized bytes (``out``) and an unquantized copy of their float64 decoding (``out-ref``);
    returns the decoded tensors."""
    rng = np.random.default_rng()
    tensors = {k: ("F32", v) for k, v in load_file(str(plain / "model.safetensors")).items()}
    decoded: dict[str, np.ndarray] = {}
    quant: dict[str, tuple[str, np.ndarray]] = {}
    for name, (_, value) in tensors.items():
        if method == "fp8" and name.startswith("model.layers.") and value.ndim == 2:
            if ".mlp.gate." in name:
                continue  # the router stays unquantized, as in DeepSeek-V3's release
            weight = _fp8_bytes(rng, value.shape)
            scales = _scales(rng, quantized.fp8_grid(value.shape, tuple(BLOCK)), scale_kind)
            raw = scales.view(np.uint8) if scale_kind in ("F8_E8M0", "U8") else scales
            quant[name] = ("F8_E4M3", weight)
            quant[name + "_scale_inv"] = (scale_kind, scales)
            decoded[name] = _fp8_reference(weight, raw, BLOCK)
        elif method == "mxfp4" and name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            experts, ins, outs = value.shape
            blocks = rng.integers(0, 256, size=(experts, outs, ins // 32, 16), dtype=np.uint8)
            scales = rng.integers(118, 128, size=(experts, outs, ins // 32), dtype=np.uint8)
            quant[name + "_blocks"] = ("U8", blocks)
            quant[name + "_scales"] = ("U8", scales)
            decoded[name] = _mxfp4_reference(blocks, scales)
    kept = {k: v for k, v in tensors.items() if k not in decoded}
    config = json.loads((plain / "config.json").read_text())
    q_config = {"quant_method": method}
    if method == "fp8":
        q_config |= {"activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": BLOCK}
    for folder, extra, meta in (
        (out, quant, {"quantization_config": q_config}),
        (out.with_name(out.name + "-ref"),
         {k: ("F32", v.astype(np.float32)) for k, v in decoded.items()}, {}),
    ):  # fmt: skip
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config | meta))
        _write_shards(folder, {**kept, **extra}, shards)
    return decoded


def _write_shards(folder: Path, tensors: dict[str, tuple[str, np.ndarray]], shards: int) -> None:
    """One file, or ``shards`` files of whole layers (a tensor with its scales) and the index."""
    if shards == 1:
        _write(folder / "model.safetensors", tensors)
        return

    layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]

    def shard(name: str) -> int:
        if not name.startswith("model.layers."):
            return 0
        return int(name.split(".")[2]) * shards // layers

    weight_map = {}
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: t for n, t in tensors.items() if shard(n) == k}
        _write(folder / file, part)
        weight_map |= dict.fromkeys(part, file)
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _export(tmp_path: Path, fields: dict, **sizes) -> Path:
    base = dict(
        vocab_size=24,
        max_seq_len=16,
        d_model=32,
        num_layers=2,
        num_heads=4,
        mlp=tnn.MLPConfig(dim=32),
    )
    model = tnn.Llama(
        tnn.make_config(tnn.LlamaConfig, {**base, **fields, **sizes}), rngs=nnx.Rngs(0)
    )
    folder = tmp_path / "plain"
    tnn.save_hf(model, folder)
    return folder


@pytest.fixture(scope="module")
def gpt_oss_plain(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("oss"), GPT_OSS)


@pytest.fixture(scope="module")
def deepseek_plain(tmp_path_factory) -> Path:
    return _export(
        tmp_path_factory.mktemp("ds"), DEEPSEEK_V3, d_model=16, mlp=tnn.MLPConfig(dim=12)
    )


def _same_params(folder: Path, **overrides) -> None:
    """``folder`` loads into exactly the parameters its unquantized reference does."""
    got, config = tnn.load_hf(folder, **overrides)
    want, ref_config = tnn.load_hf(folder.with_name(folder.name + "-ref"), **overrides)
    assert config == ref_config
    a, b = tnn.get_flat_params(got), tnn.get_flat_params(want)
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("scale_kind", ["F32", "F8_E8M0"])
def test_a_block_scaled_fp8_deepseek_v3_loads_as_its_decoded_weights(
    deepseek_plain, tmp_path, scale_kind
):
    folder = tmp_path / "fp8"
    decoded = _quantize_folder(deepseek_plain, folder, "fp8", scale_kind=scale_kind)
    kv_a = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"
    assert decoded[kv_a].shape == (12, 16)  # three blocks of 4 rows, two of 8 columns
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in decoded
    tnn.check_hf_weights(folder)
    _same_params(folder)


def test_mxfp4_gpt_oss_loads_as_its_decoded_weights_in_any_param_dtype(gpt_oss_plain, tmp_path):
    folder = tmp_path / "mx"
    decoded = _quantize_folder(gpt_oss_plain, folder, "mxfp4", shards=2)
    assert decoded["model.layers.1.mlp.experts.gate_up_proj"].shape == (4, 32, 64)
    assert len(list(folder.glob("model-*.safetensors"))) == 2
    _same_params(folder)
    # bfloat16 params: the decoded values (exact in bfloat16 here) cast as any checkpoint's are.
    _same_params(folder, precision=tnn.Precision("bfloat16", "bfloat16"))


def test_a_loaded_quantized_model_exports_unquantized(gpt_oss_plain, tmp_path):
    folder = tmp_path / "mx"
    _quantize_folder(gpt_oss_plain, folder, "mxfp4")
    model, _ = tnn.load_hf(folder)
    tnn.save_hf(model, tmp_path / "out", dtype="bfloat16")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in config and config["torch_dtype"] == "bfloat16"
    header = read_header(tmp_path / "out" / "model.safetensors")
    assert {e.dtype for e in header.values()} == {"BF16"}
    assert "model.layers.0.mlp.experts.gate_up_proj" in header


def test_the_header_check_reads_no_tensor_of_a_quantized_folder(
    deepseek_plain, tmp_path, monkeypatch
):
    folder = tmp_path / "fp8"
    _quantize_folder(deepseek_plain, folder, "fp8")

    def never(self, name):
        raise AssertionError(f"check_hf_weights read tensor {name}")

    monkeypatch.setattr(LazyWeights, "get", never)
    tnn.check_hf_weights(folder)


def test_loading_holds_one_tensor_dequantized_not_a_shard(tmp_path):
    """A 2-shard MXFP4 gpt-oss: what NumPy holds at once while loading (tracemalloc: the stored
    reads, dequantized tensors and their copies; the model's own JAX buffers are not NumPy's)
    stays below one shard's tensors dequantized, a third of the whole model's: the loader never
    dequantizes a shard, let alone the model, ahead of the model asking for each tensor."""
    moe = tnn.MoEConfig(num_experts=8, experts_per_token=2, router_logit_bias=True)
    plain = _export(tmp_path, GPT_OSS, d_model=128, num_layers=8, moe=moe, **{"mlp.dim": 128})
    folder = tmp_path / "mx"
    decoded = _quantize_folder(plain, folder, "mxfp4", shards=2)
    index = json.loads((folder / INDEX).read_text())["weight_map"]
    per_shard: dict[str, int] = {}
    for name, value in decoded.items():
        file = index[name + "_blocks"]
        per_shard[file] = per_shard.get(file, 0) + value.size * 4  # float32 params
    shard_bytes = min(per_shard.values())
    largest = max(v.size * 4 for v in decoded.values())
    assert sum(per_shard.values()) >= 2 * shard_bytes and shard_bytes >= 4 * largest
    tnn.load_hf(folder)  # imported and traced once, so the measure sees the load alone
    tracemalloc.start()
    try:
        tnn.load_hf(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < shard_bytes, (peak, shard_bytes, largest)


# -- refusals -------------------------------------------------------------------------------------


def _refusal(folder: Path) -> str:
    """The one line both the header check and the loader raise (the same one)."""
    with pytest.raises(ValueError, match=r"^[^\n]*$") as checked:
        tnn.check_hf_weights(folder)
    with pytest.raises(ValueError) as loaded:
        tnn.load_hf(folder)
    assert str(loaded.value) == str(checked.value)
    return str(checked.value)


#: The stored dtypes these tests write: bytes per value and NumPy's type.
_TYPES = {"U8": np.uint8, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E8M0": ml_dtypes.float8_e8m0fnu,
          "F32": np.float32}  # fmt: skip


def _edit(folder: Path, change) -> Path:
    """``folder``'s one file with ``change(tensors)`` applied (name → (dtype, array))."""
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    tensors = {}
    for name, e in read_header(path).items():
        kind = np.dtype(_TYPES[e.dtype])
        count = int(np.prod(e.shape))
        tensors[name] = (e.dtype, np.frombuffer(raw, kind, count, e.offset).reshape(e.shape))
    change(tensors)
    _write(path, tensors)
    return path


def test_an_fp8_tensor_without_its_scales_is_refused(deepseek_plain, tmp_path):
    folder = tmp_path / "fp8"
    _quantize_folder(deepseek_plain, folder, "fp8")
    name = "model.layers.1.mlp.experts.2.up_proj.weight"
    path = _edit(folder, lambda t: t.pop(name + "_scale_inv"))
    assert _refusal(folder) == (
        f"{path}: tensor {name} is stored in FP8 (F8_E4M3) without its scales "
        f"{name}_scale_inv; {FIX} with all its files"
    )


def test_fp8_scales_of_another_block_size_are_refused(deepseek_plain, tmp_path):
    folder = tmp_path / "fp8"
    _quantize_folder(deepseek_plain, folder, "fp8")
    hf = json.loads((folder / "config.json").read_text())
    hf["quantization_config"]["weight_block_size"] = [8, 8]
    (folder / "config.json").write_text(json.dumps(hf))
    message = _refusal(folder)
    assert "in blocks of quantization_config.weight_block_size [8, 8] has" in message
    assert message.endswith("the scales are another block size's; give the checkpoint's "
                            "weight_block_size")  # fmt: skip


def test_mxfp4_blocks_without_their_scales_are_refused(gpt_oss_plain, tmp_path):
    folder = tmp_path / "mx"
    _quantize_folder(gpt_oss_plain, folder, "mxfp4")
    name = "model.layers.0.mlp.experts.down_proj"
    path = _edit(folder, lambda t: t.pop(name + "_scales"))
    assert _refusal(folder) == (
        f"{path}: tensor {name}_blocks holds MXFP4 blocks without their scales {name}_scales; "
        f"{FIX} with all its files"
    )


def test_scales_without_their_tensor_are_refused(gpt_oss_plain, tmp_path):
    folder = tmp_path / "mx"
    _quantize_folder(gpt_oss_plain, folder, "mxfp4")
    name = "model.layers.1.mlp.experts.gate_up_proj"
    _edit(folder, lambda t: t.pop(name + "_blocks"))
    message = _refusal(folder)
    assert f"tensor {name}_scales holds MXFP4 scales without their blocks {name}_blocks" in message


@pytest.mark.parametrize(
    ("quantization", "needle"),
    [
        ({"quant_method": "awq", "bits": 4},
         "quantization_config.quant_method 'awq' is not one tjx reads (it reads fp8, mxfp4"),
        ({"quant_method": "fp8", "activation_scheme": "static"},
         "quantization_config.activation_scheme 'static' is not read by tjx"),
        ({"quant_method": "fp8", "weight_block_size": [128]},
         "weight_block_size is [128], not two integers >= 1"),
        ({"quant_method": "fp8", "weight_block_size": None}, "weight_block_size is null"),
        ({"quant_method": "fp8", "group_size": 64}, "has key(s) group_size that transformers' "
         "FineGrainedFP8Config does not read"),
        ({"quant_method": "mxfp4"}, "'mxfp4' on model_type 'deepseek_v3'"),
        ("fp8", "quantization_config is 'fp8' (a string), not a JSON object"),
    ],
)  # fmt: skip
def test_a_quantization_tjx_does_not_read_is_refused_in_one_line(
    deepseek_plain, tmp_path, quantization, needle
):
    folder = tmp_path / "ck"
    folder.mkdir()
    hf = json.loads((deepseek_plain / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(hf | {"quantization_config": quantization}))
    (folder / "model.safetensors").write_bytes((deepseek_plain / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        tnn.read_hf_config(folder)  # as a plan reads it: before any weight
    assert needle in str(info.value)
    assert _refusal(folder) == str(info.value)
    if quantization != {"quant_method": "mxfp4"}:
        assert isinstance(info.value, HFConfigError)


EXPERTS = "model.layers.0.mlp.experts.down_proj"
Q_A = "model.layers.0.self_attn.q_a_proj.weight"
NORM = "model.norm.weight"


def _retype(name: str, dtype: str, kind):
    """The tensor ``name`` stored as ``dtype`` (its bytes as they are, viewed as ``kind``)."""
    return lambda t: t.update({name: (dtype, t[name][1].view(kind))})


@pytest.mark.parametrize(
    ("method", "change", "needle"),
    [
        ("fp8", _retype(Q_A + "_scale_inv", "I32", np.int32),
         f"tensor {Q_A}_scale_inv is stored as I32; FP8 scales are F32, BF16, F16, F8_E8M0, U8"),
        ("fp8", lambda t: t.update({NORM: ("F8_E4M3", np.zeros(16, np.uint8)), NORM + "_scale_inv":
                                    ("F32", np.ones(1, np.float32))}),
         f"tensor {NORM} has shape [16]: FP8 blocks need two dims or more"),
        ("fp8", lambda t: t.update({NORM + "_scale_inv": ("F32", np.ones(1, np.float32))}),
         f"tensor {NORM}_scale_inv scales {NORM}, which is not stored in FP8 (F32)"),
        ("mxfp4", _retype(EXPERTS + "_blocks", "I8", np.int8),
         f"tensor {EXPERTS}_blocks is stored as I8; MXFP4 stores U8"),
        ("mxfp4", lambda t: t.update({EXPERTS + "_blocks": ("U8", np.zeros((4, 32, 2, 8), "u1")),
                                      EXPERTS + "_scales": ("U8", np.zeros((4, 32, 2), "u1"))}),
         f"tensor {EXPERTS}_blocks has shape [4, 32, 2, 8]; MXFP4 blocks are [experts, rows, "
         "groups, 16] bytes"),
        ("mxfp4", lambda t: t.update({EXPERTS + "_scales": ("U8", np.zeros((4, 32, 2), np.uint8))}),
         f"tensor {EXPERTS}_scales has shape [4, 32, 2], but {EXPERTS}_blocks [4, 32, 1, 16] has "
         "one scale per 32 values: [4, 32, 1]"),
        ("mxfp4", lambda t: t.update({EXPERTS: ("F32", np.zeros((4, 32, 32), np.float32))}),
         f"tensor {EXPERTS} is stored both whole and as MXFP4 blocks ({EXPERTS}_blocks)"),
    ],
)  # fmt: skip
def test_quantized_tensors_of_another_form_are_refused_by_name(
    deepseek_plain, gpt_oss_plain, tmp_path, method, change, needle
):
    folder = tmp_path / "q"
    _quantize_folder(deepseek_plain if method == "fp8" else gpt_oss_plain, folder, method)
    path = _edit(folder, change)
    message = _refusal(folder)
    assert message.startswith(f"{path}: ") and needle in message
    assert message.endswith(FIX)


@pytest.mark.parametrize("damage", ["truncated", "removed"])
def test_an_fp8_file_that_changes_after_its_header_check_is_named(deepseek_plain, tmp_path, damage):
    folder = tmp_path / "fp8"
    _quantize_folder(deepseek_plain, folder, "fp8")
    path = folder / "model.safetensors"
    with LazyWeights(folder) as weights:
        if damage == "truncated":  # the header alone: every tensor's bytes gone
            whole = path.read_bytes()
            path.write_bytes(whole[: 8 + int.from_bytes(whole[:8], "little")])
        else:
            path.unlink()
        with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
            weights.get(Q_A)
    assert str(info.value).startswith(f"{path} no longer reads (")
    assert str(info.value).endswith(FIX)
