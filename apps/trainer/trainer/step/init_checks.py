"""An app's checks of where a run starts, before anything is built: a Hugging Face checkpoint
(`hf_start_config`, then `check_hf_settings`) or another run's model (`clash_names`). Each
problem is a one-line ``ValueError`` naming the app's keys (``model.kind``, ``data.tokenizer``:
the defaults), for the app to prefix with its flag."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tjx.nn.configs import GPT2Config, TransformerConfig
from tjx.nn.hf import read_hf_config
from tjx.nn.hf.gpt2 import HF_GPT2_NAMES
from tjx.nn.hf.io import is_hub_id
from tjx.nn.hf.start import config_clashes, hf_conflicts

__all__ = ["check_hf_settings", "clash_names", "hf_start_config"]


def hf_start_config(source: str, kind: str, *, key: str = "model.kind") -> TransformerConfig | None:
    """The config of Hugging Face checkpoint ``source`` (a folder or a hub name) for a model of
    ``kind`` (``key`` in messages); None for a GPT-2 hub name (``gpt2``: known without
    downloading). Any other source is read by its ``config.json`` only.

    Raises
    ------
    ValueError
        ``source`` is neither, its config does not read (`read_hf_config`), or its weights are
        not of ``kind`` (``"gpt2"``, or ``"llama"`` for the LLaMA family).
    """
    path = Path(source).expanduser()
    if not path.exists() and source in HF_GPT2_NAMES:
        checkpoint, theirs = None, "gpt2"
    elif path.exists() or is_hub_id(source):
        checkpoint = read_hf_config(str(path) if path.exists() else source)
        theirs = "gpt2" if isinstance(checkpoint, GPT2Config) else "llama"
    else:
        raise ValueError(
            f"{source!r} is neither a folder nor a hub name ({', '.join(HF_GPT2_NAMES)}, or "
            "org/name)"
        )
    if kind != theirs:
        what = "GPT-2" if theirs == "gpt2" else "LLaMA-family"
        raise ValueError(f"loads {what} weights; {key} must be {theirs!r}, got {kind!r}")
    return checkpoint


def check_hf_settings(
    checkpoint: TransformerConfig | None,
    settings: Mapping[str, object],
    *,
    source: str,
    tokenizer: str,
    section: str = "model",
    tokenizer_key: str = "data.tokenizer",
) -> None:
    """Refuse model ``settings`` (field → value the app's config gives, `hf_conflicts`) that
    ``checkpoint`` (`hf_start_config`'s, from ``source``) fixes otherwise, and a GPT-2 start
    whose ``tokenizer`` is neither ``gpt2`` nor the checkpoint folder (its ids would mean other
    tokens). Messages name the settings below ``section``.

    Raises
    ------
    ValueError
        The tokenizer, else every conflicting setting, named.
    """
    gpt2 = checkpoint is None or isinstance(checkpoint, GPT2Config)
    if gpt2 and tokenizer != "gpt2" and Path(tokenizer).expanduser() != Path(source).expanduser():
        raise ValueError(
            f"GPT-2 weights need {tokenizer_key} 'gpt2' (or the checkpoint folder), got "
            f"{tokenizer!r}"
        )
    clashes = hf_conflicts(settings, checkpoint)
    if clashes:
        named = ", ".join(f"{section}.{k} {v!r}" for k, v in clashes.items())
        family = "GPT-2" if gpt2 else "the checkpoint's"
        raise ValueError(
            f"{family} weights fix the architecture, so {named} cannot apply; leave those "
            "settings unset"
        )


def clash_names(
    ours: TransformerConfig, theirs: TransformerConfig, *, vocab: bool, section: str = "model"
) -> str:
    """Up to three of `config_clashes` of two model configs (``theirs``: a run's), named as
    the app's keys below ``section``: ``model.d_model 64 (the run's: 32)``; ``""`` if none."""
    clashes = config_clashes(ours, theirs, vocab=vocab)
    if "class" in clashes:
        return "{}.kind ({} vs the run's {})".format(section, *clashes["class"])
    named = [f"{section}.{k} {a!r} (the run's: {b!r})" for k, (a, b) in clashes.items()]
    return ", ".join(named[:3])
