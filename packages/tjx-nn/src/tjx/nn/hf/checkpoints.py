"""``load_hf`` / ``save_hf``: Hugging Face checkpoints of GPT-2 and the LLaMA-style families in
and out.

A folder's ``config.json`` names the architecture (``model_type`` gpt2, llama, mistral, qwen2,
qwen3, olmo2, olmo3, phi3, gemma2 or gemma3_text, the MoE types mixtral, qwen2_moe and qwen3_moe,
``moe``, deepseek_v2 and deepseek_v3, ``deepseek``, gpt_oss, ``gpt_oss``, glm4_moe,
``glm4_moe``, qwen3_5_text, ``qwen3_5``, qwen3_next, ``qwen3_next``, or one a family folder
reads: `tjx.nn.families.registry`); its config module maps the config (refusing what tjx would
ignore) and its mapping module the tensors. Weights move one tensor at a time: loading fills a
model built abstractly (``nnx.eval_shape``) from safetensors' memory-mapped reads, saving writes
one shard at a time, so neither holds two full copies of the weights.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx.nn.configs import GPT2Config, LlamaConfig, TransformerConfig
from tjx.nn.decoder import GPT2, DecoderLM, Llama
from tjx.nn.families.registry import FAMILIES, family_of, model_types
from tjx.nn.hf.config import LLAMA_TYPES, llama_config_from_hf, llama_config_to_hf
from tjx.nn.hf.deepseek import (
    DEEPSEEK_TYPES,
    deepseek_config_from_hf,
    deepseek_config_to_hf,
    deepseek_export_type,
    mtp_layers,
)
from tjx.nn.hf.deepseek import (
    SPECS as DEEPSEEK_SPECS,
)
from tjx.nn.hf.deepseek_tensors import deepseek_mapping
from tjx.nn.hf.families import (
    FAMILY_TYPES,
    export_family,
    family_config_from_hf,
    family_config_to_hf,
)
from tjx.nn.hf.family_tensors import family_mapping
from tjx.nn.hf.glm4_moe import (
    GLM4_MOE,
    glm4_moe_config_from_hf,
    glm4_moe_config_to_hf,
    glm4_moe_mapping,
    is_glm4_moe,
)
from tjx.nn.hf.glm4_moe import (
    SPEC as GLM4_MOE_SPEC,
)
from tjx.nn.hf.glm4_moe import mtp_layers as glm4_mtp_layers
from tjx.nn.hf.gpt2 import config_from_hf, config_to_hf, gpt2_mapping
from tjx.nn.hf.gpt_oss import (
    GPT_OSS,
    gpt_oss_config_from_hf,
    gpt_oss_config_to_hf,
    gpt_oss_mapping,
    is_gpt_oss,
)
from tjx.nn.hf.io import (
    HFMapping,
    LazyWeights,
    Tensors,
    check_tensors,
    copy_tokenizer,
    parse_size,
    read_config,
    resolve,
    write_safetensors,
)
from tjx.nn.hf.llama import llama_mapping
from tjx.nn.hf.moe import MOE_TYPES, moe_config_from_hf, moe_config_to_hf, moe_export_type
from tjx.nn.hf.quantized import open_dequantized, quantization_from_hf, without_quantization
from tjx.nn.hf.qwen3_5 import (
    IMAGE_TEXT,
    QWEN3_5,
    image_text_config,
    is_qwen3_5,
    qwen3_5_config_from_hf,
    qwen3_5_config_to_hf,
    qwen3_5_mapping,
    skip_modules,
    text_name,
)
from tjx.nn.hf.qwen3_next import (
    QWEN3_NEXT,
    is_qwen3_next,
    qwen3_next_config_from_hf,
    qwen3_next_config_to_hf,
    qwen3_next_mapping,
)
from tjx.nn.lora import merged_readers
from tjx.nn.model_state import concrete_state
from tjx.nn.params_io import fill_params, param_readers

#: ``config.json`` model types ``load_hf`` reads, and the tjx model kind each becomes.
HF_MODEL_TYPES: dict[str, str] = {
    "gpt2": "gpt2",
    **{t: "llama" for t in (*LLAMA_TYPES, *FAMILY_TYPES)},
    **{t: "llama" for t in (*MOE_TYPES, *DEEPSEEK_TYPES, GPT_OSS, GLM4_MOE, QWEN3_5, QWEN3_NEXT)},
    IMAGE_TEXT: "llama",  # Qwen3.5's image-text folders: the text model
    **{t: "llama" for t in model_types()},  # the family folders' (image-text: the text model)
}
#: model types refused with a line of their own (what to load instead).
_REFUSED = {
    "gemma3": "is Gemma 3's image-text model; tjx loads the text model (model_type "
    "'gemma3_text', Gemma3ForCausalLM checkpoints such as gemma-3-1b)",
}
SAVE_DTYPES = ("float32", "bfloat16", "float16")


def hf_kind(path_or_hub: str | os.PathLike[str]) -> str:
    """The tjx model kind (``"gpt2"`` or ``"llama"``) of a HF checkpoint, from its config only.

    Raises
    ------
    ValueError
        Not a checkpoint folder (no config.json or weights) or an unsupported ``model_type``.
    """
    return _kind(read_config(resolve(path_or_hub)))


def read_hf_config(path_or_hub: str | os.PathLike[str], **overrides: Any) -> TransformerConfig:
    """The tjx config of a HF checkpoint (``GPT2Config`` or ``LlamaConfig``), weights unread.

    Raises
    ------
    ValueError
        As ``load_hf`` for the folder and its ``config.json``.
    """
    config, _, _ = _plan(_read(resolve(path_or_hub)), overrides)
    return config  # type: ignore[no-any-return]


#: config.json's count of DeepSeek-V3's and GLM-4.5's multi-token-prediction layers.
MTP_KEYS = ("num_nextn_predict_layers", "num_mtp_layers")


def _read(folder: Path) -> dict[str, Any]:
    """``folder``'s config.json (`read_config`), less the multi-token-prediction layers it counts
    but does not hold, said in one line: transformers' DeepSeek-V3 and GLM-4.5 keep
    ``num_nextn_predict_layers`` in the config but neither load nor save those layers, so a folder
    it saved (a fine-tune, a conversion) holds none. Some of their tensors without the rest is
    damage, which `check_tensors` names."""
    hf = read_config(folder)
    specs = {**DEEPSEEK_SPECS, GLM4_MOE: GLM4_MOE_SPEC}
    if hf.get("model_type") not in specs:
        return hf
    # The counts below read as the import reads them (one line for a damaged one).
    checked = specs[hf["model_type"]].read(hf)
    key = next((k for k in MTP_KEYS if checked.get(k)), None)
    if key is None:
        return hf
    first = f"model.layers.{checked['num_hidden_layers']}."
    if any(name.startswith(first) for name in _listed_names(folder)):
        return hf
    print(
        f"tjx: config.json counts {hf[key]} multi-token-prediction layer(s) ({key}) but the "
        f"checkpoint holds none of their tensors ({first}*; transformers saves none): loading "
        "the model without them (mtp.depths=0)",
        file=sys.stderr,
    )
    return {**hf, key: 0}


def _listed_names(folder: Path) -> set[str]:
    """The tensor names ``folder`` holds: its index's, no shard opened (so a folder of
    ``config.json`` and the index alone reads, as a plan of the published sizes needs), else its
    one file's header. That the shards hold what the index names, `LazyWeights` checks on load."""
    weights = LazyWeights(folder)
    if weights.files:
        return set(weights.files)
    with weights:
        return weights.names()


def holds_weights(path_or_hub: str | os.PathLike[str]) -> bool:
    """Whether a local checkpoint folder holds any of its weight files: False for a folder of
    ``config.json`` and ``model.safetensors.index.json`` alone (a plan reads the config only;
    loading it refuses the missing shards). A hub name is False (its weights come at load).

    Raises
    ------
    ValueError
        As `read_config` (no config.json, no weights named) and an unreadable index.
    """
    folder = Path(path_or_hub).expanduser()
    if not folder.is_dir():
        return False
    read_config(folder)
    files = set(LazyWeights(folder).files.values()) or {"model.safetensors"}
    return any((folder / name).is_file() for name in files)


def _kind(hf: dict[str, Any]) -> str:
    model_type = hf.get("model_type")
    if model_type in _REFUSED:
        raise ValueError(f"config.json model_type {model_type!r} {_REFUSED[model_type]}")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(
            f"config.json model_type {model_type!r} is not supported; tjx loads "
            f"{', '.join(HF_MODEL_TYPES)}"
        )
    return HF_MODEL_TYPES[model_type]


def _plan(hf: dict[str, Any], overrides: dict[str, Any]) -> tuple[Any, type[DecoderLM], HFMapping]:
    # A component section's setting (``delta.impl``, ``mtp.depths``) reaches the readers by its
    # dotted key, laid over the section the checkpoint describes (`make_config`), so the tensor
    # mapping follows it.
    return _plan_fields(hf, overrides)


def _plan_fields(
    hf: dict[str, Any], overrides: dict[str, Any]
) -> tuple[Any, type[DecoderLM], HFMapping]:
    # A quantized folder is the unquantized model's: its weights are dequantized as they load
    # (`tjx.nn.hf.quantized`). Its quantization_config is checked here, so a plan refuses what a
    # load would.
    _kind(hf)
    quantization_from_hf(hf)
    hf = without_quantization(hf)
    if _kind(hf) == "gpt2":
        gpt2 = config_from_hf(hf, **overrides)
        return gpt2, GPT2, gpt2_mapping(gpt2)
    model_type = str(hf.get("model_type"))
    if model_type in FAMILY_TYPES:
        family = family_config_from_hf(hf, **overrides)
        return family, Llama, family_mapping(family, model_type)
    folder_family = family_of(model_type)
    if folder_family is not None:
        config, mapping = folder_family.read(hf, model_type, overrides)
        return config, Llama, mapping
    if model_type == GPT_OSS:
        oss = gpt_oss_config_from_hf(hf, **overrides)
        return oss, Llama, gpt_oss_mapping(oss)
    if model_type in (QWEN3_5, IMAGE_TEXT, QWEN3_NEXT):
        image_text = model_type == IMAGE_TEXT
        text = image_text_config(hf) if image_text else hf
        if model_type == QWEN3_NEXT:
            qwen = qwen3_next_config_from_hf(text, **overrides)
            mapping = qwen3_next_mapping(qwen)
        else:
            qwen = qwen3_5_config_from_hf(text, **overrides)
            mapping = qwen3_5_mapping(qwen)
        return qwen, Llama, replace(mapping, ignored=skip_modules(mapping.ignored, image_text))
    if model_type == GLM4_MOE:
        glm = glm4_moe_config_from_hf(hf, **overrides)
        return glm, Llama, glm4_moe_mapping(glm, mtp=glm4_mtp_layers(hf))
    if model_type in DEEPSEEK_TYPES:
        deepseek = deepseek_config_from_hf(hf, **overrides)
        interleaved = model_type == "deepseek_v2" or bool(hf.get("rope_interleave", True))
        mapping = deepseek_mapping(
            deepseek, model_type, interleaved=interleaved, mtp=mtp_layers(hf)
        )
        return deepseek, Llama, mapping
    if hf.get("model_type") in MOE_TYPES:
        moe = moe_config_from_hf(hf, **overrides)
        return moe, Llama, llama_mapping(moe, hf["model_type"])
    llama = llama_config_from_hf(hf, **overrides)
    return llama, Llama, llama_mapping(llama)


def load_hf(
    path_or_hub: str | os.PathLike[str], **overrides: Any
) -> tuple[DecoderLM, TransformerConfig]:
    """A HF checkpoint (local folder, or a hub repo id when online) as a tjx model.

    Parameters
    ----------
    path_or_hub : str or PathLike
        Folder with ``config.json`` and ``model.safetensors`` (or an index and its shards).
    **overrides
        Config fields for how to run it, not what it is: ``scan_layers``, ``remat``,
        ``attention_impl``, ``precision`` (the param dtype the weights are cast to), ``dropout``.

    Returns
    -------
    (model, config)
        ``GPT2`` or ``Llama`` and its config (the families' switches set, see
        ``family_config``).

    Raises
    ------
    ValueError
        Missing config or weights, PyTorch pickles only, an unsupported ``model_type`` or config
        key, a damaged safetensors file or missing shard, missing/extra/mis-shaped or
        non-float tensors (each named, with its file).
    """
    folder = resolve(path_or_hub)
    hf = _read(folder)
    config, cls, mapping = _plan(hf, overrides)
    with LazyWeights(folder) as stored:
        # Quantized tensors are dequantized into the param dtype as the model asks for them.
        weights = open_dequantized(stored, hf, jnp.dtype(config.precision.param_dtype))
        names = _checked_names(weights, hf, mapping)

        def read(name: str) -> np.ndarray:
            return weights.get(names[name])

        model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
        fill_params(model, lambda name: mapping.to_tjx[name](read))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    return nnx.merge(graphdef, params, concrete_state(rest)), config


def check_hf_weights(path_or_hub: str | os.PathLike[str]) -> None:
    """Check a HF checkpoint's weights against its ``config.json`` from the files' headers alone.

    What `load_hf` checks before it reads a tensor, for an app to refuse a damaged checkpoint
    before it writes anything: every safetensors file whole (`read_header`), every shard the
    index names there, each tensor the config implies present with its shape and a
    floating-point dtype. No tensor data is read and no model built.

    Parameters
    ----------
    path_or_hub : str or PathLike
        As `load_hf`'s (an app passes a local folder: a hub name is downloaded first).

    Raises
    ------
    ValueError
        As `load_hf`: one line naming the file and what is wrong with it.
    """
    folder = resolve(path_or_hub)
    hf = _read(folder)
    config, _, mapping = _plan(hf, {})
    with LazyWeights(folder) as stored:
        weights = open_dequantized(stored, hf, jnp.dtype(config.precision.param_dtype))
        _checked_names(weights, hf, mapping)


def _checked_names(weights: Tensors, hf: dict[str, Any], mapping: HFMapping) -> dict[str, str]:
    """The mapping's tensor name → the stored one, after `check_tensors` on the headers."""
    if hf.get("model_type") == "gpt2":  # save_pretrained's ``transformer.`` prefix
        names = {n.removeprefix("transformer."): n for n in weights.names()}
    elif hf.get("model_type") == IMAGE_TEXT:  # ``model.language_model.*``
        names = {text_name(n): n for n in weights.names()}
    elif (family := family_of(hf.get("model_type"))) is not None:
        rename = family.text_name(str(hf["model_type"]))
        names = {rename(n): n for n in weights.names()}
    else:
        names = {n: n for n in weights.names()}
    check_tensors(
        {k: weights.shape(n) for k, n in names.items()},
        mapping.shapes,
        mapping.ignored,
        dtypes={k: weights.dtype(n) for k, n in names.items()},
        files={k: weights.path(n) for k, n in names.items()},
    )
    return names


def _export_plan(config: Any, model_type: str | None) -> tuple[dict[str, Any], HFMapping]:
    if isinstance(config, GPT2Config):
        if model_type not in (None, "gpt2"):
            raise ValueError(f"a GPT2 model saves as model_type 'gpt2'; got {model_type!r}")
        return config_to_hf(config), gpt2_mapping(config)
    if isinstance(config, LlamaConfig) and (model_type == GPT_OSS or is_gpt_oss(config)):
        if model_type not in (None, GPT_OSS):
            raise ValueError(
                f"a model with attention sinks saves as model_type 'gpt_oss'; got {model_type!r}"
            )
        return gpt_oss_config_to_hf(config), gpt_oss_mapping(config)
    if isinstance(config, LlamaConfig):
        for family in FAMILIES:
            if family.claims(config, model_type):
                return family.write(config)
    if isinstance(config, LlamaConfig) and is_qwen3_next(config, model_type):
        return qwen3_next_config_to_hf(config), qwen3_next_mapping(config)
    if isinstance(config, LlamaConfig) and (model_type == QWEN3_5 or is_qwen3_5(config)):
        if model_type not in (None, QWEN3_5):
            raise ValueError(
                "a model with delta layers or a gated attention output saves as model_type "
                f"{QWEN3_5!r} (or {QWEN3_NEXT!r}); got {model_type!r}"
            )
        return qwen3_5_config_to_hf(config), qwen3_5_mapping(config)
    if isinstance(config, LlamaConfig) and config.mla.qk_rope_head_dim is not None:
        ds_type = deepseek_export_type(config, model_type)
        return deepseek_config_to_hf(config, ds_type), deepseek_mapping(config, ds_type)
    if isinstance(config, LlamaConfig) and is_glm4_moe(config, model_type):
        return glm4_moe_config_to_hf(config), glm4_moe_mapping(config)
    if isinstance(config, LlamaConfig) and config.moe.num_experts:
        moe_type = moe_export_type(config, model_type)
        return moe_config_to_hf(config, moe_type), llama_mapping(config, moe_type)
    if isinstance(config, LlamaConfig):
        chosen = export_family(config, model_type)
        if chosen in FAMILY_TYPES:
            return family_config_to_hf(config, chosen), family_mapping(config, chosen)
        return llama_config_to_hf(config, chosen), llama_mapping(config)
    raise ValueError(
        f"save_hf saves GPT2 and Llama models; got a model with {type(config).__name__}"
    )


def save_hf(
    model: nnx.Module,
    path: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    max_shard_size: int | str = "5GB",
    model_type: str | None = None,
    tokenizer_from: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Write ``model`` as a HF checkpoint folder that ``AutoModelForCausalLM`` loads.

    Parameters
    ----------
    model : GPT2 or Llama
        Scanned or not; LoRA adapters (``add_lora``) are merged into the weights written.
    path : str or PathLike
        A new or empty folder (created).
    dtype : {"float32", "bfloat16", "float16"}, optional
        The tensors' dtype on disk; default the model's param dtype.
    max_shard_size : int or str
        Above this many bytes (``"5GB"``, ``"200MB"``, an int) the weights are split into
        shards with ``model.safetensors.index.json``.
    model_type : str, optional
        For a Llama: ``llama``, ``mistral``, ``qwen2``, ``qwen3``, ``olmo2``, ``olmo3``,
        ``phi3``, ``gemma2`` or ``gemma3_text``. Default: the family of the config's switches
        (sandwich norms: gemma2, or gemma3_text with q/k norms; output norms: olmo2, or olmo3
        with a sliding window; q/k norms: qwen3),
        else qwen2 when only q/k/v have biases, else llama. Phi-3 (the same computation as
        Llama, its tensors fused) only when asked.
        For one with MoE layers ``mixtral``, ``qwen2_moe`` or ``qwen3_moe`` (default
        qwen2_moe with shared experts, qwen3_moe with q/k norms, else mixtral; see
        ``moe.moe_export_type``). DeepSeek's MLA: ``deepseek_v3`` with the sigmoid router,
        else ``deepseek_v2`` (``deepseek``). Attention sinks: ``gpt_oss`` (``gpt_oss``); MoE
        on multi-head attention with the sigmoid router or a partial RoPE: ``glm4_moe``
        (``glm4_moe``). Delta layers or a gated attention output: ``qwen3_5_text``
        (``qwen3_5``), or ``qwen3_next`` (``qwen3_next``), the default with MoE layers.
        A family folder's switches: its text model type (`tjx.nn.families.registry`).
    tokenizer_from : str or PathLike, optional
        A folder whose tokenizer files (``tokenizer.json`` ...) are copied next to the weights.

    Returns
    -------
    list of str
        The files written.

    Raises
    ------
    ValueError
        A config HF cannot express, an unknown dtype, a bad size or a non-empty folder; nothing
        is written then.
    """
    config = getattr(model, "config", None)
    hf_config, mapping = _export_plan(config, model_type)
    mtp = getattr(config, "mtp", None)
    depths = mtp.depths if mtp is not None else 0
    if depths and hf_config.get("num_nextn_predict_layers") != depths:
        raise ValueError(
            f"mtp.depths={depths}: model_type {hf_config['model_type']!r} stores no "
            "multi-token-prediction layers (deepseek_v3 and glm4_moe do); save a model with "
            "mtp.depths=0 (its MTP modules dropped) or as one of those"
        )
    assert config is not None
    # LoRA adapters, if any, are merged into their kernels as each tensor is read.
    readers = merged_readers(model, param_readers(model))
    name = str(dtype or jnp.dtype(config.precision.param_dtype).name)
    if name not in SAVE_DTYPES:
        raise ValueError(f"dtype must be one of {SAVE_DTYPES}; got {dtype!r}")
    out_dtype = jnp.dtype(name)
    limit = parse_size(max_shard_size)
    folder = Path(path).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{folder} exists and is not an empty folder; choose a new folder")
    source = Path(tokenizer_from).expanduser() if tokenizer_from is not None else None
    if source is not None and not source.is_dir():
        raise ValueError(f"tokenizer_from {str(source)!r} is not a folder")

    def read(tjx_name: str) -> np.ndarray:
        return readers[tjx_name]()

    tensors = [
        (hf_name, shape, lambda n=hf_name: mapping.to_hf[n](read).astype(out_dtype))
        for hf_name, shape in mapping.shapes.items()
    ]
    folder.mkdir(parents=True, exist_ok=True)
    files = write_safetensors(folder, tensors, itemsize=out_dtype.itemsize, max_shard_size=limit)
    hf_config["torch_dtype"] = name
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    files.append("config.json")
    if source is not None:
        files += copy_tokenizer(source, folder)
    return files


def load_hf_gpt2(path_or_name: str | os.PathLike[str], **overrides: Any) -> GPT2:
    """``load_hf`` for a GPT-2 checkpoint, returning only the model (the older name).

    Raises
    ------
    ValueError
        The checkpoint is not GPT-2 (or any ``load_hf`` error).
    """
    folder = resolve(path_or_name)
    if _kind(read_config(folder)) != "gpt2":
        raise ValueError(f"{folder} is not a GPT-2 checkpoint; use tjx.nn.load_hf")
    model, _ = load_hf(folder, **overrides)
    assert isinstance(model, GPT2)
    return model


def save_hf_gpt2(model: GPT2, path: str | os.PathLike[str]) -> None:
    """``save_hf`` for a GPT-2 model (the older name)."""
    if not isinstance(getattr(model, "config", None), GPT2Config):
        raise ValueError(
            f"save_hf_gpt2 needs a GPT2 model; got config {type(model.config).__name__}"
        )
    save_hf(model, path)
