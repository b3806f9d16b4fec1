"""``config.json``'s ``quantization_config``, read once (`read_quantization`): the keys of each
format tjx dequantizes (`QUANTIZATION_SPECS`, `Spec`s of `tjx.nn.hf.keys`) and the values tjx
computes; what it refuses is one `HFConfigError` line naming the key and the fix. The
dequantization itself is `tjx.nn.hf.quantized`'s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.hf.keys import (
    _JSON_NAMES,
    ABSENT,
    REQUIRED,
    HFConfigError,
    Key,
    Spec,
    flag,
    int_list,
    text,
)

#: The quantized formats tjx dequantizes as it loads (`tjx.nn.hf.quantized`): ``quant_method`` →
#: the keys of ``quantization_config`` read, as transformers 5.24's ``FineGrainedFP8Config`` and
#: ``Mxfp4Config`` read them (with their defaults). Keys that change no number: which modules a
#: quantizer left out or would add (tjx sees which tensors are quantized from the files),
#: transformers' own ``dequantize`` switch, DeepSeek's ``fmt`` (the tensors' dtype says it).
QUANTIZATION_SPECS: dict[str, Spec] = {
    "fp8": Spec(
        "FineGrainedFP8Config",
        {
            "quant_method": text(REQUIRED),
            "weight_block_size": int_list([128, 128]),
            "activation_scheme": text("dynamic"),
            "scale_fmt": text("float", null="float"),
            "expert_dtype": text("fp8"),
            "fmt": text(ABSENT),
            "dequantize": flag(ABSENT),
            "modules_to_not_convert": Key("list", ABSENT, None, items="str"),
            "ignored_layers": Key("list", ABSENT, None, items="str"),
            "modules_to_convert": Key("list", ABSENT, None, items="str"),
        },
        head_dim_from_hidden=False,
    ),
    "mxfp4": Spec(
        "Mxfp4Config",
        {
            "quant_method": text(REQUIRED),
            "dequantize": flag(ABSENT),
            "modules_to_not_convert": Key("list", ABSENT, None, items="str"),
        },
        head_dim_from_hidden=False,
    ),
}
#: What each method's values must be where transformers' class allows others tjx does not read.
_QUANT_VALUES: dict[str, dict[str, tuple[Any, ...]]] = {
    "fp8": {
        # static: per-tensor activation scales quantize the inputs too, a computation tjx's
        # dequantized model does not do.
        "activation_scheme": ("dynamic",),
        "scale_fmt": ("float", "ue8m0"),
        # fp4: DeepSeek-V4's packed FP4 experts.
        "expert_dtype": ("fp8",),
        # DeepSeek writes the short names, MiniMax-M2 the dtype's (the tensors' dtype rules).
        "fmt": ("e4m3", "e5m2", "float8_e4m3fn"),
    },
    "mxfp4": {},
}


def read_quantization(hf: Mapping[str, Any]) -> dict[str, Any] | None:
    """``config.json``'s ``quantization_config`` checked as its method's `QUANTIZATION_SPECS`
    entry reads it (transformers' defaults filled in), or None when there is none (or null).

    Raises
    ------
    HFConfigError
        One line naming the key and the fix: not an object; a ``quant_method`` tjx does not read
        (naming those it reads); a key the method's config class does not have; a value of the
        wrong type, or one tjx does not compute (``activation_scheme: static``, FP4 experts); a
        ``weight_block_size`` that is not two integers >= 1.
    """
    where = "config.json: quantization_config"
    config = hf.get("quantization_config")
    if config is None:
        return None
    if not isinstance(config, Mapping):
        got = _JSON_NAMES.get(type(config), type(config).__name__)
        raise HFConfigError(f"{where} is {config!r} ({got}), not a JSON object: fix it")
    method = config.get("quant_method")
    if method not in QUANTIZATION_SPECS:
        raise HFConfigError(
            f"{where}.quant_method {method!r} is not one tjx reads (it reads "
            f"{', '.join(QUANTIZATION_SPECS)}: block-scaled FP8, gpt-oss's MXFP4 experts); load "
            "an unquantized (bf16) conversion of the checkpoint"
        )
    spec = QUANTIZATION_SPECS[method]
    unknown = sorted(set(config) - set(spec.keys))
    if unknown:
        raise HFConfigError(
            f"{where} has key(s) {', '.join(unknown)} that transformers' {spec.cls} does not "
            f"read and tjx does not know (it reads {', '.join(spec.keys)}): remove them or load an "
            "unquantized conversion"
        )
    out = spec.read(config, prefix="quantization_config.")
    for name, allowed in _QUANT_VALUES[method].items():
        if name in out and out[name] not in allowed:
            raise HFConfigError(
                f"{where}.{name} {out[name]!r} is not read by tjx (it reads "
                f"{', '.join(map(repr, allowed))} for quant_method {method!r}): load an "
                "unquantized conversion of the checkpoint"
            )
    block = out.get("weight_block_size", ())
    if block is None:
        raise HFConfigError(
            f"{where}.weight_block_size is null (one scale per tensor), which tjx does not read: "
            "it reads block-scaled FP8 (e.g. [128, 128], DeepSeek-V3's); load an unquantized "
            "conversion of the checkpoint"
        )
    if method == "fp8" and (len(block) != 2 or min(block) < 1):
        raise HFConfigError(
            f"{where}.weight_block_size is {block!r}, not two integers >= 1 (rows, columns of "
            "each scaled block): give the checkpoint's value"
        )
    return out
