"""Tokens/s and MFU from wall-clock time between log steps.

JAX dispatches asynchronously, so timing one step measures only the dispatch. The meter therefore
measures *intervals*: the caller counts tokens each step (a host integer known from the batch
shape — no device read) and asks for a report every N steps, right after something has synchronised
with the device (the logger's one ``jax.device_get`` of the step's metrics does that). Over an
interval of many steps the dispatch queue's depth is negligible, so tokens / elapsed is the true
throughput.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ThroughputMeter", "mfu"]


def mfu(
    tokens_per_s: float,
    flops_per_token: float,
    peak: float | None,
    *,
    num_devices: int = 1,
) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all devices used.

    Parameters
    ----------
    tokens_per_s
        Global throughput (all devices together).
    flops_per_token
        Model FLOPs per token (:func:`~tjx.metrics.transformer_flops_per_token`).
    peak
        Peak FLOP/s of *one* device (:func:`~tjx.metrics.device_peak_flops`); ``None`` → ``None``.
    num_devices
        Devices the throughput was achieved on.

    Returns
    -------
    float or None
        A fraction (0.4 = 40 %), or ``None`` when the peak is unknown.

    Examples
    --------
    >>> mfu(1000.0, 1e9, 1e13, num_devices=2)
    0.05
    """
    for name, value in (("tokens_per_s", tokens_per_s), ("flops_per_token", flops_per_token)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ValueError(f"{name} must be a non-negative number; got {value!r}")
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"num_devices must be a positive int; got {num_devices!r}")
    if peak is None:
        return None
    if isinstance(peak, bool) or not isinstance(peak, numbers.Real) or peak <= 0:
        raise ValueError(f"peak must be a positive number of FLOP/s or None; got {peak!r}")
    return float(tokens_per_s) * float(flops_per_token) / (float(peak) * num_devices)


class ThroughputMeter:
    """Interval throughput meter: tokens/s, steps/s, step time and (optionally) MFU.

    Parameters
    ----------
    flops_per_token
        Model FLOPs per token; enables ``tflops_per_device`` and ``mfu`` in reports (tjx's
        convention: causal attention at half, as MaxText and torchtitan count).
    palm_flops_per_token
        The same model's FLOPs per token by PaLM's convention (the whole causal score matrix);
        adds ``mfu_palm`` to reports, to compare with figures quoted that way.
    peak_flops_per_device
        Peak FLOP/s of one device (``None`` → ``mfu`` is ``None``).
    num_devices
        Devices sharing the work.
    clock
        Seconds as a float; defaults to :func:`time.perf_counter` (injectable for tests).

    Examples
    --------
    >>> t = iter([0.0, 2.0])
    >>> meter = ThroughputMeter(clock=lambda: next(t))
    >>> meter.update(tokens=4096)
    >>> meter.report()["tokens_per_s"]
    2048.0
    """

    def __init__(
        self,
        *,
        flops_per_token: float | None = None,
        palm_flops_per_token: float | None = None,
        peak_flops_per_device: float | None = None,
        num_devices: int = 1,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
            raise ValueError(f"num_devices must be a positive int; got {num_devices!r}")
        if flops_per_token is not None and not flops_per_token > 0:
            raise ValueError(f"flops_per_token must be > 0 or None; got {flops_per_token!r}")
        if palm_flops_per_token is not None and not palm_flops_per_token > 0:
            raise ValueError(
                f"palm_flops_per_token must be > 0 or None; got {palm_flops_per_token!r}"
            )
        if peak_flops_per_device is not None and not peak_flops_per_device > 0:
            raise ValueError(
                f"peak_flops_per_device must be > 0 or None; got {peak_flops_per_device!r}"
            )
        self.flops_per_token = flops_per_token
        self.palm_flops_per_token = palm_flops_per_token
        self.peak_flops_per_device = peak_flops_per_device
        self.num_devices = num_devices
        self._clock = clock or time.perf_counter
        self.total_tokens = 0
        self.total_steps = 0
        self.reset()

    def reset(self) -> None:
        """Start a new interval now (e.g. after compilation, so it does not count)."""
        self._start = self._clock()
        self._tokens = 0
        self._steps = 0

    def update(self, tokens: int | np.integer[Any], steps: int = 1) -> None:
        """Count the tokens of ``steps`` finished (dispatched) steps; a host int, no device read."""
        # numbers.Integral admits Python and NumPy ints, not jax arrays (reading one would sync).
        if isinstance(tokens, bool) or not isinstance(tokens, numbers.Integral) or tokens < 0:
            raise ValueError(f"tokens must be a non-negative host int; got {tokens!r}")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"steps must be a non-negative int; got {steps!r}")
        self._tokens += int(tokens)
        self._steps += int(steps)
        self.total_tokens += int(tokens)
        self.total_steps += int(steps)

    def report(self, *, reset: bool = True) -> dict[str, Any]:
        """Throughput over the interval since the last report / reset.

        Parameters
        ----------
        reset
            Start a new interval afterwards (default).

        Returns
        -------
        dict
            ``tokens_per_s``, ``steps_per_s``, ``step_time_s`` (mean wall time per step),
            ``tokens_per_s_per_device``, ``interval_s``, ``total_tokens`` and, with
            ``flops_per_token``, ``tflops_per_device`` and ``mfu`` (``None`` without a peak),
            and ``mfu_palm`` with ``palm_flops_per_token``.
        """
        now = self._clock()
        elapsed = now - self._start
        if elapsed <= 0:
            # No time has passed (or a non-monotonic clock): rates are undefined, not infinite.
            tokens_per_s = steps_per_s = float("nan")
        else:
            tokens_per_s = self._tokens / elapsed
            steps_per_s = self._steps / elapsed
        out: dict[str, Any] = {
            "tokens_per_s": tokens_per_s,
            "tokens_per_s_per_device": tokens_per_s / self.num_devices,
            "steps_per_s": steps_per_s,
            "step_time_s": elapsed / self._steps if self._steps else float("nan"),
            "interval_s": elapsed,
            "total_tokens": self.total_tokens,
        }
        if self.flops_per_token is not None:
            achieved = tokens_per_s * self.flops_per_token / self.num_devices
            out["tflops_per_device"] = achieved / 1e12
            out["mfu"] = (
                None
                if self.peak_flops_per_device is None or elapsed <= 0
                else mfu(
                    tokens_per_s,
                    self.flops_per_token,
                    self.peak_flops_per_device,
                    num_devices=self.num_devices,
                )
            )
        if self.palm_flops_per_token is not None and out.get("mfu") is not None:
            out["mfu_palm"] = out["mfu"] * self.palm_flops_per_token / self.flops_per_token
        if reset:
            self._start = now
            self._tokens = 0
            self._steps = 0
        return out
