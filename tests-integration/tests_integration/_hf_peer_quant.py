"""transformers' side of the quantized-checkpoint test (``test_hf_quantized_peer``); runs ONLY in
the scratch venv (torch inside), from ``_hf_peer_script``.

``{"quantize": SPEC, "out": FOLDER}``: ``SPEC["plain"]`` is a folder ``_hf_peer_script``'s
``make`` wrote (a tiny random float32 model, scored); its tensors are quantized as the published
folders are and written to ``FOLDER`` with ``config.json``'s ``quantization_config``:

* ``"method": "fp8"`` (DeepSeek-V3's, V3.2's and MiniMax-M2's releases): every ``nn.Linear``
  weight of the decoder layers (attention, dense MLPs, each routed and shared expert; not the
  embeddings, norms or head, nor the modules ``SPEC["keep"]`` names, matched as transformers'
  ``should_convert_module`` matches a suffix: by default the router ``mlp.gate``) becomes
  ``float8_e4m3fn`` and its ``weight_scale_inv`` per ``SPEC["block"]`` block, by transformers'
  own quantizer (``finegrained_fp8.Fp8Quantize``); ``SPEC["scale_fmt"]`` ``"ue8m0"`` (V3.1's and
  V3.2's) rounds each scale up to a power of two, stored as float32 as those releases store it;
  ``SPEC["config"]`` holds the release's own ``quantization_config`` keys written beside
  (MiniMax-M2's ``fmt`` and ``modules_to_not_convert``);
* ``"method": "mxfp4"`` (gpt-oss's release): each layer's experts (``gate_up_proj``,
  ``down_proj``) become ``*_blocks`` ``[E, out, in/32, 16]`` bytes and ``*_scales`` ``[E, out,
  in/32]`` E8M0 exponents, by hand (transformers' MXFP4 quantizer needs Triton kernels): each
  32 inputs of an output row share the scale ``2^(floor(log2 max|x|) - 2)`` (the OCP MX rule,
  e2m1's largest exponent being 2), each value is rounded to the nearest e2m1 code, value
  ``2k`` in the low nibble of byte ``k`` and ``2k + 1`` in its high one;
* ``"method": "compressed-tensors"`` (Kimi-K2.5's release): each routed expert's projection
  (``mlp.experts.N.*_proj``) becomes compressed-tensors' ``pack-quantized`` symmetric INT4
  (``weight_packed`` int32, ``weight_scale`` per ``SPEC["group"]`` inputs, stored in
  ``SPEC["scale_dtype"]`` as the release's BF16, ``weight_shape``), by compressed-tensors' own
  ``calculate_qparams`` and ``PackedQuantizationCompressor``; everything else stays, as the
  release's ``ignore`` list says. transformers' dequantized experts (its parameters keep the
  scales' dtype) are written to ``FOLDER/experts.npz`` (as float32) and their dtypes to
  ``FOLDER/experts.json``.

transformers then loads ``FOLDER`` with its dequantizing path (``dequantize=True``:
``Fp8Dequantize`` / ``convert_moe_packed_tensors`` / ``CompressedTensorsDequantize``) in
float32 and scores it into ``FOLDER/peer.npz`` as ``_hf_peer_script.score`` does.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch  # pants: no-infer-dep (the scratch venv's, never the resolve's)
from compressed_tensors.compressors.pack_quantized.base import (
    PackedQuantizationCompressor,  # pants: no-infer-dep
)
from compressed_tensors.quantization import (
    QuantizationArgs,  # pants: no-infer-dep
    QuantizationScheme,  # pants: no-infer-dep
)
from compressed_tensors.quantization.utils import calculate_qparams  # pants: no-infer-dep
from safetensors.torch import load_file, save_file  # pants: no-infer-dep
from transformers import AutoModelForCausalLM  # pants: no-infer-dep
from transformers.integrations.finegrained_fp8 import Fp8Quantize  # pants: no-infer-dep
from transformers.utils.quantization_config import (
    CompressedTensorsConfig,  # pants: no-infer-dep
    FineGrainedFP8Config,  # pants: no-infer-dep
    Mxfp4Config,  # pants: no-infer-dep
)

#: e2m1's magnitudes by code (codes 8-15 are their negatives).
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
#: What the published gpt-oss folders leave unquantized (its config's list).
GPT_OSS_KEEP = [
    "model.layers.*.self_attn",
    "model.layers.*.mlp.router",
    "model.embed_tokens",
    "lm_head",
]


def _fp8(
    tensors: dict[str, torch.Tensor], block: list[int], keep: list[str], scale_fmt: str
) -> dict[str, torch.Tensor]:
    config = FineGrainedFP8Config(weight_block_size=tuple(block), scale_fmt=scale_fmt)

    class Quantizer:  # what Fp8Quantize reads of its quantizer
        quantization_config = config

    op = Fp8Quantize(Quantizer())
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        linear = name.startswith("model.layers.") and name.endswith(".weight") and value.ndim == 2
        module = name.removesuffix(".weight")
        if linear and not any(module == k or module.endswith("." + k) for k in keep):
            for key, part in op._quantize_one(name, value).items():
                # ue8m0 scales come back as float8_e8m0fnu; the releases store float32 ones.
                out[key] = part.float() if key.endswith("_scale_inv") else part
        else:
            out[name] = value
    return out


def _mxfp4_pack(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[E, in, out]`` float → blocks ``[E, out, in/32, 16]`` and scales ``[E, out, in/32]``."""
    rows = weight.transpose(0, 2, 1).astype(np.float64)  # [E, out, in]
    experts, outs, ins = rows.shape
    groups = rows.reshape(experts, outs, ins // 32, 32)
    amax = np.abs(groups).max(axis=-1)
    exponent = np.where(amax > 0, np.floor(np.log2(np.where(amax > 0, amax, 1.0))) - 2, 0)
    exponent = np.clip(exponent, -127, 127)
    scaled = groups / 2.0 ** exponent[..., None]
    code = np.abs(np.abs(scaled)[..., None] - E2M1).argmin(axis=-1)  # nearest, clipped to 6
    code = np.where(scaled < 0, code + 8, code).astype(np.uint8)
    blocks = code[..., 0::2] | (code[..., 1::2] << 4)
    return np.ascontiguousarray(blocks, np.uint8), np.ascontiguousarray(exponent + 127, np.uint8)


def _mxfp4(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            blocks, scales = _mxfp4_pack(value.numpy())
            out[name + "_blocks"] = torch.from_numpy(blocks)
            out[name + "_scales"] = torch.from_numpy(scales)
        else:
            out[name] = value
    return out


def _int4_config(group: int) -> dict:
    """The published Kimi-K2.5's ``quantization_config`` (its ``group_size`` changed)."""
    weights = {"actorder": None, "block_structure": None, "dynamic": False, "group_size": group,
               "num_bits": 4, "observer": "minmax", "observer_kwargs": {}, "strategy": "group",
               "symmetric": True, "type": "int"}  # fmt: skip
    return {
        "config_groups": {"group_0": {"input_activations": None, "output_activations": None,
                                      "targets": ["Linear"], "weights": weights}},
        "format": "pack-quantized",
        "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*",
                   "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"],
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
    }  # fmt: skip


def _int4(
    tensors: dict[str, torch.Tensor], group: int, scale_dtype: str
) -> dict[str, torch.Tensor]:
    config = _int4_config(group)["config_groups"]["group_0"]
    scheme = QuantizationScheme(
        targets=config["targets"], weights=QuantizationArgs(**config["weights"])
    )
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        if ".mlp.experts." not in name or not name.endswith("_proj.weight"):
            out[name] = value
            continue
        groups = value.reshape(value.shape[0], -1, group)  # [out, in/group, group]
        scale, zero = calculate_qparams(groups.amin(-1), groups.amax(-1), scheme.weights)
        state = {"weight": value, "weight_scale": scale.to(getattr(torch, scale_dtype)),
                 "weight_zero_point": zero}  # fmt: skip
        packed = PackedQuantizationCompressor.compress(state, scheme)
        prefix = name.removesuffix("weight")
        out.update({prefix + k: v.contiguous() for k, v in packed.items()})
    return out


def quantize(job: dict, score: Callable[..., None], eager: dict[str, str]) -> None:
    """Run one ``quantize`` job (the module doc); ``score``/``eager``: ``_hf_peer_script``'s."""
    spec, folder = job["quantize"], Path(job["out"])
    plain = Path(spec["plain"])
    folder.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(plain / "model.safetensors"))
    config = json.loads((plain / "config.json").read_text())
    if spec["method"] == "fp8":
        scale_fmt = spec.get("scale_fmt", "float")
        tensors = _fp8(tensors, spec["block"], spec.get("keep", ["mlp.gate"]), scale_fmt)
        config["quantization_config"] = {
            "quant_method": "fp8",
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "weight_block_size": spec["block"],
            **({"scale_fmt": scale_fmt} if scale_fmt != "float" else {}),
            **spec.get("config", {}),
        }
        loading = FineGrainedFP8Config(weight_block_size=tuple(spec["block"]), dequantize=True)
    elif spec["method"] == "compressed-tensors":
        tensors = _int4(tensors, spec["group"], spec["scale_dtype"])
        config["quantization_config"] = _int4_config(spec["group"])
        loading = CompressedTensorsConfig(dequantize=True)
    else:
        tensors = _mxfp4(tensors)
        config["quantization_config"] = {
            "quant_method": "mxfp4",
            "modules_to_not_convert": GPT_OSS_KEEP,
        }
        loading = Mxfp4Config(dequantize=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for extra in ("generation_config.json",):
        if (plain / extra).is_file():
            shutil.copyfile(plain / extra, folder / extra)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, quantization_config=loading, **eager
    )
    tokens = np.asarray(spec["tokens"], dtype=np.int64)
    score(model, tokens, spec["new"], folder / "peer.npz")
    if spec["method"] == "compressed-tensors":
        # The experts as transformers dequantized them (in the scales' dtype: it keeps that dtype
        # for the parameter, and computes the experts in it), for a comparison value by value.
        experts = {k: v for k, v in model.state_dict().items() if ".mlp.experts." in k}
        dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in experts.items()}
        np.savez(folder / "experts.npz", **{k: v.float().numpy() for k, v in experts.items()})
        (folder / "experts.json").write_text(json.dumps(dtypes))
