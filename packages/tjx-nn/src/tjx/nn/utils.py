"""Model utilities: parameter counts, FLOPs per token (for MFU) and a summary table."""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from tjx.nn.configs import TransformerConfig


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


def flops_per_token(config: TransformerConfig, seq_len: int) -> float:
    """Training FLOPs per token: ``6·N + 12·L·d·s``.

    ``N`` is the parameter count of the model ``config`` builds (embeddings included: a tied
    table is also the output matmul); ``6·N`` covers forward (2·N) and backward (4·N) matmuls.
    ``12·L·d·s`` is the attention score and value matmuls (``QKᵀ`` and ``PV``, 2·2·s·d each per
    layer forward, ×3 for backward) at sequence length ``s`` with ``d = heads·head_dim``
    (PaLM appendix B). Causal masking is not subtracted (the usual MFU convention).

    Parameters
    ----------
    config : TransformerConfig
        The model's config.
    seq_len : int
        Training sequence length (>= 1).

    Returns
    -------
    float
        FLOPs per trained token (forward + backward).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1; got {seq_len}")
    assert config.head_dim is not None
    attn_dim = config.num_heads * config.head_dim
    n = config_param_count(config)
    return float(6 * n + 12 * config.num_layers * attn_dim * seq_len)


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
