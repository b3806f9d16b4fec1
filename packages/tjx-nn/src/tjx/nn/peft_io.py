"""LoRA adapters as a PEFT adapter folder: ``adapter_config.json`` + ``adapter_model.safetensors``.

``peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), FOLDER)`` loads what
`save_peft` writes onto the transformers model of the same base checkpoint. PEFT's ``nn.Linear``
adapters hold ``lora_A.weight`` ``[r, in]`` and ``lora_B.weight`` ``[out, r]`` under
``base_model.model.<module>``; tjx's ``A`` ``[*in, r]`` and ``B`` ``[r, *out]`` flatten and
transpose into them, the heads axes flattened as the kernels' are (``hf.llama``).

The LLaMA family (llama, mistral, qwen2) only: HF's GPT-2 fuses q, k and v into one ``c_attn``
``Conv1D``, which a PEFT adapter of the same rank cannot express; export a GPT-2 merged
(``save_hf``) instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tjx.nn.configs import LlamaConfig
from tjx.nn.lora import LoraConfig, lora_modules
from tjx.nn.split_rules import model_kind

__all__ = ["PEFT_MODULES", "check_peft_export", "save_peft"]

#: tjx role → the HF LLaMA module PEFT names in ``target_modules``.
PEFT_MODULES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _layers(value: np.ndarray, stacked: bool) -> list[np.ndarray]:
    return list(value) if stacked else [value]


def check_peft_export(config: Any, folder: str | os.PathLike[str], merged: str = "save_hf") -> Path:
    """The folder (``~`` expanded) `save_peft` can write the adapters of a model of ``config``
    into, checked before training: what `save_peft` would refuse only at the end.

    Parameters
    ----------
    config : TransformerConfig
        The trained model's config: a LLaMA-family one without MLA attention.
    folder : str or PathLike
        A new or empty folder.
    merged : str
        What exports the merged model instead, for the messages.

    Raises
    ------
    ValueError
        Another family (HF's GPT-2 fuses q/k/v), MLA (DeepSeek's projections are not HF's
        q/k/v_proj), or a folder that exists and is not empty.
    """
    if not isinstance(config, LlamaConfig):
        raise ValueError(
            "PEFT adapters are written for Llama-family models, not model.kind="
            f"{model_kind(config)} (HF's GPT-2 fuses q/k/v); export the merged model with {merged}"
        )
    if config.attention.type == "mla":
        raise ValueError(
            "PEFT adapters do not cover MLA attention (DeepSeek: its projections are not HF's "
            f"q/k/v_proj); export the merged model with {merged}"
        )
    path = Path(folder).expanduser()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path} exists and is not an empty folder; name a new one")
    return path


def save_peft(
    model: Any,
    path: str | os.PathLike[str],
    config: LoraConfig,
    *,
    base_model: str | None = None,
    dtype: str = "float32",
) -> list[str]:
    """Write ``model``'s adapters as a PEFT LoRA adapter folder.

    Parameters
    ----------
    model : Llama
        A LLaMA-family model with adapters from ``add_lora(model, config, ...)``.
    path : str or PathLike
        A new or empty folder (created).
    config : LoraConfig
        The adapters' config (rank, alpha, dropout, rslora; checked against the adapters).
    base_model : str, optional
        ``base_model_name_or_path`` in the config: the HF checkpoint the adapter goes onto.
    dtype : {"float32", "bfloat16", "float16"}
        The tensors' dtype on disk.

    Returns
    -------
    list of str
        The files written.

    Raises
    ------
    ValueError
        Not a LLaMA-family model, no adapters, adapters that disagree with ``config``, a
        non-empty folder; nothing is written then.
    """
    from safetensors.numpy import save_file

    if not isinstance(getattr(model, "config", None), LlamaConfig):
        raise ValueError(
            f"PEFT export supports the LLaMA family (llama, mistral, qwen2); got a "
            f"{type(model).__name__}: export it merged with save_hf instead"
        )
    if (
        model.config.attention.type == "mla"
    ):  # DeepSeek's q rows are permuted, k/v are one kv_b_proj
        raise ValueError(
            "PEFT export does not cover MLA attention (attention_type 'mla', DeepSeek): its "
            "projections are not HF's q/k/v_proj; export it merged with save_hf instead"
        )
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16; got {dtype!r}")
    adapted = list(lora_modules(model))
    if not adapted:
        raise ValueError("the model has no LoRA adapters to export (add_lora first)")
    folder = Path(path).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{folder} exists and is not an empty folder; choose a new folder")
    import ml_dtypes  # jax's dependency: numpy bfloat16

    out_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    tensors: dict[str, np.ndarray] = {}
    roles = set()
    for module_path, role, dense in adapted:
        adapter = dense.lora
        assert adapter is not None
        a = np.asarray(adapter.lora_a[...], np.float32)
        b = np.asarray(adapter.lora_b[...], np.float32)
        rank = a.shape[-1]
        if rank != config.rank or not np.isclose(adapter.scale, config.scale):
            raise ValueError(
                f"adapter {'/'.join(map(str, module_path))} has rank {rank} and scale "
                f"{adapter.scale}, not the config's {config.rank} and {config.scale}"
            )
        stacked = a.ndim > dense.n_in + 1
        parts = [str(p) for p in module_path]
        first = int(parts[parts.index("layers") + 1]) if not stacked else 0
        for offset, (a_i, b_i) in enumerate(
            zip(_layers(a, stacked), _layers(b, stacked), strict=True)
        ):
            name = f"base_model.model.model.layers.{first + offset}.{PEFT_MODULES[role]}"
            tensors[f"{name}.lora_A.weight"] = a_i.reshape(-1, rank).T.astype(out_dtype)
            tensors[f"{name}.lora_B.weight"] = b_i.reshape(rank, -1).T.astype(out_dtype)
        roles.add(role)
    adapter_config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "use_rslora": config.rslora,
        "target_modules": sorted(PEFT_MODULES[r].split(".")[-1] for r in roles),
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    folder.mkdir(parents=True, exist_ok=True)
    contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(contiguous, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n")
    return [ADAPTER_WEIGHTS, ADAPTER_CONFIG]
