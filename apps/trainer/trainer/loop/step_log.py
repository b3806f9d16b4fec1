"""A training loop's bookkeeping between log lines: :class:`StepLog` (throughput, MFU, bits/byte
and an MoE model's router statistics over the steps since the last line) and
:class:`ProfileWindow` (a ``jax.profiler`` trace of a range of steps)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from tjx.metrics.accumulate import bits_per_byte
from tjx.metrics.devices import compute_peak_flops
from tjx.metrics.moe import moe_metrics
from tjx.metrics.throughput import ThroughputMeter


class SavedSum(TypedDict):
    """One router sum as a checkpoint's JSON keeps it, exactly: its dtype's name and its values
    (nested lists, as ``numpy.ndarray.tolist`` gives them)."""

    dtype: str
    values: object


class Unlogged(TypedDict):
    """What `StepLog.unlogged` saves: the router sums by statistic (None: one the model does not
    keep)."""

    moe: dict[str, SavedSum | None]


class StepLog:
    """The scalars of each log step, from the steps' own metrics and what happened between.

    Parameters
    ----------
    meter
        Counts the units each step scores; its report gives the rate and MFU of a line.
    unit
        What a step scores (``tokens``, ``images``): the rate is logged as ``{unit}_per_s``.
    bytes_per_token
        The text's UTF-8 bytes per token: adds ``bits_per_byte`` of the step's loss (None: not).
    moe_layers
        The model layer index of each MoE row (tjx-nn's ``moe_layers``), for the per-layer names.
    """

    def __init__(
        self,
        meter: ThroughputMeter,
        *,
        unit: str = "tokens",
        bytes_per_token: float | None = None,
        moe_layers: Sequence[int] | None = None,
    ) -> None:
        self.meter, self.unit, self.bytes_per_token = meter, unit, bytes_per_token
        self.moe_layers = moe_layers
        self._moe: chex.ArrayTree | None = None  # router sums since the last line, on the device

    @classmethod
    def on_devices(
        cls, flops_per_unit: tuple[float, float], compute_dtype: DTypeLike, **options: Any
    ) -> StepLog:
        """A `StepLog` whose meter counts this run's MFU over every device (``jax.device_count``).

        Parameters
        ----------
        flops_per_unit
            A unit's FLOPs by tjx's count (causal attention at half, as MaxText and torchtitan:
            ``mfu``) and by PaLM's (the whole score matrix: ``mfu_palm``).
        compute_dtype
            The model's compute dtype: the device's peak for it (`compute_peak_flops`); on CPU
            or a device without a figure no MFU is logged, and nothing is said about it.
        **options
            ``unit``, ``bytes_per_token``, ``moe_layers`` (as `StepLog` takes them).
        """
        meter = ThroughputMeter(
            flops_per_token=flops_per_unit[0],
            palm_flops_per_token=flops_per_unit[1],
            peak_flops_per_device=compute_peak_flops(compute_dtype, warn=False),
            num_devices=jax.device_count(),
        )
        return cls(meter, **options)

    def step(self, units: int, metrics: dict[str, chex.ArrayTree]) -> dict[str, chex.ArrayTree]:
        """Count one dispatched step of ``units``; ``metrics`` without its ``"moe"`` sums, which
        are added up on the device (sums: exact over a line's steps; no device read here)."""
        self.meter.update(units)
        moe = metrics.pop("moe", None)
        if moe is not None:
            old = self._moe
            self._moe = moe if old is None else jax.tree.map(lambda a, b: a + b, old, moe)
        return metrics

    def unlogged(self) -> Unlogged | None:
        """The router sums of the steps since the last line, as plain data (a checkpoint's:
        `resume` adds them back, so the first line after a resume covers the steps the
        uninterrupted run's line did); None: none held."""
        if self._moe is None:
            return None
        sums = jax.device_get(self._moe)
        # (a statistic the model does not keep is None: DeepSeek's indexer's without one)
        return {
            "moe": {
                k: None if v is None else {"dtype": str(v.dtype), "values": np.asarray(v).tolist()}
                for k, v in sums.items()
            }
        }

    def resume(self, unlogged: Unlogged | None) -> None:
        """Hold a checkpoint's `unlogged` sums again, as saved (bit for bit: each value is a
        float32 or an integer, which JSON keeps exactly); None: nothing."""
        if unlogged and "moe" in unlogged:
            moe = unlogged["moe"]
            self._moe = {
                k: None if v is None else jnp.asarray(np.asarray(v["values"], v["dtype"]))
                for k, v in moe.items()
            }

    def scalars(self, metrics: dict[str, chex.ArrayTree]) -> dict[str, float]:
        """A log line: the step's ``metrics`` as floats, then ``bits_per_byte``, ``{unit}_per_s``,
        the router metrics and ``mfu``/``mfu_palm`` where the device's peak is known; starts the
        next interval."""
        out = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
        if self.bytes_per_token:  # the loss in bits, as the validation's bits_per_byte
            out["bits_per_byte"] = bits_per_byte(out["loss"], self.bytes_per_token)
        rate = self.meter.report()  # over the steps since the last line
        out[f"{self.unit}_per_s"] = rate["tokens_per_s"]
        if self._moe is not None:  # balance, dropped share, each layer's expert load
            sums, self._moe = jax.device_get(self._moe), None
            out |= moe_metrics(sums, per_layer=True, layers=self.moe_layers)
        if rate.get("mfu") is not None:
            out["mfu"], out["mfu_palm"] = float(rate["mfu"]), float(rate["mfu_palm"])
        return out


class ProfileWindow:
    """A ``jax.profiler`` trace into ``folder`` of the steps ``steps = (A, B)``: from before step
    ``A`` runs until step ``B`` is done (its outputs ready); ``steps`` None traces nothing."""

    def __init__(self, folder: str | Path, steps: tuple[int, int] | None) -> None:
        self.folder, self.steps, self.active = str(folder), steps, False

    def before(self, step: int) -> None:
        """Start the trace if ``step`` is the window's first."""
        if self.steps is not None and step == self.steps[0]:
            jax.profiler.start_trace(self.folder)
            self.active = True

    def after(self, done: int, outputs: chex.ArrayTree) -> None:
        """Stop the trace at the window's end: ``done`` steps done, ``outputs`` computed."""
        if self.active and self.steps is not None and done == self.steps[1]:
            jax.block_until_ready(outputs)
            self.close()

    def close(self) -> None:
        """Stop a trace still running (the run ended inside the window)."""
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
