"""The rules between a `DataConfig`'s fields and the model it feeds (`check_data_config`), that
its local sources are there (`check_local_sources`), and whether a resumed chat run still reads
its template (`check_template`). Messages name the fields as the caller's ``section`` holds them
(``data.max_tokens``)."""

from __future__ import annotations

from tjx.data.chat.template import ChatTemplate
from tjx.data.errors import DataError
from tjx.data.mixture import check_mixture
from tjx.data.prepare import check_max_tokens
from tjx.data.run.config import DataConfig
from tjx.data.sources import check_local_source

__all__ = ["check_data_config", "check_local_sources", "check_template"]


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


def check_local_sources(cfg: DataConfig, *, section: str = "data") -> None:
    """Refuse a local file or folder that is not there (`check_local_source`), ``source`` or each
    mixture entry's: cheap, so an app calls it while it reads its config, before any set-up.

    Raises
    ------
    DataError
        ``"<section>.source: no such file or folder ..."`` (a mixture's:
        ``"<section>.sources[<i>].source: ..."``); ``argument`` as `check_local_source` sets it.
    """
    named = [(f"{section}.source", cfg.source)] if cfg.sources is None else []
    for i, entry in enumerate(cfg.sources or []):
        named.append((f"{section}.sources[{i}].source", str(entry["source"])))
    for key, spec in named:
        try:
            check_local_source(spec)
        except DataError as err:
            raise DataError(f"{key}: {err}", argument=err.argument) from None


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
