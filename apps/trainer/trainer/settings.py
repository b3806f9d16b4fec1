"""A command line's settings as plain data: presets and YAML files (``base:`` chains, and the old
layout's key names migrated where a file is read), then ``--set`` overrides read as the types of
the fields they name; `trainer.config.read_config` makes the `Config` of the result.

Presets are the YAML files of ``apps/trainer/configs/``, shipped beside the ``trainer`` package
(Pants' source root is ``apps/trainer``: the binary, the tests and ``tools/devtest`` all hold
``configs/`` next to ``trainer/``). Files written for the trainer before its sections were the
packages' configs (tjx-nn 0.8, tjx-optim 0.6, tjx-parallel 0.9: the old layout) name a few keys
otherwise, and a ``config.yaml`` saved then listed every key of every kind; `migrate` reads them
as today's (presets, user files and the ``config.yaml`` of a resumed run), `renamed` a ``--set``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tjx import ckpt
from tjx.ckpt import ConfigError, deep_merge, value_text
from trainer.config import SCHEMA, Config, read_config

__all__ = ["deep_merge", "value_text"]  # tjx.ckpt's, kept under the names callers know

#: Old key → the package field it is now.
RENAMED = {
    "model.param_dtype": "model.precision.param_dtype",
    "model.compute_dtype": "model.precision.compute_dtype",
    "optimizer.lr": "optimizer.schedule.peak_lr",
}
#: Keys the old flat model section saved for every kind, with the value they then held unless
#: the kind read them: dropped where the kind's class has no such field (a saved ``config.yaml``
#: of a GPT-2 run lists ViT's image size) or never reads it (BERT's always-tied head).
_OLD_DEFAULTS = {"image_size": 8, "patch_size": 2, "num_classes": 10, "tie_embeddings": True}
_KIND_FIELDS = {"vit": ("image_size", "patch_size", "num_classes")}


def in_old_layout(data: Any) -> bool:
    """Whether config ``data`` holds a key of the old layout (a ``config.yaml`` saved then holds
    all of them)."""
    for old in RENAMED:
        section, key = old.split(".")
        node = data.get(section) if isinstance(data, dict) else None
        if isinstance(node, dict) and key in node:
            return True
    return False


def renamed(key: str) -> str:
    """Today's name of dotted ``key`` (itself unless it, or a section holding it, was renamed)."""
    for old, new in RENAMED.items():
        if key == old or key.startswith(f"{old}."):
            return new + key[len(old) :]
    return key


def migrate(data: Any) -> Any:
    """A copy of config ``data`` in today's keys (data that is no mapping is returned as is)."""
    if not isinstance(data, dict):
        return data
    out = copy.deepcopy(data)
    model = out.get("model")
    if isinstance(model, dict) and model.get("kind") == "vit" and in_old_layout(out):
        model.setdefault("num_channels", 1)  # the old trainer gave ViT grey images
    for old, new in RENAMED.items():
        section, key = old.split(".")
        node = out.get(section)
        if isinstance(node, dict) and key in node:
            value = node.pop(key)
            *parents, leaf = new.split(".")[1:]
            for part in parents:
                child = node.get(part)
                node[part] = child = dict(child) if isinstance(child, dict) else {}
                node = child
            if leaf in node:  # one setting twice: neither may silently win
                raise ConfigError(f"{old}: is {new} now, which is set too; keep only {new}")
            node[leaf] = value
    if isinstance(model, dict) and isinstance(model.get("rope_scaling"), list):
        # tjx-nn 0.11 held Llama 3's scaling as four numbers; it is a section of named keys now
        model["rope_scaling"] = _rope_section(model["rope_scaling"])
    if isinstance(model, dict):
        kind = model.get("kind", "gpt2")
        for key, old_default in _OLD_DEFAULTS.items():
            reads = key in _KIND_FIELDS.get(kind, ()) or (
                key == "tie_embeddings" and kind not in ("bert", "vit")
            )
            if not reads and model.get(key, None) == old_default:
                del model[key]
    return out


def _rope_section(numbers: list[Any]) -> dict[str, Any]:
    """The ``model.rope_scaling`` section of Llama 3's legacy ``[factor, low, high, original]``."""
    from tjx import nn  # jax's import waits for a run: --help and --show-config stay quick

    try:
        scaling = nn.RopeScaling.parse(numbers, "model.rope_scaling")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return {} if scaling is None else scaling.as_dict()


def configs_dir() -> Path:
    """The folder of shipped presets, ``configs/`` beside the ``trainer`` package."""
    folder = Path(__file__).resolve().parent.parent / "configs"
    if not folder.is_dir():
        raise ConfigError(f"the trainer's presets are missing: no folder {folder}")
    return folder


#: The trainer's config files: presets in ``configs/``, each file migrated as it is read.
FILES = ckpt.ConfigFiles(
    configs_dir,
    migrate=migrate,
    empty=" (it would train on every default); give at least `base: tiny` or another preset",
)


def preset_names() -> list[str]:
    """Names of the shipped presets (``tiny``, ``gpt2_small``, ...)."""
    return FILES.names()


def load_config_data(name_or_path: str) -> dict[str, Any]:
    """Plain data of a preset name or a YAML file path (``base:`` resolved, each file migrated)."""
    return FILES.load(name_or_path)


def field_at(key: str, data: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """The field at dotted ``key`` and the type ``--set`` reads (`tjx.ckpt.Schema.field_at`);
    the model's keys are those of ``data``'s kind."""
    return SCHEMA.field_at(key, SCHEMA.kind_of(data or {}))


def parse_override(text: str, data: dict[str, Any] | None = None) -> tuple[str, Any]:
    """``"train.steps=1_000"`` → ``("train.steps", 1000)`` typed by the field (an old key name is
    read as today's: ``optimizer.lr`` → ``optimizer.schedule.peak_lr``)."""
    return ckpt.parse_override(SCHEMA, text, data, renamed)


def apply_overrides(
    data: dict[str, Any], overrides: list[str], say: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """A copy of config ``data`` with every ``--set`` applied in order (`tjx.ckpt.apply_overrides`;
    an old key name works, and ``say`` hears its new name once)."""
    return ckpt.apply_overrides(SCHEMA, data, overrides, renamed, say)


def changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``key=value`` of every key whose value ``after`` (a preset's data with a command line's
    overrides) differs from ``before`` (the preset's), as ``--set`` would write it."""
    return ckpt.changed(SCHEMA, before, after)


def load_config(preset: str, overrides: list[str]) -> Config:
    """The validated config of a preset (or YAML file) with ``--set`` overrides applied.

    The command line's path minus its flags (``--data``, checks of the run directory): the
    config other code builds to compile or run the trainer's step.

    Parameters
    ----------
    preset : str
        A preset name (``tiny``, ``gpt2_small``, ...) or a YAML file's path, as ``--config``.
    overrides : list[str]
        ``a.b=c`` overrides, as ``--set`` takes them.

    Returns
    -------
    Config
        The typed, validated config. Raises `ConfigError` if any part of it is invalid.
    """
    return read_config(apply_overrides(load_config_data(preset), overrides))
