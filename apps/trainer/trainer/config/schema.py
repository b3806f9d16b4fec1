"""The trainer's config schema (walked, read and written by `tjx.core.config.Schema`): which class
each package section is, the trainer's own keys in them and the key it fills. The packages load JAX:
their classes are imported when a section is first walked, never when the command line is parsed.
"""

from __future__ import annotations

from importlib import import_module

from tjx.core.config import ConfigError, Schema, choices, keyed, kind_at
from tjx.core.config.schema import Entry
from tjx.core.fields import setting
from trainer.config.grpo_settings import own_keys as grpo_own_keys

__all__ = ["KINDS", "PACKAGE_SECTIONS", "ConfigError", "choices", "keyed", "kind_of"]
__all__ += ["schema_of", "section_class", "setting"]

#: Each package section: the class it is (``module:NAME``; the model's is chosen by ``kind``).
PACKAGE_SECTIONS = {
    "model": "tjx.nn:MODEL_KINDS",
    "optimizer": "tjx.optim:OptimizerConfig",
    "mesh": "tjx.parallel:MeshConfig",
    "lora": "tjx.nn:LoraConfig",
    "preference": "tjx.nn:PreferenceConfig",
    "grpo": "tjx.nn:GrpoConfig",
}
#: The model kinds the trainer trains (``--help`` lists them without loading JAX).
KINDS = ("gpt2", "llama", "bert", "vit", "encdec")
#: The trainer's own keys of a section, before the class's fields.
OWN_KEYS: dict[str, dict[str, Entry]] = {
    "model": {
        "kind": (str, setting("gpt2", choices=KINDS, help="model family (tjx.nn.MODEL_KINDS)")),
        # The one trainer rule on a model field: its vocabulary is the tokenizer's by default.
        "vocab_size": (
            int | None,
            setting(None, min=2, help="tokens in the vocabulary; null: the tokenizer's"),
        ),
    },
    "lora": {
        "enabled": (
            bool,
            setting(False, help="train low-rank adapters only; the base model stays frozen"),
        ),
    },
    # GRPO's rollout (trainer.config.grpo_settings); the section's other keys are tjx.nn's loss.
    "grpo": grpo_own_keys(),
}


def section_class(section: str, kind: object = "gpt2") -> type:
    """The class of package section ``section`` (``"model"``: the one of ``kind``)."""
    module, name = PACKAGE_SECTIONS[section].split(":")
    found = getattr(import_module(module), name)
    if section != "model":
        return found  # type: ignore[no-any-return]
    if not isinstance(kind, str) or kind not in found:
        allowed = ", ".join(repr(k) for k in found)
        raise ConfigError(f"model.kind: {kind!r} is not allowed; choose one of {allowed}")
    return found[kind]  # type: ignore[no-any-return]


#: The model kind of plain config data (``gpt2`` where it names none): tjx.core.config reads it.
kind_of = kind_at("model", "gpt2")


def schema_of(root: type) -> Schema:
    """tjx.core.config's `Schema` of a config tree whose top section is ``root``
    (`trainer.config.typed`'s ``Config``), with the trainer's sections and own keys."""
    return Schema(
        root,
        section_class,
        package_sections=frozenset(PACKAGE_SECTIONS),
        own_keys=OWN_KEYS,
        filled={"optimizer.schedule.total_steps": "train.steps"},
        kind_of=kind_of,
    )
