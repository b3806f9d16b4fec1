"""Exact streaming accumulation of LM metrics across evaluation batches.

The accumulator keeps *sums and counts* — summed token loss (float64 on the host), token, byte and
top-k-correct counts (Python ints, so they never overflow) — and divides only in :meth:`compute`.
The result is therefore identical to a one-shot computation over the concatenated batches, however
the batches were sized or padded (token-weighted, not an average of per-batch averages).

Device values (jax arrays from a jitted eval step) are not read on :meth:`update`; they are queued
and fetched with one ``jax.device_get`` per :data:`FLUSH_EVERY` updates or at :meth:`compute`, so
the eval loop never waits on the host between batches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["FLUSH_EVERY", "MetricAccumulator", "finalize_metrics"]

#: Pending (unfetched) updates before the accumulator fetches them from the device in one go.
FLUSH_EVERY = 256
_LN2 = math.log(2.0)


def _as_int(value: Any, name: str) -> int:
    arr = np.asarray(value)
    if arr.ndim:
        arr = arr.sum()
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr) or float(arr) != math.floor(float(arr)):
            raise ValueError(f"{name} must be a whole number; got {value!r}")
    elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be a number; got {value!r}")
    out = int(arr)
    if out < 0:
        raise ValueError(f"{name} must be >= 0; got {out}")
    return out


def finalize_metrics(
    sum_loss: float,
    num_tokens: int,
    correct: Mapping[int, int] | None = None,
    num_bytes: int | None = None,
) -> dict[str, float]:
    """Turn exact totals into means.

    Parameters
    ----------
    sum_loss
        Summed per-token cross-entropy in nats.
    num_tokens
        Number of scored tokens (> 0).
    correct
        ``{k: number of tokens whose label is in the top k}``.
    num_bytes
        UTF-8 bytes of the scored text, for bits/byte.

    Returns
    -------
    dict
        ``loss``, ``perplexity`` (``inf`` on overflow), ``bits_per_token``, ``top{k}``,
        ``num_tokens`` and, when bytes are known, ``bits_per_byte`` and ``num_bytes``.
    """
    if num_tokens <= 0:
        raise ValueError("num_tokens must be > 0 to compute metrics (no scored tokens were seen)")
    loss = float(sum_loss) / num_tokens
    try:
        ppl = math.exp(loss)
    except OverflowError:
        ppl = math.inf
    out: dict[str, float] = {
        "loss": loss,
        "perplexity": ppl,
        "bits_per_token": loss / _LN2,
    }
    if num_bytes is not None:
        if num_bytes <= 0:
            raise ValueError(f"num_bytes must be > 0 for bits_per_byte; got {num_bytes}")
        out["bits_per_byte"] = float(sum_loss) / _LN2 / num_bytes
        out["num_bytes"] = float(num_bytes)
    for k in sorted(correct or {}):
        out[f"top{k}"] = (correct or {})[k] / num_tokens
    out["num_tokens"] = float(num_tokens)
    return out


def bits_per_byte(loss: float, bytes_per_token: float) -> float:
    """Bits per UTF-8 byte of a mean per-token loss in nats, given the text's bytes per token.

    The one formula every tjx program reports bits/byte with (the training line, validation, the
    evaluator): nats → bits (÷ ln 2), per token → per byte (÷ bytes/token).
    """
    if not bytes_per_token > 0:
        raise ValueError(f"bytes_per_token must be > 0; got {bytes_per_token}")
    return float(loss) / _LN2 / float(bytes_per_token)


def with_bits_per_byte(
    metrics: dict[str, float], bytes_per_token: float | None
) -> dict[str, float]:
    """``metrics`` (from :func:`finalize_metrics`) with ``bits_per_byte`` from the mean ``loss``
    and the text's ``bytes_per_token``; unchanged when that is unknown (``None`` or 0)."""
    if bytes_per_token:
        metrics["bits_per_byte"] = bits_per_byte(metrics["loss"], bytes_per_token)
    return metrics


class MetricAccumulator:
    """Streaming, token-weighted LM metrics (exact: sums in float64, counts in ints).

    Examples
    --------
    >>> acc = MetricAccumulator()
    >>> acc.update(sum_loss=6.0, num_tokens=3, correct={1: 2})
    >>> acc.update(sum_loss=2.0, num_tokens=1, correct={1: 0})
    >>> acc.compute()["loss"], acc.compute()["top1"]
    (2.0, 0.5)
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._sum_loss = 0.0
        self._num_tokens = 0
        self._num_bytes: int | None = None
        self._correct: dict[int, int] = {}
        self._keys: tuple[int, ...] | None = None  # top-k set fixed by the first update
        self._has_bytes: bool | None = None
        self._pending: list[tuple[Any, Any, dict[int, Any], Any]] = []

    def update(
        self,
        *,
        sum_loss: Any,
        num_tokens: Any,
        correct: Mapping[int, Any] | None = None,
        num_bytes: Any = None,
    ) -> None:
        """Add one batch's totals (host numbers or device arrays; arrays are not read here).

        Parameters
        ----------
        sum_loss
            Summed token loss in nats over the batch's scored tokens.
        num_tokens
            Number of scored tokens in the batch.
        correct
            ``{k: count}`` of top-k correct tokens; every update must give the same ``k`` set.
        num_bytes
            UTF-8 bytes the scored tokens encode; give it on every update or on none.
        """
        correct = dict(correct or {})
        keys = tuple(sorted(int(k) for k in correct))
        if any(k < 1 for k in keys):
            raise ValueError(f"correct keys are top-k values and must be >= 1; got {keys}")
        if self._keys is None:
            self._keys = keys
        elif keys != self._keys:
            raise ValueError(
                f"correct must have the same top-k keys on every update: first {self._keys}, "
                f"now {keys}"
            )
        has_bytes = num_bytes is not None
        if self._has_bytes is None:
            self._has_bytes = has_bytes
        elif has_bytes != self._has_bytes:
            raise ValueError(
                "num_bytes must be given on every update or on none (bits_per_byte would be wrong)"
            )
        self._pending.append(
            (sum_loss, num_tokens, {int(k): v for k, v in correct.items()}, num_bytes)
        )
        if len(self._pending) >= FLUSH_EVERY:
            self._flush()

    def update_stats(self, stats: Any, *, num_bytes: Any = None) -> None:
        """Add the output of :func:`~tjx.metrics.lm_stats` or a cross-entropy result object.

        Parameters
        ----------
        stats
            A mapping with ``sum_loss``, ``num_tokens`` and ``correct_top{k}`` entries, or an object
            with ``sum_loss``, ``num_tokens`` and optionally ``num_correct`` (top-1) attributes,
            such as ``tjx.kernels.CrossEntropyOutput``.
        num_bytes
            UTF-8 bytes the scored tokens encode (optional).
        """
        if isinstance(stats, Mapping):
            correct = {
                int(name.removeprefix("correct_top")): v
                for name, v in stats.items()
                if name.startswith("correct_top")
            }
            self.update(
                sum_loss=stats["sum_loss"],
                num_tokens=stats["num_tokens"],
                correct=correct,
                num_bytes=num_bytes,
            )
            return
        if not (hasattr(stats, "sum_loss") and hasattr(stats, "num_tokens")):
            raise ValueError(
                "stats must be a mapping from lm_stats or have sum_loss and num_tokens attributes; "
                f"got {type(stats).__name__}"
            )
        num_correct = getattr(stats, "num_correct", None)
        self.update(
            sum_loss=stats.sum_loss,
            num_tokens=stats.num_tokens,
            correct=None if num_correct is None else {1: num_correct},
            num_bytes=num_bytes,
        )

    def merge(self, other: MetricAccumulator) -> None:
        """Add another accumulator's totals (e.g. one per host, gathered by the caller)."""
        other._flush()
        if other._num_tokens == 0 and other._keys is None:
            return
        self.update(
            sum_loss=other._sum_loss,
            num_tokens=other._num_tokens,
            correct=dict(other._correct),
            num_bytes=other._num_bytes,
        )

    def _flush(self) -> None:
        if not self._pending:
            return
        # One transfer for every queued device value, instead of one sync per batch.
        pending = jax.device_get(self._pending)
        self._pending = []
        for sum_loss, num_tokens, correct, num_bytes in pending:
            n = _as_int(num_tokens, "num_tokens")
            loss = float(np.sum(np.asarray(sum_loss, dtype=np.float64)))
            self._sum_loss += loss
            self._num_tokens += n
            for k, v in correct.items():
                c = _as_int(v, f"correct[{k}]")
                if c > n:
                    raise ValueError(f"correct[{k}]={c} exceeds num_tokens={n}")
                self._correct[k] = self._correct.get(k, 0) + c
            if num_bytes is not None:
                self._num_bytes = (self._num_bytes or 0) + _as_int(num_bytes, "num_bytes")

    @property
    def num_tokens(self) -> int:
        """Scored tokens accumulated so far (fetches pending device values)."""
        self._flush()
        return self._num_tokens

    def totals(self) -> dict[str, Any]:
        """Exact totals: ``sum_loss`` (float64), ``num_tokens``, ``correct``, ``num_bytes``."""
        self._flush()
        return {
            "sum_loss": self._sum_loss,
            "num_tokens": self._num_tokens,
            "correct": dict(self._correct),
            "num_bytes": self._num_bytes,
        }

    def compute(self) -> dict[str, float]:
        """Metrics over everything accumulated: see :func:`finalize_metrics` for the keys.

        Raises
        ------
        ValueError
            If no scored token has been accumulated.
        """
        self._flush()
        return finalize_metrics(self._sum_loss, self._num_tokens, self._correct, self._num_bytes)
