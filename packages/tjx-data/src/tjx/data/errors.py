"""The one error type of tjx.data: bad input is reported before any training starts."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad data input: a missing file, undecodable text, an empty dataset, mismatched shards, ...

    A subclass of ``ValueError`` so callers that validate configs can catch both at once.
    """
