"""``--init-from PATH_OR_HUB``: a Hugging Face checkpoint (GPT-2 or the LLaMA family) as the start;
it fixes the architecture, the config says how to train it. ``--init-from RUN_DIR``: a tjx run's
newest intact checkpoint (``RUN_DIR@STEP``: that step's), LoRA merged, e.g. an SFT run to start
DPO or GRPO from; its model must be this config's but for how it trains, its tokenizer this
data's (`check_tokenizer`).

All checked before anything is written. The run records where it started (tjx.ckpt's
``init.json``): a ``--resume``, which takes no ``--init-from``, builds a Hugging Face start's
architecture again from it (the run's ``model.json``), and an export names its base model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from flax import nnx

from tjx import ckpt, data, nn
from tjx.core.config import load_yaml
from tjx.nn import TransformerConfig
from tjx.nn.hf import check_hf_weights, holds_weights
from trainer.config.folder import RunDir
from trainer.config.schema import ConfigError, keyed
from trainer.config.seams import ConfigData
from trainer.config.typed import Config, read_config
from trainer.step.data_setup import Bundle
from trainer.step.init_checks import check_hf_settings, clash_names, hf_start_config


def check_init_from(cfg: Config, source: str, *, weights: bool = True) -> None:
    """Raise `ConfigError` (one line) unless ``source`` can start a run of ``cfg``
    (`hf_start_config`, `check_hf_settings` and, for a local folder and unless ``weights`` is
    False, tjx.nn's `check_hf_weights`; or `_same_model`)."""
    if RunDir.is_run(source):
        where, step = RunDir.split_start(source)
        path = Path(where).expanduser()
        _same_model(cfg.model, _run_files(path)[0], path, vocab=False)
        steps = RunDir(path).step_folders()
        if step is not None and step not in steps:
            raise ConfigError(
                f"--init-from: the run {where!r} has no checkpoint of step {step}; its "
                f"checkpoints are of steps {', '.join(map(str, steps))}"
            )
        return None
    with keyed("--init-from"):
        hf_cfg = hf_start_config(source, cfg.kind)
        check_hf_settings(hf_cfg, _given(cfg), source=source, tokenizer=cfg.data.tokenizer)
        if weights and Path(source).expanduser().is_dir():  # a hub name's: at build (download)
            # Damaged or foreign weights: refused from the files' headers, before the data is
            # prepared or the run directory written (no tensor is read here).
            check_hf_weights(source)


def _given(cfg: Config) -> dict[str, object]:
    """The model settings ``cfg`` gives: those unlike its kind's own (null: derived from others;
    a component section's by their dotted keys, ``moe.num_experts``)."""
    default = read_config({"model": {"kind": cfg.kind}}).to_dict()["model"]
    given: dict[str, object] = {}
    for key, value in cfg.to_dict()["model"].items():
        if key in nn.SECTIONS and isinstance(value, dict):
            given |= {f"{key}.{k}": v for k, v in value.items() if v != default[key].get(k)}
        elif value != default[key]:
            given[key] = value
    return given


def check_resumed_start(cfg: Config, run_dir: Path) -> None:
    """A ``--resume`` of a run started from a Hugging Face checkpoint builds that architecture
    again (its ``model.json``), so an architecture setting ``cfg`` gives that the weights fix
    otherwise is refused, as it was at the start (tjx.nn's `hf_conflicts`); any other run: no
    check. Raises `ConfigError`."""
    if not started_from_hf(run_dir):
        return
    held = nn.config_from_dict(RunDir(run_dir).read(RunDir.MODEL_FILE))
    clashes = nn.hf_conflicts(_given(cfg), held)
    if clashes:
        named = ", ".join(f"model.{k} {v!r}" for k, v in clashes.items())
        raise ConfigError(
            f"--resume: the run started from a Hugging Face checkpoint, whose weights fix the "
            f"architecture, so {named} cannot apply; leave those settings unset"
        )


def _run_files(path: Path) -> tuple[TransformerConfig, ConfigData]:
    """The run's tjx.nn model config and its saved config data."""
    try:
        model = nn.config_from_dict(json.loads((path / "model.json").read_text()))
        saved = load_yaml((path / "config.yaml").read_text())
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ConfigError(f"--init-from: {str(path)!r} is not a readable tjx run ({err})") from None
    if not RunDir(path).has_checkpoints():
        raise ConfigError(f"--init-from: the run {str(path)!r} holds no checkpoint yet")
    return model, saved


def _same_model(
    ours: TransformerConfig, theirs: TransformerConfig, path: Path, *, vocab: bool
) -> None:
    """A `ConfigError` naming `clash_names` of the two model configs (the vocabulary's
    only if ``vocab``: once the tokenizer is read)."""
    named = clash_names(ours, theirs, vocab=vocab)
    if named:
        advice = (
            "with another vocabulary, set data.tokenizer to the run's (its data.json)"
            if vocab
            else "use its model settings (its config.yaml's model section)"
        )
        raise ConfigError(
            f"--init-from: the run {str(path)!r} trained another model: {named}; {advice}"
        )


def load_run(seed: int, model_cfg: TransformerConfig, source: str) -> tuple[nnx.State, int]:
    """The params of run ``source``'s newest intact checkpoint (``RUN@STEP``: that step's) as
    the ``nnx.Param`` state of resolved ``model_cfg``'s model (from ``seed``: its graph), LoRA
    merged, on the host; and that step. No weight is drawn: the checkpoint's are restored onto
    the model's shapes (``nnx.eval_shape``)."""
    where, at = RunDir.split_start(source)
    path = Path(where).expanduser()
    theirs, saved = _run_files(path)
    _same_model(model_cfg, theirs, path, vocab=True)
    found: list[bool] = []

    def shapes() -> nnx.Module:
        model = nn.build_model(model_cfg, rngs=nnx.Rngs(seed))
        found.append(nn.add_saved_lora(model, saved.get("lora")))  # read as trained, folded in
        return model

    model = nnx.eval_shape(shapes)
    params = nnx.state(model, nnx.Param)
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # orbax says the (read-only) source is read only: it knows
    try:
        step, restored = ckpt.restore_params_and_step(
            path / "checkpoints", target=nnx.to_pure_dict(params), step=at
        )
    except (ckpt.CheckpointError, ValueError) as err:
        raise ConfigError(f"--init-from: {err}") from None
    finally:
        absl.setLevel(level)
    nnx.replace_by_pure_dict(params, restored)
    nnx.update(model, params)
    if found[0]:
        nn.merge_lora(model)
    return nnx.state(model, nnx.Param), int(step)


def check_tokenizer(source: str, bundle: Bundle) -> None:
    """The data's tokenizer must be the run's (tjx.data's `check_run_tokenizer`)."""
    with keyed("--init-from", data.DataError):
        where = RunDir.split_start(source)[0]
        data.check_run_tokenizer(where, bundle, names={"tokenizer": "data.tokenizer"})


def start_config(cfg: Config, source: str) -> Config:
    """``cfg`` with the model a run started from ``source`` trains, for ``--plan``: a Hugging
    Face checkpoint's architecture (its ``config.json``, how it trains from ``cfg`` as
    `trainer.step.state.build` loads it) and vocabulary; a tjx run's model is ``cfg``'s own, and a
    GPT-2 hub name's is the preset's (both checked by `check_init_from`). No tensor is read; a
    folder of ``config.json`` and the index alone (no weight file: a published model's sizes,
    planned before downloading them) is planned from its config, its weights unchecked.

    Raises
    ------
    ConfigError
        As `check_init_from`.
    """
    with keyed("--init-from"):
        weights = RunDir.is_run(source) or holds_weights(source)
    check_init_from(cfg, source, weights=weights)
    return _with_start_model(cfg, source)


def trained_architecture(
    model: TransformerConfig, kind: str, source: str | None, run_dir: Path, resume: bool
) -> TransformerConfig:
    """The model a run trains, known before any data is prepared (no tensor read): a Hugging
    Face start's architecture (its ``config.json``; on a ``--resume``, the run's ``model.json``)
    with ``model``'s tjx.nn `TRAINING_FIELDS`; any other run's is ``model`` itself. Takes the
    model section alone: the mesh check that needs it reads nothing else of the run.

    Parameters
    ----------
    model : TransformerConfig
        The command line's model section (checked: `check_init_from`).
    kind : str
        The config's ``kind`` (which checkpoints a start may read).
    source : str or None
        ``--init-from``.
    run_dir : Path
        The run directory.
    resume : bool
        ``--resume``.
    """
    if resume:
        return _resumed_model(model, run_dir) or model
    if source is None:
        return model
    return _start_model(model, kind, source) or model


def _start_model(model: TransformerConfig, kind: str, source: str) -> TransformerConfig | None:
    """A checked Hugging Face ``source``'s architecture, trained as ``model`` says; ``None``
    for a tjx run or a GPT-2 hub name (the config's own model trains)."""
    if RunDir.is_run(source) or hf_start_config(source, kind) is None:
        return None
    how = {k: nn.setting_value(model, k) for k in nn.TRAINING_FIELDS}
    with keyed("--init-from"):
        return nn.read_hf_config(source, **how)


def _with_start_model(cfg: Config, source: str) -> Config:
    """`start_config` of a checked ``source``."""
    model = _start_model(cfg.model, cfg.kind, source)
    if model is None:
        return cfg
    # The checkpoint's vocabulary is the model's: the data's tokenizer fits it when the run
    # starts (`trainer.step.state.build`), which a plan does not prepare.
    return dataclasses.replace(cfg, model=model, vocab_size=model.vocab_size)


def recorded(run_dir: Path) -> str | None:
    """The ``--init-from`` a run started from (its ``init.json``), or None (a run from scratch,
    or one saved before the file existed)."""
    found = RunDir(run_dir).read_init()
    return str(found["init_from"]) if found and found.get("init_from") else None


def started_from_hf(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` started from a Hugging Face checkpoint (its ``init.json``;
    a tjx run's start trains the config's own model). Errors as `RunDir.read_init`."""
    found = RunDir(run_dir).read_init()
    return found is not None and found.get("kind") == "hugging-face"


def resumed_from_checkpoint(cfg: Config, run_dir: Path) -> Config | None:
    """``cfg`` with the architecture a run started from a Hugging Face checkpoint trained (its
    ``model.json``) but ``cfg``'s tjx.nn `TRAINING_FIELDS`; ``None`` for any other run."""
    model = _resumed_model(cfg.model, run_dir)
    return None if model is None else dataclasses.replace(cfg, model=model)


def _resumed_model(model: TransformerConfig, run_dir: Path) -> TransformerConfig | None:
    """`resumed_from_checkpoint`'s model: the run's ``model.json`` with ``model``'s
    `TRAINING_FIELDS`; ``None`` for a run that did not start from a Hugging Face checkpoint."""
    if not started_from_hf(run_dir):
        return None
    saved = nn.config_from_dict(RunDir(run_dir).read(RunDir.MODEL_FILE))
    how = {k: nn.setting_value(model, k) for k in nn.TRAINING_FIELDS}
    return saved.replace(**how)
