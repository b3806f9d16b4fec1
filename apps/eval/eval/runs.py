"""Reading a trainer run directory: its config, model (rebuilt from ``model.json``, with the LoRA
adapters its ``config.yaml`` names), the latest checkpoint's parameters, the tokenizer (and chat
template) and the held-out shards.

A LoRA run is evaluated **unmerged**: the model is rebuilt with tjx.nn's adapters of the run's
``lora:`` section and given the checkpoint's whole tree (base and adapters), so every number is the
one the trainer's validation computed, in any parameter dtype (merging into a bfloat16 kernel would
round ``W + scale · A · B``). ``--export-hf`` merges (tjx.nn's ``save_hf`` sums in float32, one
tensor at a time), so the exported folder is an ordinary Hugging Face checkpoint.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tjx import ckpt, data
from tjx.core.lazy import lazy_imports
from tjx.data import ChatRunData, RunData

# The command line checks a run directory (`check_run_dir`) before it pays for JAX (seconds).
with lazy_imports(globals()):
    from flax import nnx

    from tjx import nn

#: The files a trainer run holds beside its ``checkpoints/`` (the trainer's layout, ``RunDir``: the
#: saved config, what rebuilds the model, what rebuilds the data), read by name through tjx.ckpt.
RUN_FILES = ("config.yaml", "model.json", "data.json")
#: ``data.json``'s ``format`` of a run scored on its conversations (SFT's and DPO's).
CHAT_FORMATS = ("chat", "preference")
#: ``data.json``'s ``format`` of a post-training run (tjx.data's `ChatRunData` reads it back):
#: GRPO's prompts too, scored by their held-out reward (`eval.reward`).
POST_TRAINING_FORMATS = (*CHAT_FORMATS, "prompts")


class RunError(ValueError):
    """A run directory that cannot be evaluated (the CLI exits with code 2)."""


@dataclass
class LoadedRun:
    """A trained model ready to evaluate."""

    run_dir: Path
    config: dict[str, Any]
    data: dict[str, Any]
    nn_config: Any
    model: Any
    step: int
    run_data: RunData | ChatRunData  # data.json read back by tjx.data
    #: tjx.nn's `LoraConfig` of a LoRA run (its adapters are in ``model``); ``None`` otherwise.
    lora: Any = None

    @property
    def chat(self) -> bool:
        """A chat (SFT) or preference run: its data are conversations, scored on the
        assistant's tokens only."""
        return self.data.get("format") in CHAT_FORMATS

    @property
    def tokenizer(self) -> Any:
        """The run's tokenizer; ``None`` for an image run."""
        return self.run_data.tokenizer

    @property
    def objective(self) -> Any:
        """tjx.nn's `Objective` of the run's model: what it is scored on (``scores``, every
        token or not), its name, and whether it writes text (``decodes``)."""
        return nn.objective_of(self.nn_config)


def _read(run_dir: Path, name: str) -> Any:
    """The mapping in the run's file ``name`` (tjx.ckpt's `RunFolder` reads it); `RunError` if
    not."""
    try:
        return ckpt.RunFolder(run_dir).read(name)
    except ckpt.RunFileNotFoundError:
        raise RunError(
            f"--checkpoint: {str(run_dir)!r} has no {name}; is it a trainer run dir?"
        ) from None
    except ckpt.RunFileError as err:
        raise RunError(
            f"--checkpoint: {str(err.path)!r} is unreadable ({err.reason}); the trainer writes "
            "it, so the run directory was changed by hand or damaged"
        ) from None


def check_run_dir(run_dir: Path) -> None:
    """Raise `RunError` unless ``run_dir`` holds a config, model description and a checkpoint."""
    if ckpt.is_remote(run_dir):  # the bucket, the credentials: one line each (StorageError)
        ckpt.check_remote(run_dir, write=False)
    if not run_dir.is_dir():
        raise RunError(f"--checkpoint: no such run directory {str(run_dir)!r}")
    for name in RUN_FILES:
        _read(run_dir, name)
    # Any step folder: which step reads back intact is for the restore to find (and say).
    if not ckpt.RunFolder(run_dir).has_checkpoints():
        raise RunError(f"--checkpoint: {str(run_dir)!r} holds no checkpoint yet")


def section_config(run_dir: Path, fields: dict[str, Any], name: str, cls: type) -> Any:
    """``cls(**fields)``: a package's config object of the run's ``name:`` section, or one
    `RunError` line (the trainer wrote the section, so a field it does not take was hand-made)."""
    try:
        return cls(**fields)
    except (TypeError, ValueError) as err:
        raise RunError(
            f"--checkpoint: {str(run_dir / 'config.yaml')!r}: its {name} section is not tjx.nn's "
            f"{cls.__name__} ({err}); the trainer writes it, so it was changed by hand"
        ) from None


def lora_config(run_dir: Path, config: dict[str, Any]) -> Any:
    """tjx.nn's `LoraConfig` of the run's ``lora:`` section when ``lora.enabled``, else None."""
    section = config.get("lora")
    if not isinstance(section, dict) or not section.get("enabled"):
        return None
    fields = {k: v for k, v in section.items() if k != "enabled"}
    return section_config(run_dir, fields, "lora", nn.LoraConfig)


def build_model(nn_config: Any, lora: Any, attention: nn.ModelAttention | None = None) -> Any:
    """A model of ``nn_config`` with ``lora``'s adapters (if any), running the attention kernels
    ``attention`` (None: its own resolution); call it under ``nnx.eval_shape`` (the checkpoint
    gives every value)."""
    model = nn.build_model(nn_config, rngs=nnx.Rngs(0), attention=attention)
    if lora is not None:
        nn.add_lora(model, lora, rngs=nnx.Rngs(params=1, dropout=2))
    return model


def rebuilt(run: LoadedRun, nn_config: Any, attention: nn.ModelAttention | None = None) -> Any:
    """``run``'s model (its adapters too) built (abstractly) from ``nn_config`` — another
    attention kernel (``attention``: the kernels resolved for it), top-k decoding: settings that
    leave the state the same — and given the run's state."""
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(nn_config, run.lora, attention)))
    return nnx.merge(graphdef, nnx.state(run.model))


def _run_data(run_dir: Path, info: dict[str, Any]) -> Any:
    """tjx.data's reading of ``data.json``: a `ChatRunData` for a post-training run."""
    try:
        if info.get("format") in POST_TRAINING_FORMATS:
            return data.ChatRunData.from_description(info)
        return data.RunData.from_description(info)
    except data.DataError as err:
        raise RunError(f"--checkpoint: {str(run_dir / 'data.json')!r}: {err}") from None


def load_run(run_dir: Path, step: int | None = None) -> LoadedRun:
    """Config, model with the checkpoint's params (latest unless ``step``), tokenizer."""
    check_run_dir(run_dir)
    config = _read(run_dir, "config.yaml")
    info = _read(run_dir, "data.json")
    try:
        nn_config = nn.config_from_dict(_read(run_dir, "model.json"))
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        if isinstance(err, RunError):
            raise
        raise RunError(
            f"--checkpoint: {str(run_dir / 'model.json')!r} does not describe a tjx.nn model "
            f"({type(err).__name__}: {err}); the trainer writes it, so it was changed by hand"
        ) from None
    lora = lora_config(run_dir, config)
    abstract = nnx.eval_shape(lambda: build_model(nn_config, lora))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)  # type: ignore[misc]
    target = nnx.to_pure_dict(params)
    # tjx.ckpt picks the step: with none given, the newest that reads back intact (a corrupt
    # newer one is skipped with one warning line naming it), as the trainer's --resume does.
    with ckpt.corrupt_fallback_lines("eval"):
        step, restored = ckpt.restore_params_and_step(
            run_dir / "checkpoints", target=target, step=step
        )
    # The RNG streams are unused in evaluation; concrete stand-ins let the model merge.
    model = nnx.merge(graphdef, restored, nn.concrete_state(rest))
    # tjx.data reads back what the trainer wrote (its describe), tokenizer (and template) too.
    run_data = _run_data(run_dir, info)
    return LoadedRun(run_dir, config, info, nn_config, model, int(step), run_data, lora)


def started_as(run_dir: Path) -> str | None:
    """The ``config.json`` model type of the Hugging Face folder the run started from (its
    ``init.json``), or None: a run from scratch or from a tjx run, or one whose record an
    older trainer wrote without it. Read only by ``--export-hf`` (`tjx.nn.hf_export_type`): a
    damaged record stops an export in one line, never a scoring."""
    try:
        init = ckpt.RunFolder(run_dir).read("init.json")
    except ckpt.RunFileNotFoundError:
        return None
    except ckpt.RunFileError as err:
        raise RunError(
            f"--checkpoint: {str(err.path)!r} is unreadable ({err.reason}); the trainer writes "
            "it, so the run directory was changed by hand or damaged"
        ) from None
    model_type = init.get("model_type") if init.get("kind") == "hugging-face" else None
    return model_type if isinstance(model_type, str) else None


#: How tjx.data's messages about ``--data`` name the flags: its rows' text field is
#: ``--text-field`` (the run's ``data.text_field`` by default).
_DATA_FLAGS = {"source": "--data", "text_field": "--text-field"}


def read_as(run: LoadedRun, text_field: str | None) -> LoadedRun:
    """``run`` reading other held-out rows (``--data``) by ``text_field``: the field or column
    holding their text (``None``: the run's own, its ``data.text_field``)."""
    if text_field is None or not isinstance(run.run_data, data.RunData):
        return run
    return dataclasses.replace(
        run, run_data=dataclasses.replace(run.run_data, text_field=text_field)
    )


def heldout_dir(run: LoadedRun, source: str | None) -> tuple[Path, float | None]:
    """Validation shards and bytes/token: the run's own, or ``source`` with the run's tokenizer.

    ``source`` goes through tjx.data's shard cache exactly as the trainer's ``data.source`` does
    (same folder, same held-out split of a local file, fresh shards after a local file changes),
    in the run's cache folder.
    """
    if not isinstance(run.run_data, data.RunData):  # a chat run's conversations: not shards
        raise RunError("--data: a chat run is scored on its own held-out conversations")
    try:
        return run.run_data.heldout_shards(source, progress=sys.stderr.isatty(), names=_DATA_FLAGS)
    except data.DataError as err:
        raise RunError(str(err) if err.argument else f"--checkpoint: {err}") from None
