"""Which family a Hugging Face checkpoint holds, and the plan to read or write it: its tjx config,
model class and tensor mapping (`tjx.nn.hf.mapping.HFMapping`), from ``config.json`` alone.

A folder's ``config.json`` names the architecture (``model_type`` gpt2, llama, mistral, qwen2,
qwen3, olmo2, olmo3, phi3, gemma2 or gemma3_text, the MoE types mixtral, qwen2_moe and qwen3_moe,
``moe``, deepseek_v2 and deepseek_v3, ``deepseek``, gpt_oss, ``gpt_oss``, glm4_moe,
``glm4_moe``, qwen3_5_text, ``qwen3_5``, qwen3_next, ``qwen3_next``, or one a family folder
reads: `tjx.nn.families.registry`); its config module maps the config (refusing what tjx would
ignore) and its mapping module the tensors. Moving the weights is `tjx.nn.hf.checkpoints`'.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from tjx.nn.configs import GPT2Config, LlamaConfig, TransformerConfig
from tjx.nn.decoder import GPT2, DecoderLM, Llama
from tjx.nn.families.base import MappingOf
from tjx.nn.families.registry import FAMILIES, family_of, model_types, saved_as
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
from tjx.nn.hf.io import read_config, resolve
from tjx.nn.hf.llama import llama_mapping
from tjx.nn.hf.mapping import HFMapping
from tjx.nn.hf.moe import MOE_TYPES, moe_config_from_hf, moe_config_to_hf, moe_export_type
from tjx.nn.hf.mtp_tensors import reads_no_mtp, stored_depths
from tjx.nn.hf.quantized import quantization_from_hf, without_quantization
from tjx.nn.hf.qwen3_5 import (
    IMAGE_TEXT,
    QWEN3_5,
    image_text_config,
    is_qwen3_5,
    qwen3_5_config_from_hf,
    qwen3_5_config_to_hf,
    qwen3_5_mapping,
    skip_modules,
)
from tjx.nn.hf.qwen3_next import (
    QWEN3_NEXT,
    is_qwen3_next,
    qwen3_next_config_from_hf,
    qwen3_next_config_to_hf,
    qwen3_next_mapping,
)
from tjx.nn.hf.reading import LazyWeights

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


def hf_kind(path_or_hub: str | os.PathLike[str]) -> str:
    """The tjx model kind (``"gpt2"`` or ``"llama"``) of a HF checkpoint, from its config only.

    Raises
    ------
    ValueError
        Not a checkpoint folder (no config.json or weights) or an unsupported ``model_type``.
    """
    return _kind(read_config(resolve(path_or_hub)))


def hf_model_type(path_or_hub: str | os.PathLike[str]) -> str | None:
    """The ``config.json`` ``model_type`` of local HF folder ``path_or_hub`` (what a run that
    starts from it records, for `hf_export_type`); None for a hub name or a folder without a
    readable one: nothing is fetched, and the load names what is wrong with a folder."""
    config_file = Path(path_or_hub).expanduser() / "config.json"
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return model_type if isinstance(model_type, str) else None


def hf_export_type(read_from: str | None) -> str | None:
    """The ``model_type`` to export a model read from a HF checkpoint of ``read_from`` (its
    ``config.json`` model type, `hf_model_type`) as, when none is asked: the type it was read
    as where its config's switches alone would save it as another family whose computation it
    shares (`tjx.nn.families.registry.saved_as`, a family's ``saves_as_read``), else None
    (``save_hf``'s default)."""
    return saved_as(read_from)


def read_hf_config(path_or_hub: str | os.PathLike[str], **overrides: Any) -> TransformerConfig:
    """The tjx config of a HF checkpoint (``GPT2Config`` or ``LlamaConfig``), weights unread.

    Raises
    ------
    ValueError
        As ``load_hf`` for the folder and its ``config.json``.
    """
    config, _, _ = _plan(_read(resolve(path_or_hub), overrides), overrides)
    return config  # type: ignore[no-any-return]


#: config.json's count of DeepSeek-V3's and GLM-4.5's multi-token-prediction layers.
MTP_KEYS = ("num_nextn_predict_layers", "num_mtp_layers")


def _read(folder: Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``folder``'s config.json (`read_config`), less the multi-token-prediction layers it counts
    but does not hold, said in one line: transformers' DeepSeek-V3 and GLM-4.5 keep
    ``num_nextn_predict_layers`` in the config but neither load nor save those layers, so a folder
    it saved (a fine-tune, a conversion) holds none (and so of a family folder that reads them,
    `Family.reads_mtp`, storing the text model's names); a folder holding only the first depths
    counts those (`_held_depths`), so that ``mtp.depths`` above them is refused as the config is
    read, not at the first missing tensor. Some of a depth's tensors without the rest is damage,
    which `check_tensors` names. A family folder's config as its tensor names complete
    it (`Family.layout`). ``overrides``' ``mtp.depths`` (`_module_held`): Qwen3.5's module asked
    of a folder that holds none of it is refused here, as a plan, not at the load."""
    hf = read_config(folder)
    family = family_of(hf.get("model_type"))
    _module_held(folder, hf, _asked_depths(overrides or {}))
    if family is not None and family.layout is not None:
        try:
            names = _listed_names(folder)
        except ValueError:  # an unreadable header: the load names it, a plan needs no names
            names = set()
        return family.layout(hf, names)
    specs = {**DEEPSEEK_SPECS, GLM4_MOE: GLM4_MOE_SPEC}
    model_type = str(hf.get("model_type"))
    if family is not None and family.reads_mtp and model_type not in family.stored_names:
        specs[model_type] = family.spec  # DeepSeek-V3's layers, under the text model's names
    if model_type not in specs:
        return hf
    # The counts below read as the import reads them (one line for a damaged one).
    checked = specs[hf["model_type"]].read(hf)
    key = next((k for k in MTP_KEYS if checked.get(k)), None)
    if key is None:
        return hf
    n, count = checked["num_hidden_layers"], checked[key]
    names = _listed_names(folder)
    held = _held_depths(names, n, count)
    if held == count:
        return hf
    first = f"model.layers.{n}."
    if held:  # the first depths whole (a missing tensor of theirs: `check_tensors`), not the rest
        span = first + "*" + (f" to model.layers.{n + held - 1}.*" if held > 1 else "")
        print(
            f"tjx: config.json counts {count} multi-token-prediction layer(s) ({key}) but the "
            f"checkpoint holds the first {held} ({span}; none of model.layers.{n + held}.*): "
            f"reading it as {held} (mtp.depths <= {held})",
            file=sys.stderr,
        )
    else:
        print(
            f"tjx: config.json counts {count} multi-token-prediction layer(s) ({key}) but the "
            f"checkpoint holds none of their tensors ({first}*; transformers saves none): loading "
            "the model without them (mtp.depths=0)",
            file=sys.stderr,
        )
    return {**hf, key: held}


#: config.json's count of Qwen3.5's multi-token-prediction module's layers (stored under ``mtp.``).
MODULE_KEY = "mtp_num_hidden_layers"


def _asked_depths(overrides: Mapping[str, Any]) -> int:
    """The ``mtp.depths`` a read's ``overrides`` ask for (by its dotted key or the section); 0
    for a value that is no count, which the config refuses by name as it is made."""
    asked = overrides.get("mtp.depths", getattr(overrides.get("mtp"), "depths", 0))
    return asked if isinstance(asked, int) else 0


def _module_held(folder: Path, hf: Mapping[str, Any], asked: int) -> None:
    """Refuse ``asked`` multi-token-prediction depths of a folder whose config.json (``hf``, or
    its ``text_config``) counts Qwen3.5's module (`MODULE_KEY`, read only when asked:
    `tjx.nn.hf.qwen3_5.mtp_fields`) but which holds none of its tensors (``mtp.*``): transformers
    keeps the count in a folder it saves and drops the module. A family that reads no such module
    is left to `_plan`.

    Raises
    ------
    ValueError
        ``asked`` above 0 and no ``mtp.*`` tensor listed.
    """
    family = family_of(hf.get("model_type"))
    reads = hf.get("model_type") in (QWEN3_5, IMAGE_TEXT) or (family and family.reads_mtp)
    text = hf.get("text_config")
    count = (text if isinstance(text, Mapping) else hf).get(MODULE_KEY)
    if not (asked and reads and isinstance(count, int) and count > 0):
        return
    try:
        names = _listed_names(folder)
    except ValueError:  # an unreadable header: the load names it
        return
    if not any(name.startswith("mtp.") for name in names):
        raise ValueError(
            f"mtp.depths={asked}: config.json counts {count} multi-token-prediction layer(s) "
            f"({MODULE_KEY}) but the checkpoint holds none of their tensors (mtp.*; transformers "
            "saves none); set mtp.depths=0"
        )


def _held_depths(names: set[str], num_layers: int, count: int) -> int:
    """How many of ``count`` multi-token-prediction depths stored after ``num_layers`` layers
    (DeepSeek-V3's layout) a checkpoint holding tensors ``names`` holds: those before the first
    of which it holds no tensor. The count the plan checks ``mtp.depths`` against
    (`stored_depths`), so that a depth the checkpoint lacks is refused as the config is read."""
    layers = {name.split(".")[2] for name in names if name.startswith("model.layers.")}
    return next((j for j in range(count) if str(num_layers + j) not in layers), count)


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


#: The model types whose reader maps multi-token-prediction layers and checks ``mtp.depths``
#: against what a checkpoint stores (the family folders': `Family.reads_mtp`).
_READS_MTP = frozenset({*DEEPSEEK_TYPES, GLM4_MOE, QWEN3_5, IMAGE_TEXT, QWEN3_NEXT})


def _plan(hf: dict[str, Any], overrides: dict[str, Any]) -> tuple[Any, type[DecoderLM], MappingOf]:
    """The config, model class and tensor mapping (built when called: a plan needs the config
    alone, and a large release's mapping takes seconds) of a checkpoint's ``config.json``.

    Any ``mtp.depths`` is refused for a family whose multi-token-prediction layers tjx does not
    read (`reads_no_mtp`: a family's own modules, which tjx does not map, or none), as a plan:
    its mapping has no tensor to fill them with, and a load never leaves them at their random
    values.
    """
    config, cls, mapping = _family_plan(hf, overrides)
    model_type = str(hf.get("model_type"))
    family = family_of(model_type)
    if model_type not in _READS_MTP and not (family is not None and family.reads_mtp):
        reads_no_mtp(config, hf, model_type)
    return config, cls, mapping


def _family_plan(
    hf: dict[str, Any], overrides: dict[str, Any]
) -> tuple[Any, type[DecoderLM], MappingOf]:
    """`_plan` as the checkpoint's family reads it.

    A component section's setting (``delta.impl``, ``mtp.depths``) reaches the readers by its
    dotted key, laid over the section the checkpoint describes (`make_config`), so the tensor
    mapping follows it. A quantized folder is the unquantized model's: its weights are
    dequantized as they load (`tjx.nn.hf.quantized`). Its quantization_config is checked here,
    so a plan refuses what a load would; for the same reason the multi-token-prediction layers a
    checkpoint stores are read and checked against the config here (`stored_depths`), not in the
    mapping.
    """
    _kind(hf)
    quantization_from_hf(hf)
    hf = without_quantization(hf)
    if _kind(hf) == "gpt2":
        gpt2 = config_from_hf(hf, **overrides)
        return gpt2, GPT2, lambda: gpt2_mapping(gpt2)
    model_type = str(hf.get("model_type"))
    if model_type in FAMILY_TYPES:
        family = family_config_from_hf(hf, **overrides)
        return family, Llama, lambda: family_mapping(family, model_type)
    folder_family = family_of(model_type)
    if folder_family is not None:
        config, mapping = folder_family.read(hf, model_type, overrides)
        return config, Llama, mapping
    if model_type == GPT_OSS:
        oss = gpt_oss_config_from_hf(hf, **overrides)
        return oss, Llama, lambda: gpt_oss_mapping(oss)
    if model_type in (QWEN3_5, IMAGE_TEXT, QWEN3_NEXT):
        image_text = model_type == IMAGE_TEXT
        text = image_text_config(hf) if image_text else hf
        if model_type == QWEN3_NEXT:
            qwen = qwen3_next_config_from_hf(text, **overrides)
            qwen_mapping = qwen3_next_mapping
        else:
            qwen = qwen3_5_config_from_hf(text, **overrides)
            qwen_mapping = qwen3_5_mapping

        def skipped() -> HFMapping:
            mapping = qwen_mapping(qwen)
            return replace(mapping, ignored=skip_modules(mapping.ignored, image_text))

        return qwen, Llama, skipped
    if model_type == GLM4_MOE:
        glm = glm4_moe_config_from_hf(hf, **overrides)
        glm_mtp = stored_depths(glm, glm4_mtp_layers(hf))
        return glm, Llama, lambda: glm4_moe_mapping(glm, mtp=glm_mtp)
    if model_type in DEEPSEEK_TYPES:
        deepseek = deepseek_config_from_hf(hf, **overrides)
        interleaved = model_type == "deepseek_v2" or bool(hf.get("rope_interleave", True))
        mtp = stored_depths(deepseek, mtp_layers(hf))
        return (
            deepseek,
            Llama,
            lambda: deepseek_mapping(deepseek, model_type, interleaved=interleaved, mtp=mtp),
        )
    if hf.get("model_type") in MOE_TYPES:
        moe = moe_config_from_hf(hf, **overrides)
        return moe, Llama, lambda: llama_mapping(moe, hf["model_type"])
    llama = llama_config_from_hf(hf, **overrides)
    return llama, Llama, lambda: llama_mapping(llama)


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
