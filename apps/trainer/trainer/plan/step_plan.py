"""A model's train step as facts, without data or a device: what a plan compiles and estimates.

`batch_shapes` is the batch a model's objective reads, in tjx.data's layout (the objectives'
table: a ViT's images and labels, every token objective's four token arrays), as shapes and
dtypes: a compile over abstract inputs takes them as they are. `roofline_inputs` is what
tjx-metrics' roofline ``estimate`` needs of the step: the units it scores, the model's FLOPs
(causal attention at half, MaxText's and torchtitan's convention, and PaLM's full count) and the
prices of tjx.kernels' custom calls.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.typing import DTypeLike

from tjx import kernels
from tjx.metrics.accelerators import Accelerator
from tjx.nn.configs import TransformerConfig
from tjx.nn.flops import flops_per_unit
from tjx.nn.objectives import objective_of
from trainer.config.seams import Record

__all__ = ["TOKEN_KEYS", "batch_shapes", "roofline_inputs"]

#: The loader's token batch (tjx.data's layout): every token objective reads from these.
TOKEN_KEYS = ("inputs", "targets", "segment_ids", "positions")


def batch_shapes(
    task: str, rows: int, seq_len: int, *, image_size: int = 0, num_channels: int = 0
) -> dict[str, tuple[tuple[int, ...], DTypeLike]]:
    """``{key: (shape, dtype)}`` of a batch of ``rows`` for an objective named ``task``.

    Parameters
    ----------
    task : str
        The objective's name (`tjx.nn.Objective.name`): "classify" reads images and labels,
        every other objective the loader's four token arrays.
    rows, seq_len : int
        The batch's rows and (token objectives) its tokens per row.
    image_size, num_channels : int
        A classifier's images (the config's ``image_shape``); unused for tokens.

    Examples
    --------
    >>> batch_shapes("lm", 2, 4)["inputs"][0]
    (2, 4)
    """
    if task == "classify":
        return {
            "images": ((rows, image_size, image_size, num_channels), jnp.float32),
            "labels": ((rows,), jnp.int32),
        }
    return {k: ((rows, seq_len), jnp.int32) for k in TOKEN_KEYS}


def roofline_inputs(
    config: TransformerConfig, seq_len: int, units: int, context_ways: int, device: Accelerator
) -> Record:
    """tjx-metrics' ``estimate`` arguments of a step scoring ``units`` (tokens or images).

    Parameters
    ----------
    config : TransformerConfig
        The model.
    seq_len : int
        Tokens per window (ignored for images).
    units : int
        What one step scores (`Objective.units_per_window` times its batch rows).
    context_ways : int
        Devices each sequence is split over (``mesh.context``).
    device : Accelerator
        The device table's entry the step is compiled for (its ``device_kind`` and
        ``compute_capability``: the kernels' launches).

    Returns
    -------
    dict
        ``units``, ``unit``, ``model_flops`` (causal attention at half, then full) and
        ``custom_call_cost``.
    """
    objective = objective_of(config)
    # Under a context split only each device's own block is causal: the others are priced whole
    # (its causal half overcounted: 1/C more attention work than is done).
    causal = objective.name in ("lm", "seq2seq") and context_ways == 1
    flops = (flops_per_unit(config, seq_len, causal_half=half) * units for half in (True, False))
    cost = kernels.roofline_costs(
        causal=causal, device_kind=device.device_kind, compute_capability=device.compute_capability
    )
    return {
        "units": units,
        "unit": objective.unit,
        "model_flops": tuple(flops),
        "custom_call_cost": cost,
    }
