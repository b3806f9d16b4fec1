"""A model section written in an older layout, read as today's (`migrate_model_section`).

Apps kept a flat model section before its settings were tjx.nn's configs (tjx-nn 0.8): the
precision as two top keys, and a saved section listed every key of every kind. tjx-nn 0.11 held
Llama 3's RoPE scaling as four numbers. Before tjx-nn 0.29 the MoE, MLA and Gated DeltaNet
settings were flat keys of the section (``num_experts``, ``kv_latent_dim``, ``delta_key_heads``
...), now the ``moe``, ``mla`` and ``delta`` sections; before tjx-nn 0.30 a family's switches
(``kv_shared_layers`` ...), now that family's option section (`FLAT_FAMILY_KEYS`), and the
multi-token prediction, init, MLP, norm and position settings (``mtp_depths``, ``init_std``,
``mlp_dim``, ``norm_eps``, ``rope_theta`` ...: the ``mtp``, ``init``, ``mlp``, ``norm`` and
``position`` sections; ``norm`` and ``position``, names then, are ``norm.kind`` and
``position.kind``); until tjx-nn 0.30 the attention settings (``sliding_window``,
``attn_logit_softcap`` ...), now the ``attention`` section, and another family's switches
(``global_nope`` ...), now its option section (`tjx.nn.configs.FLAT_SECTION_KEYS`). Files
written then (presets, users' files, a run's saved config, a checkpoint's model.json) still read:
their keys are moved to where they are now, and the flat defaults a kind never read are dropped.
"""

from __future__ import annotations

import copy
from typing import Any

from tjx.nn.configs import FLAT_SECTION_KEYS
from tjx.nn.family_config import FLAT_FAMILY_KEYS
from tjx.nn.gated_deltanet import FLAT_DELTA_KEYS
from tjx.nn.mla_config import FLAT_MLA_KEYS
from tjx.nn.mlp_config import FLAT_MLP_KEYS
from tjx.nn.moe.config import FLAT_MOE_KEYS
from tjx.nn.mtp_config import FLAT_MTP_KEYS
from tjx.nn.norm_config import FLAT_NORM_KEYS
from tjx.nn.params import FLAT_INIT_KEYS
from tjx.nn.rope_scaling import RopeScaling

__all__ = ["RENAMED_MODEL_KEYS", "migrate_model_section", "nest_section_keys"]

#: The keys of the flat layout before tjx-nn 0.8 (a section holding one is of that layout).
_PRE_08_KEYS = {
    "param_dtype": "precision.param_dtype",
    "compute_dtype": "precision.compute_dtype",
}
#: The component sections' flat keys → their key in the section (moe, mla, delta: before
#: tjx-nn 0.29; mtp, init, mlp, norm and a family's: before 0.30; attention and another
#: family's: until 0.30).
_SECTION_KEYS = {
    **{old: f"moe.{new}" for old, new in FLAT_MOE_KEYS.items()},
    **{old: f"mla.{new}" for old, new in FLAT_MLA_KEYS.items()},
    **{old: f"delta.{new}" for old, new in FLAT_DELTA_KEYS.items()},
    **FLAT_FAMILY_KEYS,
    **{old: f"mtp.{new}" for old, new in FLAT_MTP_KEYS.items()},
    **{old: f"init.{new}" for old, new in FLAT_INIT_KEYS.items()},
    **{old: f"mlp.{new}" for old, new in FLAT_MLP_KEYS.items()},
    **{old: f"norm.{new}" for old, new in FLAT_NORM_KEYS.items()},
    **FLAT_SECTION_KEYS,
}
#: Old key of a model section → the key it is now.
RENAMED_MODEL_KEYS = _PRE_08_KEYS | _SECTION_KEYS
#: Keys the old flat section saved for every kind, with the value they then held unless the kind
#: read them: dropped where the kind's class has no such field (a saved GPT-2 section lists ViT's
#: image size) or never reads it (BERT's always-tied head).
_OLD_DEFAULTS = {"image_size": 8, "patch_size": 2, "num_classes": 10, "tie_embeddings": True}
_KIND_FIELDS = {"vit": ("image_size", "patch_size", "num_classes")}


def _move(section: dict[str, Any], old: str, new: str, key: str) -> None:
    """Move ``section[old]`` to dotted ``new`` below it, in place (a non-mapping on the way is
    replaced); ``key`` is the section's path in messages. Both set: a ``ValueError``, as neither
    may silently win."""
    if old not in section:
        return
    if new.startswith(f"{old}.") and isinstance(section[old], dict):
        return  # a key that became a section of its name (``norm``): a mapping is today's
    value, node = section.pop(old), section
    *parents, leaf = new.split(".")
    for part in parents:
        child = node.get(part)
        node[part] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    if leaf in node:
        raise ValueError(
            f"{key}.{old}: is {key}.{new} now, which is set too; keep only {key}.{new}"
        )
    node[leaf] = value


def nest_section_keys(fields: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of ``fields`` (a model section's keys or a config's fields) whose flat keys of a
    component section (MoE, MLA, Gated DeltaNet, attention, position, MTP, init, MLP, norm, a
    family's options) are moved into it (``moe``, ``mla``, ``delta``, ``attention``,
    ``position``, ``mtp``, ``init``, ``mlp``, ``norm``, the family's; ``key``: its path in
    messages; an old key beside its new one: a ``ValueError``)."""
    out = copy.deepcopy(fields)
    for old, new in _SECTION_KEYS.items():
        _move(out, old, new, key)
    return out


def migrate_model_section(
    section: dict[str, Any], *, key: str = "model", old_layout: bool = False
) -> dict[str, Any]:
    """A copy of model ``section`` (``kind``: a key of `MODEL_KINDS`, default ``gpt2``) in
    today's keys.

    Parameters
    ----------
    section : dict
        The section as plain data.
    key : str
        Its path in messages.
    old_layout : bool
        Another section of the same config holds a key of the old layout (a saved config holds
        them all); so does this one if it holds ``param_dtype`` or ``compute_dtype``. An old ViT
        then read grey images (``num_channels`` 1 unless set).

    Raises
    ------
    ValueError
        An old key and its new one are both set, or the legacy RoPE numbers are invalid.
    """
    out = copy.deepcopy(section)
    kind = out.get("kind", "gpt2")
    if kind == "vit" and (old_layout or any(k in out for k in _PRE_08_KEYS)):
        out.setdefault("num_channels", 1)
    for old, new in RENAMED_MODEL_KEYS.items():
        _move(out, old, new, key)
    position = out.get("position")
    if isinstance(position, dict) and isinstance(position.get("rope_scaling"), list):
        scaling = RopeScaling.parse(position["rope_scaling"], f"{key}.rope_scaling")
        position["rope_scaling"] = {} if scaling is None else scaling.as_dict()
    for name, old_default in _OLD_DEFAULTS.items():
        reads = name in _KIND_FIELDS.get(kind, ()) or (
            name == "tie_embeddings" and kind not in ("bert", "vit")
        )
        if not reads and out.get(name, None) == old_default:
            del out[name]
    return out
