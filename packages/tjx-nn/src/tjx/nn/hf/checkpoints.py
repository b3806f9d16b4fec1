"""``load_hf`` / ``save_hf``: Hugging Face checkpoints of GPT-2 and the LLaMA-style families in
and out.

Which family a folder holds and how its config and tensors map is `tjx.nn.hf.plan`'s. Weights
move one tensor at a time: loading fills a model built abstractly (``nnx.eval_shape``) from
safetensors' memory-mapped reads, saving writes one shard at a time, so neither holds two full
copies of the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx.nn.configs import GPT2Config, TransformerConfig
from tjx.nn.decoder import GPT2, DecoderLM
from tjx.nn.families.registry import family_of
from tjx.nn.hf.io import copy_tokenizer, read_config, resolve
from tjx.nn.hf.mapping import HFMapping, check_tensors
from tjx.nn.hf.plan import _export_plan, _kind, _plan, _read
from tjx.nn.hf.quantized import open_dequantized
from tjx.nn.hf.qwen3_5 import IMAGE_TEXT, text_name
from tjx.nn.hf.reading import LazyWeights, Tensors
from tjx.nn.hf.writing import parse_size, write_safetensors
from tjx.nn.lora import merged_readers
from tjx.nn.model_state import concrete_state
from tjx.nn.params_io import fill_params, param_readers

SAVE_DTYPES = ("float32", "bfloat16", "float16")


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
    hf = _read(folder, overrides)
    config, cls, mapping_of = _plan(hf, overrides)
    mapping = mapping_of()
    with LazyWeights(folder) as stored:
        # Quantized tensors are dequantized into the param dtype as the model asks for them.
        weights = open_dequantized(stored, hf, jnp.dtype(config.precision.param_dtype))
        names = _checked_names(weights, hf, mapping)

        def read(name: str) -> np.ndarray:
            return weights.get(names[name])

        model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
        _check_filled(model, mapping, str(hf.get("model_type")))
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
    config, _, mapping_of = _plan(hf, {})
    with LazyWeights(folder) as stored:
        weights = open_dequantized(stored, hf, jnp.dtype(config.precision.param_dtype))
        _checked_names(weights, hf, mapping_of())


def _check_filled(model: nnx.Module, mapping: HFMapping, model_type: str) -> None:
    """Refuse, before a tensor is read, a ``model`` with parameters that no tensor of the
    checkpoint maps to (``mapping.to_tjx``): loaded, each would keep its random initialisation
    (multi-token-prediction modules of a checkpoint that stores none, which the plan refuses
    first: `tjx.nn.hf.mtp_tensors.reads_no_mtp`), or a KeyError stop the load halfway.

    Raises
    ------
    ValueError
        One line naming up to five such parameters.
    """
    unread = sorted(set(param_readers(model)) - set(mapping.to_tjx))
    if unread:
        more = f" (+{len(unread) - 5} more)" if len(unread) > 5 else ""
        raise ValueError(
            f"no tensor of the {model_type!r} checkpoint maps to parameter(s) "
            f"{', '.join(unread[:5])}{more}: they would keep their random values; set the model "
            "as its config.json describes it (mtp.depths...)"
        )


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
    # DeepSeek-V3's and GLM-4.5's count of them, or Qwen3.5's (text and MoE).
    stored = hf_config.get("num_nextn_predict_layers", hf_config.get("mtp_num_hidden_layers"))
    if depths and stored != depths:
        raise ValueError(
            f"mtp.depths={depths}: model_type {hf_config['model_type']!r} stores no "
            "multi-token-prediction layers (deepseek_v3, glm4_moe and the Qwen3.5 text types "
            "do); save a model with mtp.depths=0 (its MTP modules dropped) or as one of those"
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
