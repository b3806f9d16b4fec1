"""``--init-from PATH_OR_HUB``: a Hugging Face checkpoint (GPT-2, or the LLaMA family: Llama,
Mistral, Qwen2, Qwen3, OLMo 2, Phi-3, Gemma 2/3) as the starting point. The checkpoint fixes the
architecture; the config says how to train it.

Checked before anything is written: the checkpoint's family must be ``model.kind``, and an
architecture setting the user gave (``model.position`` ...) must be the checkpoint's, since
dropping it silently would train something else than asked. A GPT-2 hub name (``gpt2``) is
checked without downloading; any other source is read (its ``config.json`` only).

The run records where it started (``init.json``: a local folder as its absolute path, a hub
name as given). A ``--resume`` takes no ``--init-from``, so from that record it builds the
checkpoint's architecture again (the run's ``model.json``, not the config's shape) and an export
names its base model (``--export-peft``'s ``base_model_name_or_path``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from trainer.config import Config, read_config
from trainer.schema import ConfigError

#: Trainer model settings a checkpoint of the LLaMA family fixes (None: the user left it): its
#: shape, its windows and the switches of the families built on it (Qwen3, OLMo 2, Gemma).
LLAMA_FIXED = (
    "position",
    "attention_type",
    "norm_position",
    "use_bias",
    "num_kv_heads",
    "sliding_window",
    "window_pattern",
    "qk_norm",
    "qk_norm_scope",
    "norm_plus_one",
    "scale_embeddings",
    "query_pre_attn_scalar",
    "attn_logit_softcap",
    "final_logit_softcap",
    "rope_local_theta",
)


def _is_hub_id(source: str) -> bool:
    """``org/name``: a hub repo id (a local path would exist, or start with ``.``/``/``/``~``)."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def _read(source: str) -> Any:
    from tjx import nn

    try:
        return nn.read_hf_config(source)
    except ValueError as err:
        raise ConfigError(f"--init-from: {err}") from None


def _same(value: Any) -> Any:
    """A config value as tjx-nn holds it (a YAML list, ``window_pattern``'s, as a tuple)."""
    return tuple(value) if isinstance(value, list) else value


def check_init_from(cfg: Config, source: str) -> None:
    """Raise `ConfigError` (one line) unless ``source`` can start a run of ``cfg``."""
    from tjx import nn

    path = Path(source).expanduser()
    if path.exists():
        hf_cfg = _read(str(path))
        kind = "gpt2" if isinstance(hf_cfg, nn.GPT2Config) else "llama"
    elif source in nn.HF_GPT2_NAMES:
        hf_cfg, kind = None, "gpt2"
    elif _is_hub_id(source):
        hf_cfg = _read(source)
        kind = "gpt2" if isinstance(hf_cfg, nn.GPT2Config) else "llama"
    else:
        raise ConfigError(
            f"--init-from: {source!r} is neither a folder nor a hub name "
            f"({', '.join(nn.HF_GPT2_NAMES)}, or org/name)"
        )
    if cfg.kind != kind:
        what = "GPT-2" if kind == "gpt2" else "LLaMA-family"
        raise ConfigError(
            f"--init-from: loads {what} weights; model.kind must be {kind!r}, got " f"{cfg.kind!r}"
        )
    # The settings the config gives: those unlike the kind's own (null: derived from the others).
    default = read_config({"model": {"kind": cfg.kind}}).to_dict()["model"]
    settings = {k: v for k, v in cfg.to_dict()["model"].items() if v != default[k]}
    if kind == "gpt2":
        if cfg.data.tokenizer != "gpt2" and Path(cfg.data.tokenizer).expanduser() != path:
            raise ConfigError(
                "--init-from: GPT-2 weights need data.tokenizer 'gpt2' (or the checkpoint "
                f"folder), got {cfg.data.tokenizer!r}"
            )
        clashes = nn.hf_gpt2_conflicts(settings)
    else:
        clashes = {
            k: settings[k]
            for k in LLAMA_FIXED
            if settings.get(k) is not None and _same(settings[k]) != getattr(hf_cfg, k)
        }
    if clashes:
        named = ", ".join(f"model.{k} {v!r}" for k, v in clashes.items())
        family = "GPT-2" if kind == "gpt2" else "the checkpoint's"
        raise ConfigError(
            f"--init-from: {family} weights fix the architecture, so {named} cannot apply; "
            "leave those settings unset"
        )


#: The file of a run that records where it started (`record`); the name and layout the "dpo"
#: branch's ``--init-from RUN_DIR`` uses too (``kind`` ``tjx-run`` there).
INIT_FILE = "init.json"


def record(run_dir: Path, source: str | None, step: int | None = None) -> None:
    """Write ``init.json`` (where the run started: a local folder's absolute path, else the hub
    name) unless it exists: a resume keeps it. Nothing for a run from scratch."""
    from tjx.ckpt import RunDir

    folder = RunDir(run_dir)
    if source is None or (folder.path / INIT_FILE).exists():
        return
    path = Path(source).expanduser()
    where = str(path.resolve()) if path.exists() else source
    folder.write_json(INIT_FILE, {"init_from": where, "kind": "hugging-face", "step": step})


def _record(run_dir: Path) -> dict[str, Any] | None:
    from tjx.ckpt import RunDir, RunFileNotFoundError

    try:
        return RunDir(run_dir).read(INIT_FILE)
    except RunFileNotFoundError:
        return None


def recorded(run_dir: Path) -> str | None:
    """The ``--init-from`` a run started from (its ``init.json``), or None (a run from scratch,
    or one saved before the file existed)."""
    found = _record(run_dir)
    return str(found["init_from"]) if found and found.get("init_from") else None


#: The model settings the config decides when a checkpoint fixed the architecture (`state.build`
#: hands them to ``load_hf``): how to train it, not what it is.
TRAINING_FIELDS = ("scan_layers", "remat", "attention_impl", "dropout", "decode_topk", "precision")


def resumed_from_checkpoint(cfg: Config, run_dir: Path) -> Config | None:
    """For a ``--resume`` of a run that started ``--init-from`` a checkpoint: ``cfg`` (resolved)
    with the architecture the run trained (its ``model.json``) and ``cfg``'s `TRAINING_FIELDS`;
    ``None`` for a run that started from scratch (its config is its architecture)."""
    from tjx import nn
    from tjx.ckpt import RunDir

    found = _record(run_dir)
    if found is None or found.get("kind") != "hugging-face":  # a tjx run's model is the config's
        return None
    saved = nn.config_from_dict(RunDir(run_dir).read(RunDir.MODEL_FILE))
    how = {k: getattr(cfg.model, k) for k in TRAINING_FIELDS}
    return dataclasses.replace(cfg, model=dataclasses.replace(saved, **how))
