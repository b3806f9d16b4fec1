"""The rules between a `DataConfig`'s fields and the model it feeds (`check_data_config`), that
its local sources are there (`check_local_sources`), whether a resumed chat run still reads its
template (`check_template`), and whether a resume reads its relative local sources in the folder
its run read them in (`read_in`, `read_elsewhere`). Messages name the fields as the caller's
``section`` holds them (``data.max_tokens``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tjx.data.builtin import BUILTIN_CORPORA
from tjx.data.chat.template import ChatTemplate
from tjx.data.errors import DataError
from tjx.data.mixture import check_mixture
from tjx.data.prepare import check_max_tokens
from tjx.data.run.config import DataConfig
from tjx.data.sources import check_local_source, is_local_source

__all__ = [
    "READ_IN",
    "check_data_config",
    "check_local_sources",
    "check_template",
    "read_elsewhere",
    "read_in",
]

#: The key of a run's ``data.json`` that names the folder its relative local sources were read in.
READ_IN = "read_in"


def check_data_config(
    cfg: DataConfig, task: str, *, section: str = "data", decoders: str = "a decoder"
) -> None:
    """Refuse data settings that cannot feed a model of objective ``task`` (tjx.nn's objective
    names: ``"lm"``, ``"mlm"``, ``"classify"``, ``"seq2seq"``) before anything is prepared.

    A cap below one batch (`check_max_tokens`), an invalid mixture (`check_mixture`); chat and
    preference data train a decoder (``task`` ``"lm"``, in the caller's words ``decoders``) on
    one source; an image model reads no mixture; a mixture reads its windows shuffled; a text
    field is text data's.

    Raises
    ------
    DataError
        The first rule broken, naming ``section``'s keys (a mixture's entries: `ValueError`).
    """
    names = {k: f"{section}.{k}" for k in ("max_tokens", "batch_size", "seq_len")}
    check_max_tokens(cfg.max_tokens, cfg.seq_len, cfg.batch_size, names=names)
    if cfg.sources is not None:
        check_mixture(cfg.sources, key=f"{section}.sources")
    if cfg.format != "text" and (task != "lm" or cfg.sources is not None):
        raise DataError(
            f"{section}.format: {cfg.format} data trains {decoders} on one {section}.source; set "
            f"{section}.format=text",
            argument="format",
        )
    if cfg.sources is not None and task == "classify":
        raise DataError(
            f"{section}.sources: an image model reads the digits images ({section}.source=digits), "
            "not a mixture",
            argument="sources",
        )
    if cfg.exclude and (cfg.sources is not None or cfg.format != "text" or task != "lm"):
        what = "a mixture" if cfg.sources is not None else f"{cfg.format} data"
        what = what if task == "lm" else f"a model of objective {task}"
        raise DataError(
            f"{section}.exclude: documents are excluded from one {section}.source of text "
            f"trained as a language model, not from {what}; drop {section}.exclude",
            argument="exclude",
        )
    if cfg.text_field != "text" and cfg.format != "text":
        raise DataError(
            f"{section}.text_field: {cfg.format} data reads its rows' "
            f"{section}.messages_field (or prompt/completion, chosen/rejected columns), not a text "
            f"field; drop {section}.text_field",
            argument="text_field",
        )
    if cfg.sources is not None and not cfg.shuffle:
        raise DataError(
            f"{section}.shuffle: a mixture reads each source's windows shuffled; drop "
            f"{section}.shuffle=false or train on one {section}.source",
            argument="shuffle",
        )


def check_local_sources(
    cfg: DataConfig, *, section: str = "data", resumed: Mapping[str, Any] | None = None
) -> str | None:
    """Refuse a local file or folder that is not there (`check_local_source`), ``source`` or each
    mixture entry's: cheap, so an app calls it while it reads its config, before any set-up.

    ``resumed``: the ``data.json`` of the run a command resumes, whose relative sources it reads
    in another folder than the run did (`read_elsewhere`): that line is added to the error, or,
    where the sources are there, returned for the app to print before it prepares them (a
    folder of the same name elsewhere may hold other files). ``None`` otherwise.

    Raises
    ------
    DataError
        ``"<section>.source: no such file or folder ..."`` (a mixture's:
        ``"<section>.sources[<i>].source: ..."``); ``argument`` as `check_local_source` sets it.
    """
    elsewhere = None if resumed is None else read_elsewhere(cfg, resumed, section=section)
    for key, spec in _named_sources(cfg, section):
        try:
            check_local_source(spec)
        except DataError as err:
            also = "" if elsewhere is None else f"; {elsewhere}"
            raise DataError(f"{key}: {err}{also}", argument=err.argument) from None
    return elsewhere


def _named_sources(cfg: DataConfig, section: str) -> list[tuple[str, str]]:
    """``(key, source)`` of ``cfg``'s ``source``, or of each mixture entry's."""
    if cfg.sources is None:
        return [(f"{section}.source", cfg.source)]
    return [(f"{section}.sources[{i}].source", str(e["source"])) for i, e in enumerate(cfg.sources)]


def _relative(spec: str, there: Path | None = None) -> bool:
    """Whether ``spec`` is a local path given relative to the folder a command runs in: local
    here (`is_local_source`), or, with ``there``, a file or folder in ``there``."""
    if spec in BUILTIN_CORPORA or Path(spec).expanduser().is_absolute():
        return False
    return is_local_source(spec) or (there is not None and (there / spec).exists())


def read_in(cfg: DataConfig) -> dict[str, str]:
    """What a run's ``data.json`` records of where ``cfg``'s local sources given as relative
    paths (``./corpus``) were read: ``{READ_IN: this process's folder}``, or nothing when no
    source is relative, so that a resume run in another folder can say why it reads other
    files (`read_elsewhere`)."""
    if any(_relative(spec) for _, spec in _named_sources(cfg, "data")):
        return {READ_IN: os.getcwd()}
    return {}


def read_elsewhere(
    cfg: DataConfig, description: Mapping[str, Any], *, section: str = "data"
) -> str | None:
    """A line for a resume of the run that ``description`` (its ``data.json``) describes, run in
    another folder than the one its relative local sources were read in (`read_in`): those
    paths now name other files, or none, and a resume reads the run's own data or is refused.
    ``None`` when the folder is the same, no source is relative, or the run recorded no folder
    (a run written before tjx-data 0.24)."""
    recorded = description.get(READ_IN)
    here = os.getcwd()
    if not isinstance(recorded, str) or Path(recorded) == Path(here):
        return None
    named = [(k, s) for k, s in _named_sources(cfg, section) if _relative(s, Path(recorded))]
    if not named:
        return None
    key, spec = named[0]
    what = f"{key} {spec}" + (f" (and {len(named) - 1} more)" if len(named) > 1 else "")
    return (
        f"{what} is a path relative to the folder a command runs in: the run read it in "
        f"{recorded}, this command runs in {here}; run it from {recorded} to read the run's files"
    )


def check_template(cfg: DataConfig, saved: str | None, *, section: str = "data") -> None:
    """Refuse a chat run's tokenizer folder whose chat template is not the one of fingerprint
    ``saved`` (what the run trained with; None: unknown): the same folder path passes a config
    check, yet every conversation would render (and mask) differently.

    Text data has no template and ``bpe``'s is the fixed ChatML; a folder that no longer reads
    is left to the preparation's own error.

    Raises
    ------
    DataError
        ``argument="tokenizer"``: another template.
    """
    if cfg.format == "text" or cfg.tokenizer == "bpe" or saved is None:
        return
    try:
        now = ChatTemplate.from_folder(cfg.tokenizer).fingerprint
    except DataError:
        return
    if saved != now:
        raise DataError(
            f"the chat template in {section}.tokenizer ({cfg.tokenizer}) is not the one this run "
            f"trained with (fingerprint {saved}, now {now})",
            argument="tokenizer",
        )
