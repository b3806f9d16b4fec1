"""Quantized Hugging Face checkpoints, dequantized as their tensors stream in (pure NumPy).

Three published formats (``config.json``'s ``quantization_config``, read by
`tjx.nn.hf.quantization_config.read_quantization`):

==========================  ===================================  ==================================
``quant_method``            stored (safetensors)                 value tjx loads
==========================  ===================================  ==================================
``fp8`` (DeepSeek-V3,       ``X`` F8_E4M3 (or F8_E5M2)           ``X[..., i, j] ·
V3.1, Kimi-K2; any          ``[..., R, C]`` and ``X_scale_inv``  S[..., i // bm, j // bn]``, the
family tjx loads)           ``[..., ⌈R/bm⌉, ⌈C/bn⌉]`` (F32,     product rounded to float32 (then
                            BF16, F16; F8_E8M0 or U8 for         to the param dtype); ``(bm, bn)``
                            ``scale_fmt: ue8m0``)                is ``weight_block_size``
``mxfp4`` (gpt-oss's        ``X_blocks`` U8 ``[E, O, G, 16]``    byte ``k`` of a block holds values
experts)                    and ``X_scales`` U8 (E8M0)           ``2k`` (its low nibble) and
                            ``[E, O, G]``: 32 e2m1 values per    ``2k + 1`` (its high one), each an
                            scale                                e2m1 code (±{0, .5, 1, 1.5, 2, 3,
                                                                 4, 6}) times ``2^(scale − 127)``;
                                                                 ``[E, O, G·32]`` transposed to
                                                                 ``X`` ``[E, G·32, O]``
``compressed-tensors``      ``X_packed`` I32 ``[..., O, W]``     value ``i`` of a row: the nibble
(Kimi-K2.5's experts;       (``W = ⌈I/8⌉``), ``X_scale``         at bit ``4i`` of its words (byte
``pack-quantized``,         ``[..., O, I/g]`` (F32, BF16,        ``k`` of a word holds ``2k`` low,
symmetric INT4, one         F16) and ``X_shape`` ``[..., O,      ``2k + 1`` high) minus 8 (−8 … 7),
scale per ``g`` inputs)     I]`` (I64 or I32); ``X`` is a        times its group's scale, rounded
                            module's ``weight``                  to the scale's dtype: ``X``
                                                                 ``[..., O, I]``
==========================  ===================================  ==================================

As transformers 5.24 dequantizes them (``integrations/finegrained_fp8.py``'s ``Fp8Dequantize``,
``integrations/mxfp4.py``'s ``convert_moe_packed_tensors`` with its ``transpose(1, 2)``,
``integrations/compressed_tensors.py``'s ``CompressedTensorsDequantize``, which runs
compressed-tensors 0.20.0's ``PackedQuantizationCompressor.decompress``): FP8's products are
float32 roundings of exact products (an FP8 value has 4 significant bits, a float32 scale 24:
the product is exact in float64), MXFP4's are exact, INT4's are rounded to their scales' dtype
(compressed-tensors multiplies in it; an INT4 value times a BF16 or F16 scale is exact in
float32, so that is one rounding); each is then cast to the model's param dtype, as
transformers casts to its parameter's. FP8's grid is DeepSeek's own: a tensor
whose rows or columns the block does not divide has a last, partial block (DeepSeek-V3's
``kv_a_proj_with_mqa``, ``[576, 7168]``, has a ``[5, 56]`` grid), which transformers 5.24's
dequantization refuses.

`Dequantized` shows a folder's tensors as the unquantized checkpoint's (``X`` instead of its
parts, in the param dtype) to the loader, which then reads, checks and maps them as any other.
Each tensor is dequantized (`tjx.nn.hf.dequantize`) when the model asks for it, in chunks of
at most ``CHUNK_BYTES`` of float32 into an array of the param dtype: the loader holds the
model plus one tensor's dequantized values (and its stored bytes), never a second copy of the
model. Refused in one line naming the file and tensor: a quantized tensor without its scale
(or scales without their tensor), a scale grid the ``weight_block_size`` does not give, blocks
not of 16 bytes, packed INT4 words the ``group_size`` does not fit, a ``weight_shape`` its
``group_size`` does not divide, a zero point (an asymmetric scheme).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tjx.nn.hf.dequantize import (
    CT_PER_WORD,
    MX_BLOCK,
    MX_BYTES,
    dequantize_fp8,
    dequantize_int4,
    dequantize_mxfp4,
    fp8_grid,
)
from tjx.nn.hf.quantization_config import CT_FORMAT, QUANTIZATION_SPECS, read_quantization
from tjx.nn.hf.reading import Tensors

#: The ``quant_method`` values tjx dequantizes (`QUANTIZATION_SPECS`).
QUANT_METHODS = tuple(QUANTIZATION_SPECS)
#: Which model types each method is read for: MXFP4's layout is gpt-oss's experts'.
_MXFP4_TYPES = ("gpt_oss",)
#: The stored dtypes of FP8 weights (``fp8``) and of their scales.
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
FP8_SCALE_DTYPES = ("F32", "BF16", "F16", "F8_E8M0", "U8")
#: MXFP4's scales: E8M0 exponents (transformers writes them as bytes).
MXFP4_SCALE_DTYPES = ("U8", "F8_E8M0")
#: The stored dtypes of packed INT4 scales and of the unpacked shape.
CT_SCALE_DTYPES = ("F32", "BF16", "F16")
CT_SHAPE_DTYPES = ("I64", "I32")
#: safetensors' name of each param dtype a dequantized tensor is delivered in.
_DTYPE_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}
_FIX = "download or save the checkpoint again"


@dataclass(frozen=True)
class Quantization:
    """A checkpoint's quantization: ``method`` (`QUANT_METHODS`) and, for ``fp8``, the
    ``(rows, columns)`` of each scaled block; for ``compressed-tensors``, the inputs per scale
    (``group_size``)."""

    method: str
    block: tuple[int, int] | None = None
    group: int | None = None


def quantization_from_hf(hf: Mapping[str, Any]) -> Quantization | None:
    """The quantization ``config.json`` (a dict) declares, or None.

    Raises
    ------
    ValueError
        As `read_quantization` (a `HFConfigError`), and ``mxfp4`` on a model type
        other than gpt-oss's: one line naming it.
    """
    config = read_quantization(hf)
    if config is None:
        return None
    method = str(config["quant_method"])
    if method == "mxfp4":
        model_type = hf.get("model_type")
        if model_type not in _MXFP4_TYPES:
            raise ValueError(
                f"config.json: quantization_config.quant_method 'mxfp4' on model_type "
                f"{model_type!r}: tjx reads MXFP4 as transformers does, for "
                f"{', '.join(_MXFP4_TYPES)}'s experts only; load an unquantized conversion"
            )
        return Quantization(method)
    if method == "compressed-tensors":
        return Quantization(method, group=int(config["group_size"]))
    rows, cols = config["weight_block_size"]
    return Quantization(method, (int(rows), int(cols)))


def without_quantization(hf: Mapping[str, Any]) -> dict[str, Any]:
    """``hf`` without its ``quantization_config``: the model it describes, unquantized. An
    image-text config's ``text_config`` that repeats the folder's (the published Kimi-K2.5's)
    loses it too; one that differs stays, for the family to refuse."""
    quantization = hf.get("quantization_config")
    out = {k: v for k, v in hf.items() if k != "quantization_config"}
    inner = out.get("text_config")
    if isinstance(inner, Mapping) and inner.get("quantization_config", {}) == quantization:
        out["text_config"] = {k: v for k, v in inner.items() if k != "quantization_config"}
    return out


class Dequantized:
    """The tensors of a quantized checkpoint as the unquantized one's, dequantized when read.

    Parameters
    ----------
    weights : Tensors
        The folder's stored tensors (an entered `tjx.nn.hf.reading.LazyWeights`).
    quantization : Quantization
        The folder's (`quantization_from_hf`).
    dtype : dtype
        The model's param dtype: what a dequantized tensor is delivered in.

    Raises
    ------
    ValueError
        From the headers alone (no tensor read): a quantized tensor without its scale, scales
        without their tensor, a scale of another dtype, a grid ``weight_block_size`` does not
        give, MXFP4 blocks of another layout; one line naming the file and the tensor.
    """

    def __init__(self, weights: Tensors, quantization: Quantization, dtype: Any = np.float32):
        self._weights = weights
        self._quantization = quantization
        self._dtype = np.dtype(dtype)
        self._dtype_name = _DTYPE_NAMES.get(self._dtype.name, "F32")
        #: name the model reads → (stored tensor, its scales) and the shape it reads.
        self._parts: dict[str, tuple[str, str]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        #: Stored tensors a quantized one reads beside its pair (compressed-tensors' shapes).
        self._aux: set[str] = set()
        stored = weights.names()
        if quantization.method == "fp8":
            self._pair_fp8(stored)
        elif quantization.method == "mxfp4":
            self._pair_mxfp4(stored)
        else:
            self._pair_packed(stored)
        hidden = {n for pair in self._parts.values() for n in pair} | self._aux
        self._names = (stored - hidden) | set(self._parts)
        #: The last tensor dequantized: a tensor the mapping splits (gpt-oss's interleaved
        #: gate/up, DeepSeek's kv_a) is read once per part; one at a time is kept.
        self._last: tuple[str, np.ndarray] | None = None

    def _refuse(self, name: str, what: str) -> ValueError:
        return ValueError(f"{self._weights.path(name)}: tensor {name} {what}")

    def _missing(self, name: str, what: str) -> ValueError:
        """``name`` refused for a part of its format that the folder lacks (``what``): a folder
        copied in part, so the fix is the whole checkpoint."""
        return self._refuse(name, f"{what}; {_FIX} with all its files")

    def _check_unique(self, base: str, stored: set[str], how: str) -> None:
        """Refuse ``base`` when the folder stores it unquantized beside its quantized parts
        (``how``: the form they take): the two would give the one tensor twice."""
        if base in stored:
            raise self._refuse(base, f"is stored both whole and {how}; {_FIX}")

    def _check_dtypes(self, layout: str, parts: Iterable[tuple[str, tuple[str, ...]]]) -> None:
        """Refuse the first of ``parts`` (a stored tensor, the dtypes ``layout`` stores it in)
        that is stored in another dtype."""
        for part, dtypes in parts:
            dtype = self._weights.dtype(part)
            if dtype not in dtypes:
                raise self._refuse(
                    part, f"is stored as {dtype}; {layout} stores {' or '.join(dtypes)}; {_FIX}"
                )

    def _pair_fp8(self, stored: set[str]) -> None:
        w, block = self._weights, self._quantization.block
        assert block is not None
        for name in sorted(n for n in stored if w.dtype(n) in FP8_DTYPES):
            scale = name + "_scale_inv"  # X.weight → X.weight_scale_inv, as transformers names it
            if scale not in stored:
                raise self._missing(
                    name, f"is stored in FP8 ({w.dtype(name)}) without its scales {scale}"
                )
            if w.dtype(scale) not in FP8_SCALE_DTYPES:
                raise self._refuse(
                    scale,
                    f"is stored as {w.dtype(scale)}; FP8 scales are "
                    f"{', '.join(FP8_SCALE_DTYPES)}; {_FIX}",
                )
            shape, grid = w.shape(name), fp8_grid(w.shape(name), block)
            if grid is None:
                raise self._refuse(
                    name, f"has shape {list(shape)}: FP8 blocks need two dims or more; {_FIX}"
                )
            if w.shape(scale) != grid:
                raise self._refuse(
                    scale,
                    f"has shape {list(w.shape(scale))}, but {name} {list(shape)} in blocks of "
                    f"quantization_config.weight_block_size {list(block)} has {list(grid)}: the "
                    "scales are another block size's; give the checkpoint's weight_block_size",
                )
            self._parts[name] = (name, scale)
            self._shapes[name] = shape
        used = {scale for _, scale in self._parts.values()}
        for name in sorted(n for n in stored if n.endswith("_scale_inv") and n not in used):
            base = name.removesuffix("_scale_inv")
            how = w.dtype(base) if base in stored else "absent"
            raise self._refuse(name, f"scales {base}, which is not stored in FP8 ({how}); {_FIX}")

    def _pair_mxfp4(self, stored: set[str]) -> None:
        w = self._weights
        for name in sorted(n for n in stored if n.endswith("_blocks")):
            base = name.removesuffix("_blocks")
            scales = base + "_scales"
            if scales not in stored:
                raise self._missing(name, f"holds MXFP4 blocks without their scales {scales}")
            self._check_unique(base, stored, f"as MXFP4 blocks ({name})")
            self._check_dtypes("MXFP4", ((name, ("U8",)), (scales, MXFP4_SCALE_DTYPES)))
            shape = w.shape(name)
            if len(shape) != 4 or shape[-1] != MX_BYTES:
                raise self._refuse(
                    name, f"has shape {list(shape)}; MXFP4 blocks are [experts, rows, groups, "
                    f"{MX_BYTES}] bytes ({MX_BLOCK} values a scale); {_FIX}",
                )  # fmt: skip
            if w.shape(scales) != shape[:-1]:
                raise self._refuse(
                    scales, f"has shape {list(w.shape(scales))}, but {name} {list(shape)} has "
                    f"one scale per {MX_BLOCK} values: {list(shape[:-1])}; {_FIX}",
                )  # fmt: skip
            self._parts[base] = (name, scales)
            self._shapes[base] = (shape[0], shape[2] * MX_BLOCK, shape[1])
        used = {scales for _, scales in self._parts.values()}
        for name in sorted(n for n in stored if n.endswith("_scales") and n not in used):
            blocks = name.removesuffix("_scales") + "_blocks"
            raise self._missing(name, f"holds MXFP4 scales without their blocks {blocks}")

    def _pair_packed(self, stored: set[str]) -> None:
        w, group = self._weights, self._quantization.group
        assert group is not None
        g_key = "quantization_config.config_groups' group_size"
        for name in sorted(n for n in stored if n.endswith("weight_packed")):
            base = name.removesuffix("_packed")  # X.weight_packed → X.weight, as it loads
            scale, shape_name, zero = base + "_scale", base + "_shape", base + "_zero_point"
            for part in (scale, shape_name):
                if part not in stored:
                    raise self._missing(
                        name, f"holds packed INT4 weights ({CT_FORMAT}) without {part}"
                    )
            self._check_unique(base, stored, f"packed ({name})")
            if zero in stored:
                raise self._refuse(
                    zero, "is a zero point (an asymmetric scheme): tjx reads symmetric INT4, as "
                    "quantization_config says; load an unquantized conversion of the checkpoint",
                )  # fmt: skip
            self._check_dtypes(
                CT_FORMAT,
                ((name, ("I32",)), (scale, CT_SCALE_DTYPES), (shape_name, CT_SHAPE_DTYPES)),
            )
            packed, scales = w.shape(name), w.shape(scale)
            if len(packed) < 2 or w.shape(shape_name) != (len(packed),):
                raise self._refuse(
                    name, f"has shape {list(packed)} with {shape_name} of shape "
                    f"{list(w.shape(shape_name))}: packed weights have two dims or more, and "
                    f"their shape one entry a dim; {_FIX}",
                )  # fmt: skip
            cols = scales[-1] * group if scales else 0
            if scales[:-1] != packed[:-1] or packed[-1] != -(-cols // CT_PER_WORD):
                raise self._refuse(
                    scale, f"has shape {list(scales)}, but {name} {list(packed)} holds "
                    f"{packed[-1] * CT_PER_WORD} values a row ({CT_PER_WORD} a word) and its "
                    f"scales' groups of {g_key} {group} {cols}: the scales are another group "
                    "size's; give the checkpoint's group_size",
                )  # fmt: skip
            self._parts[base] = (name, scale)
            self._shapes[base] = (*packed[:-1], cols)
            self._aux.add(shape_name)
        used = {scale for _, scale in self._parts.values()} | self._aux
        for name in sorted(stored - used):
            if name.endswith(("weight_scale", "weight_shape")):
                raise self._missing(
                    name, f"belongs to packed INT4 weights {name[:-6]}_packed, which are not stored"
                )

    def _check_shape(self, name: str) -> None:
        """``name``'s stored ``weight_shape`` (read: a few integers) is the shape its packed words
        and scales give: a width its ``group_size`` does not divide is refused, as
        compressed-tensors refuses to compress it."""
        stored = name + "_shape"
        said = tuple(int(v) for v in self._weights.get(stored).reshape(-1))
        want = self._shapes[name]
        if said != want:
            group = self._quantization.group
            raise self._refuse(
                stored, f"says {list(said)}, but its packed weights and their scales (groups of "
                f"{group} inputs) hold {list(want)}: a width group_size {group} does not divide, "
                f"or another group size's scales; {_FIX}",
            )  # fmt: skip

    def names(self) -> set[str]:
        """Every tensor name, the quantized ones under the name of the tensor they make."""
        return set(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape ``name`` reads as (a dequantized tensor's, no data read)."""
        return self._shapes[name] if name in self._parts else self._weights.shape(name)

    def dtype(self, name: str) -> str:
        """The stored dtype of ``name``; the param dtype's name for a quantized one."""
        return self._dtype_name if name in self._parts else self._weights.dtype(name)

    def path(self, name: str) -> Path:
        """The file that holds ``name`` (a quantized one's data)."""
        return self._weights.path(self._parts[name][0] if name in self._parts else name)

    def get(self, name: str) -> np.ndarray:
        """The tensor ``name``, dequantized into the param dtype where it is stored quantized."""
        if name not in self._parts:
            return self._weights.get(name)
        if self._last is not None and self._last[0] == name:
            return self._last[1]
        self._last = None  # never two dequantized tensors at once
        data, scales = (self._weights.get(n) for n in self._parts[name])
        if self._quantization.method == "fp8":
            assert self._quantization.block is not None
            value = dequantize_fp8(data, scales, self._quantization.block, self._dtype)
        elif self._quantization.method == "mxfp4":
            value = dequantize_mxfp4(data, scales, self._dtype)
        else:
            assert self._quantization.group is not None
            self._check_shape(name)
            value = dequantize_int4(data, scales, self._quantization.group, self._dtype)
        del data, scales
        self._last = (name, value)
        return value


def open_dequantized(weights: Tensors, hf: Mapping[str, Any], dtype: Any) -> Tensors:
    """``weights`` as the unquantized checkpoint's when ``hf`` (``config.json``) declares a
    quantization (`Dequantized`), else as they are."""
    quantization = quantization_from_hf(hf)
    return weights if quantization is None else Dequantized(weights, quantization, dtype)
