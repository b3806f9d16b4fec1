"""Hugging Face checkpoints in and out: ``load_hf`` / ``save_hf`` and what they are made of.

Modules: ``checkpoints`` (``load_hf``, ``save_hf``, ``check_hf_weights``: the weights moved),
``plan`` (``read_hf_config``, ``hf_kind``: which family a folder holds and the plan to read or
write it), ``io`` (checkpoint folders), ``reading`` (safetensors headers checked, tensors read
lazily), ``writing`` (sharded writes), ``mapping`` (``HFMapping``: HF tensors and tjx
parameters), ``quantized`` and ``quantization_config`` (quantized folders dequantized as they
load), one config module per family (``gpt2``, ``config``: llama/mistral/qwen2, ``families``
with ``family_base``, ``gemma`` and ``phi3``: qwen3/olmo2/olmo3/phi3/gemma2/gemma3_text,
``moe``: mixtral/qwen2_moe/qwen3_moe, ``deepseek``: deepseek_v2/v3, ``gpt_oss``, ``glm4_moe``,
``qwen3_5``: qwen3_5_text and ``qwen3_next``: config and tensors each; the families with a
folder of their own keep theirs there, `tjx.nn.families`) and its tensor mapping (``gpt2``,
``llama``, ``family_tensors``, ``deepseek_tensors``, built on ``tables``), ``keys`` (every
``config.json`` key a family reads: its type, transformers' default or required, its range; a
damaged one is an ``HFConfigError``), and ``start`` (the settings a checkpoint fixes when a run
starts from it). The package serves the names below; any other name is its module's.
"""

from __future__ import annotations

from tjx.nn.hf.checkpoints import (
    SAVE_DTYPES,
    check_hf_weights,
    load_hf,
    load_hf_gpt2,
    save_hf,
    save_hf_gpt2,
)
from tjx.nn.hf.gpt2 import HF_GPT2_FIXED, HF_GPT2_NAMES, hf_gpt2_conflicts
from tjx.nn.hf.io import is_hub_id
from tjx.nn.hf.keys import HFConfigError
from tjx.nn.hf.plan import (
    HF_MODEL_TYPES,
    hf_export_type,
    hf_kind,
    hf_model_type,
    holds_weights,
    read_hf_config,
)
from tjx.nn.hf.start import (
    HF_LLAMA_FIXED,
    HOW_TO_TRAIN,
    TRAINING_FIELDS,
    config_clashes,
    hf_conflicts,
)

__all__ = [
    "HF_GPT2_FIXED",
    "HF_GPT2_NAMES",
    "HF_LLAMA_FIXED",
    "HF_MODEL_TYPES",
    "HOW_TO_TRAIN",
    "SAVE_DTYPES",
    "TRAINING_FIELDS",
    "HFConfigError",
    "check_hf_weights",
    "config_clashes",
    "hf_conflicts",
    "hf_gpt2_conflicts",
    "hf_export_type",
    "hf_kind",
    "hf_model_type",
    "holds_weights",
    "is_hub_id",
    "load_hf",
    "load_hf_gpt2",
    "read_hf_config",
    "save_hf",
    "save_hf_gpt2",
]
