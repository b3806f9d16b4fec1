"""Config files written for the trainer before its sections were the packages' configs.

The model, optimizer and mesh sections were the trainer's own copies until tjx-nn 0.8, tjx-optim
0.6 and tjx-parallel 0.9 (the old layout); a few of their keys have other names in the packages'
classes, and a saved ``config.yaml`` listed every key of every kind. `migrate` reads such data as
today's: presets, user files, ``--set`` keys and the ``config.yaml`` of a run being resumed all
keep working.
"""

from __future__ import annotations

import copy
from typing import Any

from trainer.schema import ConfigError

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
    if isinstance(model, dict):
        kind = model.get("kind", "gpt2")
        for key, old_default in _OLD_DEFAULTS.items():
            reads = key in _KIND_FIELDS.get(kind, ()) or (
                key == "tie_embeddings" and kind not in ("bert", "vit")
            )
            if not reads and model.get(key, None) == old_default:
                del model[key]
    return out
