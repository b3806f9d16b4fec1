"""Model utilities: parameter counts and a summary table (FLOPs per token live in ``flops``)."""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from tjx.nn.configs import TransformerConfig
from tjx.nn.flops import flops_per_token, matmul_param_count

__all__ = ["config_param_count", "count_params", "flops_per_token", "matmul_param_count", "summary"]


def count_params(model: nnx.Module) -> int:
    """Number of scalar parameters (``nnx.Param`` leaves; abstract models from
    ``nnx.eval_shape`` work too).

    Parameters
    ----------
    model : nnx.Module
        A concrete or abstract model.

    Returns
    -------
    int
        Total number of parameter scalars.
    """
    return int(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


@functools.lru_cache(maxsize=64)
def config_param_count(config: TransformerConfig) -> int:
    """Parameter count of the model ``config`` builds, without allocating it (``eval_shape``).

    Parameters
    ----------
    config : TransformerConfig
        Any config ``build_model`` accepts (hashable: results are cached).

    Returns
    -------
    int
        Parameter count.
    """
    from tjx.nn.registry import build_model  # registry imports every model module

    abstract = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))
    return count_params(abstract)


def summary(model: nnx.Module) -> str:
    """A text table: parameter name, shape, dtype, logical axes, count; total at the end.

    Parameters
    ----------
    model : nnx.Module
        The model.

    Returns
    -------
    str
        The table, one parameter per line.
    """
    rows = [("name", "shape", "dtype", "axes", "params")]
    total = 0
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = var.get_value()
        size = int(np.prod(value.shape))
        total += size
        axes = var.get_metadata().get("out_sharding") or ()
        rows.append(
            (
                ".".join(str(p) for p in path),
                str(tuple(value.shape)),
                str(value.dtype),
                ",".join(str(a) for a in axes),
                f"{size:,}",
            )
        )
    rows.append(("total", "", "", "", f"{total:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)
