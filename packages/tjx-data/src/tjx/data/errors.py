"""The one error type of tjx.data: bad input is reported before any training starts."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad data input: a missing file, undecodable text, an empty dataset, mismatched shards, ...

    A subclass of ``ValueError`` so callers that validate configs can catch both at once.

    Parameters
    ----------
    *args:
        The message, as for any exception.
    argument:
        The argument of the raising function that was at fault (``"source"``, ``"vocab_size"``,
        ``"batch_size"``, ...), or ``None`` where no single one was. An app words the error by
        its own name for that argument (a config key, a flag) from this field, without parsing
        the message. It survives pickling (errors raised in worker processes).
    """

    def __init__(self, *args: object, argument: str | None = None) -> None:
        super().__init__(*args)
        self.argument = argument
