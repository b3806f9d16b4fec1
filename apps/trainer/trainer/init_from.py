"""``--init-from PATH_OR_HUB``: a Hugging Face checkpoint (GPT-2, or the LLaMA family: Llama,
Mistral, Qwen2, Qwen3, OLMo 2, Phi-3, Gemma 2/3) as the starting point. The checkpoint fixes the
architecture (a setting the user gave must be its own: tjx.nn's `hf_conflicts`); the config says
how to train it.

``--init-from RUN_DIR``: a finished (or stopped) tjx run, e.g. an SFT run to start DPO from: the
params of its newest intact checkpoint, LoRA adapters merged. Its model must be this config's but
for how it trains (tjx.nn's `config_clashes`), its tokenizer this data's (`check_tokenizer`).

All checked before anything is written; a GPT-2 hub name (``gpt2``) without downloading, any other
source by its ``config.json`` only. The run records where it started (tjx.ckpt's ``init.json``,
written with the run's files: `trainer.training.write_run_files`). A ``--resume`` takes no
``--init-from``, so from that record it builds a Hugging Face checkpoint's architecture again
(the run's ``model.json``, not the config's shape) and an export names its base model
(``--export-peft``'s ``base_model_name_or_path``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from tjx.ckpt import RunDir
from trainer.config import Config, read_config
from trainer.schema import ConfigError


def _read(source: str) -> Any:
    from tjx import nn

    try:
        return nn.read_hf_config(source)
    except ValueError as err:
        raise ConfigError(f"--init-from: {err}") from None


def check_init_from(cfg: Config, source: str) -> None:
    """Raise `ConfigError` (one line) unless ``source`` can start a run of ``cfg``."""
    from tjx import nn

    path = Path(source).expanduser()
    if RunDir.is_run(source):
        return _same_model(cfg.model, _run_files(path)[0], path, vocab=False)
    if not path.exists() and source in nn.HF_GPT2_NAMES:  # known without downloading
        hf_cfg, kind = None, "gpt2"
    elif path.exists() or nn.is_hub_id(source):
        hf_cfg = _read(str(path) if path.exists() else source)
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
    tokenizer = cfg.data.tokenizer
    if kind == "gpt2" and tokenizer != "gpt2" and Path(tokenizer).expanduser() != path:
        raise ConfigError(
            "--init-from: GPT-2 weights need data.tokenizer 'gpt2' (or the checkpoint "
            f"folder), got {tokenizer!r}"
        )
    clashes = nn.hf_conflicts(settings, hf_cfg)
    if clashes:
        named = ", ".join(f"model.{k} {v!r}" for k, v in clashes.items())
        family = "GPT-2" if kind == "gpt2" else "the checkpoint's"
        raise ConfigError(
            f"--init-from: {family} weights fix the architecture, so {named} cannot apply; "
            "leave those settings unset"
        )


def _run_files(path: Path) -> tuple[Any, dict[str, Any]]:
    """The run's tjx.nn model config and its saved config data."""
    from tjx import ckpt, nn

    try:
        model = nn.config_from_dict(json.loads((path / "model.json").read_text()))
        saved = ckpt.load_yaml((path / "config.yaml").read_text())
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ConfigError(f"--init-from: {str(path)!r} is not a readable tjx run ({err})") from None
    if not ckpt.RunDir(path).has_checkpoints():
        raise ConfigError(f"--init-from: the run {str(path)!r} holds no checkpoint yet")
    return model, saved


def _same_model(ours: Any, theirs: Any, path: Path, *, vocab: bool) -> None:
    """A `ConfigError` naming up to three of tjx.nn's `config_clashes` of the two model configs
    (the vocabulary's only if ``vocab``: once the tokenizer is read)."""
    from tjx import nn

    clashes = nn.config_clashes(ours, theirs, vocab=vocab)
    if not clashes:
        return
    if "class" in clashes:
        named = ["model.kind ({} vs the run's {})".format(*clashes["class"])]
    else:
        named = [f"model.{k} {a!r} (the run's: {b!r})" for k, (a, b) in clashes.items()]
    advice = (
        "with another vocabulary, set data.tokenizer to the run's (its data.json)"
        if vocab
        else "use its model settings (its config.yaml's model section)"
    )
    raise ConfigError(
        f"--init-from: the run {str(path)!r} trained another model: {', '.join(named[:3])}; "
        + advice
    )


def load_run(cfg: Config, model_cfg: Any, source: str) -> tuple[Any, int]:
    """The model of ``model_cfg`` (resolved: the tokenizer's vocabulary) holding the params of
    the run's newest intact checkpoint (its LoRA adapters merged), on the host; and that step."""
    from flax import nnx

    from tjx import ckpt, nn

    path = Path(source).expanduser()
    theirs, saved = _run_files(path)
    _same_model(model_cfg, theirs, path, vocab=True)
    model = nn.build_model(model_cfg, rngs=nnx.Rngs(cfg.train.seed))
    lora = saved.get("lora") or {}
    if lora.get("enabled"):  # read as it was trained, then folded into the weights
        settings = {k: v for k, v in lora.items() if k != "enabled"}
        nn.add_lora(model, nn.LoraConfig(**settings), rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # orbax says the (read-only) source is read only: it knows
    try:
        step, restored = ckpt.restore_params_and_step(
            path / "checkpoints", target=nnx.to_pure_dict(params)
        )
    except (ckpt.CheckpointError, ValueError) as err:
        raise ConfigError(f"--init-from: {err}") from None
    finally:
        absl.setLevel(level)
    nnx.replace_by_pure_dict(params, restored)
    nnx.update(model, params)
    if lora.get("enabled"):
        nn.merge_lora(model)
    return model, int(step)


def check_tokenizer(source: str, bundle: Any) -> None:
    """The data's tokenizer must be the run's (tjx.data's `same_tokenizer`: the same ids for the
    same text); else a `ConfigError` naming the run's."""
    from tjx.data import same_tokenizer

    info = json.loads((Path(source).expanduser() / "data.json").read_text())
    theirs = info.get("tokenizer")
    ours = getattr(bundle, "tokenizer_dir", None) or getattr(bundle, "tokenizer_spec", None)
    if not same_tokenizer(theirs, ours):
        raise ConfigError(
            f"--init-from: the run {source!r} read another tokenizer ({theirs}), so its ids would "
            f"mean other tokens here; set data.tokenizer={theirs}"
        )


def trained_model(cfg: Config, source: str | None, run_dir: Path, resume: bool) -> Any:
    """The tjx.nn model config the run trains, known before anything is built: a Hugging Face
    start's (its ``config.json``; on a ``--resume``, the run's ``model.json``), else the
    config's own."""
    from tjx import nn

    if resume and resumed_from_checkpoint(cfg, run_dir) is not None:
        return nn.config_from_dict(RunDir(run_dir).read(RunDir.MODEL_FILE))
    if source is None or resume or RunDir.is_run(source) or source in nn.HF_GPT2_NAMES:
        return cfg.model
    return _read(source)


def recorded(run_dir: Path) -> str | None:
    """The ``--init-from`` a run started from (its ``init.json``), or None (a run from scratch,
    or one saved before the file existed)."""
    found = RunDir(run_dir).read_init()
    return str(found["init_from"]) if found and found.get("init_from") else None


def resumed_from_checkpoint(cfg: Config, run_dir: Path) -> Config | None:
    """For a ``--resume`` of a run that started ``--init-from`` a checkpoint: ``cfg`` (resolved)
    with the architecture the run trained (its ``model.json``) and ``cfg``'s tjx.nn
    `TRAINING_FIELDS`; ``None`` for a run from scratch (its config is its architecture)."""
    from tjx import nn

    found = RunDir(run_dir).read_init()
    if found is None or found.get("kind") != "hugging-face":  # a tjx run's model is the config's
        return None
    saved = nn.config_from_dict(RunDir(run_dir).read(RunDir.MODEL_FILE))
    how = {k: getattr(cfg.model, k) for k in nn.TRAINING_FIELDS}
    return dataclasses.replace(cfg, model=dataclasses.replace(saved, **how))
