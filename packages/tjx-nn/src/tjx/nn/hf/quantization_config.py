"""``config.json``'s ``quantization_config``, read once (`read_quantization`): the keys of each
format tjx dequantizes (`QUANTIZATION_SPECS`, `Spec`s of `tjx.nn.hf.keys`) and the values tjx
computes; what it refuses is one `HFConfigError` line naming the key and the fix. The
dequantization itself is `tjx.nn.hf.quantized`'s.

``compressed-tensors`` (Kimi-K2.5's release) is read as its own ``QuantizationConfig`` and
``QuantizationArgs`` (compressed-tensors 0.20.0) read it: of its formats tjx reads
``pack-quantized`` with every ``config_groups`` entry quantizing weights only, symmetric INT4 in
groups along the input dimension (`CT_SCHEME`); anything else is refused naming what was found."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.hf.keys import (
    _JSON_NAMES,
    ABSENT,
    REQUIRED,
    UNSET,
    HFConfigError,
    Key,
    Spec,
    flag,
    int_list,
    obj,
    text,
)

#: The one compressed-tensors format and weight scheme tjx dequantizes (Kimi-K2.5's experts):
#: ``pack-quantized`` INT4, symmetric, one scale per ``group_size`` inputs, weights only.
CT_FORMAT = "pack-quantized"
CT_SCHEME = {"type": "int", "num_bits": 4, "symmetric": True, "strategy": "group"}
#: compressed-tensors' ``QuantizationArgs`` keys (its defaults). ``observer*`` say how the
#: scales were chosen, ``scale_dtype``/``zp_dtype`` what they are stored in (the files say it):
#: neither changes a dequantized number.
_CT_ARGS = Spec(
    "compressed-tensors' QuantizationArgs",
    {
        "num_bits": Key("int", 8, low=1),
        "type": text("int"),
        "symmetric": flag(True),
        "group_size": Key("int", None, None, low=1),
        "strategy": text(None, null=None),
        "block_structure": Key("list", None, None, items="int"),
        "dynamic": Key("bool", False),
        "actorder": text(None, null=None),
        "observer": text(ABSENT, null=ABSENT),
        "observer_kwargs": obj(ABSENT, null=ABSENT),
        "scale_dtype": text(ABSENT, null=ABSENT),
        "zp_dtype": text(ABSENT, null=ABSENT),
    },
    head_dim_from_hidden=False,
)
#: A ``config_groups`` entry (compressed-tensors' ``QuantizationScheme``).
_CT_GROUP = Spec(
    "compressed-tensors' QuantizationScheme",
    {
        "targets": Key("list", REQUIRED, items="str"),
        "weights": obj(None),
        "input_activations": obj(None),
        "output_activations": obj(None),
        "format": text(None, null=None),
    },
    head_dim_from_hidden=False,
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
    # compressed-tensors' QuantizationConfig as transformers' CompressedTensorsConfig passes it
    # on, with the keys a saved model adds (``version``, ``sparsity_config``,
    # ``transform_config``) and transformers' loading switches (no number changes with them).
    "compressed-tensors": Spec(
        "CompressedTensorsConfig",
        {
            "quant_method": text(REQUIRED),
            "config_groups": Key("dict", UNSET),
            "format": text("dense"),
            "quantization_status": text("initialized"),
            "kv_cache_scheme": obj(None),
            "global_compression_ratio": Key("float", ABSENT, ABSENT),
            "ignore": Key("list", ABSENT, ABSENT, items="str"),
            "sparsity_config": obj(None),
            "transform_config": obj(None),
            "moe_sparsity_config": obj(None),
            "version": text(ABSENT, null=ABSENT),
            "run_compressed": flag(ABSENT, null=ABSENT),
            "dequantize": flag(ABSENT),
            "use_optimized_inference": flag(ABSENT),
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
    "compressed-tensors": {
        "format": (CT_FORMAT,),
        # initialized/calibrated/frozen: the weights are stored unpacked beside their scales,
        # a layout compressed-tensors itself only loads back into its own fake-quant modules.
        "quantization_status": ("compressed",),
    },
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
            f"{', '.join(QUANTIZATION_SPECS)}: block-scaled FP8, gpt-oss's MXFP4 experts, "
            f"compressed-tensors' {CT_FORMAT} INT4); load "
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
    if method == "compressed-tensors":
        out["group_size"] = _ct_group_size(out, where)
    return out


def _ct_group_size(config: Mapping[str, Any], where: str) -> int:
    """The ``group_size`` every ``config_groups`` entry of a compressed-tensors config quantizes
    its weights with, once each entry is `CT_SCHEME` (weights only, no other compression).

    tjx does not match the groups' ``targets``/``ignore`` against module names: the files say
    which tensors are packed, so every group must pack them alike.
    """
    fix = "load an unquantized (bf16) conversion of the checkpoint"
    what = f"tjx reads {CT_FORMAT} INT4 weights ({_scheme_words()})"
    for name in ("kv_cache_scheme", "sparsity_config", "transform_config", "moe_sparsity_config"):
        if config.get(name):  # null or {}: none
            raise HFConfigError(
                f"{where}.{name} is set: compressed-tensors would also {_CT_EXTRAS[name]}, which "
                f"tjx does not compute ({what}); {fix}"
            )
    groups = config["config_groups"]
    if not groups:
        raise HFConfigError(f"{where}.config_groups is empty: no weight is quantized; remove "
                            "the quantization_config")  # fmt: skip
    sizes = {}
    for name, group in groups.items():
        at = f"{where}.config_groups.{name}"
        if not isinstance(group, Mapping):
            raise HFConfigError(
                f"{at} is {group!r}, a preset scheme's name with its targets: tjx reads the "
                f"scheme written out ({what}); give its weights, or {fix}"
            )
        _known_keys(group, _CT_GROUP, at, fix)
        group = _CT_GROUP.read(group, prefix=f"quantization_config.config_groups.{name}.")
        for part in ("input_activations", "output_activations"):
            if group[part]:
                raise HFConfigError(
                    f"{at}.{part} is set: the model would quantize its activations too, which "
                    f"tjx does not compute ({what}); {fix}"
                )
        if group["format"] not in (None, CT_FORMAT):
            raise HFConfigError(
                f"{at}.format is {group['format']!r}, which tjx does not read (it reads "
                f"{CT_FORMAT!r}); {fix}"
            )
        weights = group["weights"]
        if not weights:
            raise HFConfigError(f"{at}.weights is missing or null: {what}; {fix}")
        _known_keys(weights, _CT_ARGS, f"{at}.weights", fix)
        args = _CT_ARGS.read(weights, prefix=f"quantization_config.config_groups.{name}.weights.")
        found = {k: args[k] for k in CT_SCHEME}
        if found != CT_SCHEME or args["dynamic"] or args["block_structure"] is not None:
            raise HFConfigError(f"{at}.weights is {_scheme_words(args)}: {what}; {fix}")
        if args["actorder"] not in (None, "static"):  # group/weight: a g_idx permutes groups
            raise HFConfigError(
                f"{at}.weights.actorder is {args['actorder']!r}: its groups are permuted "
                f"(g_idx), which tjx does not read (it reads actorder null or 'static'); {fix}"
            )
        if args["group_size"] is None:
            raise HFConfigError(
                f"{at}.weights.group_size is missing or null: the group strategy needs it; give "
                "the checkpoint's value"
            )
        sizes[name] = args["group_size"]
    if len(set(sizes.values())) > 1:
        raise HFConfigError(
            f"{where}.config_groups quantize with group sizes {sizes}: tjx reads the packed "
            f"tensors the files hold with one group size; {fix}"
        )
    return int(next(iter(sizes.values())))


#: What each extra compressed-tensors section would do beside the weights' quantization.
_CT_EXTRAS = {
    "kv_cache_scheme": "quantize the attention's key/value cache",
    "sparsity_config": "store its weights sparse",
    "transform_config": "rotate its weights (a transform tjx does not apply)",
    "moe_sparsity_config": "prune its experts",
}


def _known_keys(given: Mapping[str, Any], spec: Spec, at: str, fix: str) -> None:
    """Refuse, in one line, keys of ``given`` (at ``at``) that ``spec``'s class does not have."""
    unknown = sorted(set(given) - set(spec.keys))
    if unknown:
        raise HFConfigError(
            f"{at} has key(s) {', '.join(unknown)} that {spec.cls} does not have (it reads "
            f"{', '.join(spec.keys)}): remove them or {fix}"
        )


def _scheme_words(args: Mapping[str, Any] = CT_SCHEME) -> str:
    """``int4 symmetric, strategy 'group'`` and the like: a weight scheme in words."""
    kind = f"{args.get('type')}{args.get('num_bits')}"
    sym = "symmetric" if args.get("symmetric") else "asymmetric"
    words = f"{kind} {sym}, strategy {args.get('strategy')!r}"
    if args.get("dynamic"):
        words += ", dynamic"
    if args.get("block_structure") is not None:
        words += f", block_structure {args['block_structure']}"
    return words
