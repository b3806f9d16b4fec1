"""Hugging Face GPT-2 interop: read and write ``config.json`` + ``model.safetensors``.

HF GPT-2 uses ``Conv1D`` layers whose weights are stored ``[in, out]`` (the transpose of
``nn.Linear``), and fuses q/k/v into ``attn.c_attn`` (``[d, 3d]``, columns q | k | v). tjx keeps
q/k/v separate as ``[embed, heads, head_dim]`` kernels, so the conversion splits/concatenates and
reshapes, never transposes. Written files use the hub's ``gpt2`` naming (``wte.weight``,
``h.0.attn.c_attn.weight`` …, no ``transformer.`` prefix; tied head omitted), which
``transformers.GPT2LMHeadModel.from_pretrained`` loads. Reading also accepts the
``transformer.``-prefixed names that ``save_pretrained`` writes and ignores the causal-mask
buffers (``attn.bias``, ``attn.masked_bias``).

``safetensors`` (and ``huggingface_hub`` for hub names) are imported lazily.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from tjx.nn.configs import GPT2Config
from tjx.nn.decoder import GPT2
from tjx.nn.params_io import get_flat_params, set_flat_params

_PER_LAYER = {
    "ln_1.weight": "attn_norm.scale",
    "ln_1.bias": "attn_norm.bias",
    "ln_2.weight": "mlp_norm.scale",
    "ln_2.bias": "mlp_norm.bias",
    "mlp.c_fc.weight": "mlp.fc_in.kernel",
    "mlp.c_fc.bias": "mlp.fc_in.bias",
    "mlp.c_proj.weight": "mlp.fc_out.kernel",
    "mlp.c_proj.bias": "mlp.fc_out.bias",
}
#: The hub names of the published GPT-2 checkpoints (``load_hf_gpt2`` also reads a local folder).
HF_GPT2_NAMES: tuple[str, ...] = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
#: What every HF GPT-2 checkpoint fixes besides the sizes in its ``config.json``: a ``GPT2Config``
#: field → GPT-2's value (``None``: the checkpoint's own, e.g. ``num_kv_heads`` = its head count).
HF_GPT2_FIXED: Mapping[str, Any] = {
    "position": "learned",
    "attention_type": "mha",
    "use_bias": True,
    "norm": "layernorm",
    "norm_position": "pre",
    "num_kv_heads": None,
    "tie_embeddings": True,
}

_TOP = {
    "wte.weight": "embed.embedding",
    "wpe.weight": "pos_embed.embedding",
    "ln_f.weight": "final_norm.scale",
    "ln_f.bias": "final_norm.bias",
}


def _resolve(path_or_name: str | os.PathLike[str]) -> Path:
    path = Path(path_or_name)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError(
            f"{str(path_or_name)!r} is not a local folder and huggingface_hub is not installed"
        ) from e
    try:
        local = snapshot_download(
            str(path_or_name), allow_patterns=["config.json", "model.safetensors"]
        )
    except Exception as e:
        raise ValueError(
            f"could not find {str(path_or_name)!r} locally or download it from the hub: {e}"
        ) from e
    return Path(local)


def hf_gpt2_conflicts(options: Mapping[str, Any]) -> dict[str, Any]:
    """The requested architecture settings that HF GPT-2 weights cannot have.

    A checkpoint fixes its architecture (``HF_GPT2_FIXED``); a setting that would change it (MLA,
    another position scheme, no biases, grouped key/value heads, ...) cannot apply to the loaded
    weights, and dropping it silently would train something else than asked.

    Parameters
    ----------
    options : Mapping[str, Any]
        ``GPT2Config`` field → requested value; ``None`` means unset. Keys outside
        ``HF_GPT2_FIXED`` are not architecture GPT-2 fixes and are ignored (sizes come from the
        checkpoint; training settings such as ``remat`` or ``dropout`` apply as given).

    Returns
    -------
    dict[str, Any]
        Each conflicting field (in ``HF_GPT2_FIXED``'s order) → the value requested; empty when
        the settings fit.
    """
    return {
        name: options[name]
        for name, own in HF_GPT2_FIXED.items()
        if options.get(name) is not None and options[name] != own
    }


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> GPT2Config:
    """A ``GPT2Config`` from a HF GPT-2 ``config.json`` dict (``overrides`` win)."""
    act = hf.get("activation_function", "gelu_new")
    acts = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact", "relu": "relu"}
    if act not in acts:
        raise ValueError(f"activation_function must be one of {tuple(acts)}; got {act!r}")
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"],
        max_seq_len=hf.get("n_positions", 1024),
        d_model=hf["n_embd"],
        num_layers=hf["n_layer"],
        num_heads=hf["n_head"],
        mlp_dim=hf.get("n_inner") or 4 * hf["n_embd"],
        mlp_activation=acts[act],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        tie_embeddings=hf.get("tie_word_embeddings", True),
    )
    conflicts = hf_gpt2_conflicts(overrides)
    if conflicts:
        gpt2 = {k: HF_GPT2_FIXED[k] for k in conflicts}
        raise ValueError(
            f"HF GPT-2 weights fix the architecture, so {conflicts} cannot apply; allowed: "
            f"{gpt2} or None"
        )
    fields.update(overrides)
    return GPT2Config(**fields)


def config_to_hf(config: GPT2Config) -> dict[str, Any]:
    """The HF ``config.json`` dict for ``config``."""
    acts = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu"}
    if config.mlp_activation not in acts:
        raise ValueError(
            f"mlp_activation must be one of {tuple(acts)} for HF GPT-2; got "
            f"{config.mlp_activation!r}"
        )
    own = {name: getattr(config, name) for name in HF_GPT2_FIXED}
    if config.num_kv_heads == config.num_heads:
        own["num_kv_heads"] = None  # one key/value head per query head, as in GPT-2
    conflicts = hf_gpt2_conflicts(own)
    if conflicts:
        gpt2 = {k: HF_GPT2_FIXED[k] for k in conflicts}
        raise ValueError(
            f"only GPT-2-shaped configs export to HF GPT-2: {conflicts} must be {gpt2} "
            "(num_kv_heads None: == num_heads)"
        )
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.max_seq_len,
        "n_ctx": config.max_seq_len,
        "n_embd": config.d_model,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_inner": config.mlp_dim,
        "activation_function": acts[config.mlp_activation],
        "layer_norm_epsilon": config.norm_eps,
        "tie_word_embeddings": True,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.attention_dropout,
        "initializer_range": config.init_std,
    }


def hf_to_tjx(weights: dict[str, np.ndarray], config: GPT2Config) -> dict[str, np.ndarray]:
    """HF GPT-2 tensors → tjx flat parameter names (see ``params_io``)."""
    d, h = config.d_model, config.num_heads
    hd = d // h
    w = {k.removeprefix("transformer."): v for k, v in weights.items()}
    out: dict[str, np.ndarray] = {}
    for hf_name, name in _TOP.items():
        out[name] = w[hf_name]
    for i in range(config.num_layers):
        p, t = f"h.{i}.", f"stack.layers.{i}."
        for hf_name, name in _PER_LAYER.items():
            out[t + name] = w[p + hf_name]
        qkv_w = w[p + "attn.c_attn.weight"]  # Conv1D: [in=d, out=3d]
        qkv_b = w[p + "attn.c_attn.bias"]
        for j, part in enumerate(("query", "key", "value")):
            out[f"{t}attn.{part}.kernel"] = qkv_w[:, j * d : (j + 1) * d].reshape(d, h, hd)
            out[f"{t}attn.{part}.bias"] = qkv_b[j * d : (j + 1) * d].reshape(h, hd)
        out[t + "attn.out.kernel"] = w[p + "attn.c_proj.weight"].reshape(h, hd, d)
        out[t + "attn.out.bias"] = w[p + "attn.c_proj.bias"]
    return out


def tjx_to_hf(flat: dict[str, np.ndarray], config: GPT2Config) -> dict[str, np.ndarray]:
    """tjx flat parameters → HF GPT-2 tensors (hub naming, Conv1D ``[in, out]`` layout)."""
    d = config.d_model
    out: dict[str, np.ndarray] = {}
    for hf_name, name in _TOP.items():
        out[hf_name] = flat[name]
    for i in range(config.num_layers):
        p, t = f"h.{i}.", f"stack.layers.{i}."
        for hf_name, name in _PER_LAYER.items():
            out[p + hf_name] = flat[t + name]
        parts = ("query", "key", "value")
        out[p + "attn.c_attn.weight"] = np.concatenate(
            [flat[f"{t}attn.{q}.kernel"].reshape(d, d) for q in parts], axis=1
        )
        out[p + "attn.c_attn.bias"] = np.concatenate(
            [flat[f"{t}attn.{q}.bias"].reshape(d) for q in parts]
        )
        out[p + "attn.c_proj.weight"] = flat[t + "attn.out.kernel"].reshape(d, d)
        out[p + "attn.c_proj.bias"] = flat[t + "attn.out.bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def load_hf_gpt2(
    path_or_name: str | os.PathLike[str], *, rngs: nnx.Rngs | None = None, **overrides: Any
) -> GPT2:
    """Load a HF GPT-2 checkpoint (a local folder, or a hub name when online) into ``GPT2``.

    Parameters
    ----------
    path_or_name : str or PathLike
        Folder with ``config.json`` and ``model.safetensors``, or a hub repo id.
    rngs : nnx.Rngs, optional
        Only used to build the model before the weights are loaded (and for dropout).
    **overrides
        ``GPT2Config`` fields to change (e.g. ``scan_layers=True``, ``precision="bf16"``).
    """
    from safetensors.numpy import load_file

    folder = _resolve(path_or_name)
    for required in ("config.json", "model.safetensors"):
        if not (folder / required).is_file():
            raise ValueError(f"{folder} has no {required}: not a HF GPT-2 checkpoint folder")
    config = config_from_hf(json.loads((folder / "config.json").read_text()), **overrides)
    weights = load_file(str(folder / "model.safetensors"))
    weights = {
        k: v
        for k, v in weights.items()
        if not k.endswith((".attn.bias", ".attn.masked_bias")) and k != "lm_head.weight"
    }
    model = GPT2(config, rngs=rngs or nnx.Rngs(0))
    set_flat_params(model, hf_to_tjx(weights, config))
    return model


def save_hf_gpt2(model: GPT2, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as a HF GPT-2 checkpoint folder (``config.json`` + ``model.safetensors``).

    Parameters
    ----------
    model : GPT2
        The model (scanned or not).
    path : str or PathLike
        Output folder (created if missing).
    """
    from safetensors.numpy import save_file

    config = model.config
    if not isinstance(config, GPT2Config):
        raise ValueError(f"save_hf_gpt2 needs a GPT2 model; got config {type(config).__name__}")
    hf_config = config_to_hf(config)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    weights = tjx_to_hf(get_flat_params(model), config)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
