"""A model layer's MLP built from the model's config: one construction for a dense layer's MLP
and an MoE layer's shared experts (a module of its own: ``configs`` imports ``mlp`` for its
section, so the builder that reads the whole config cannot live in ``mlp``)."""

from __future__ import annotations

from flax import nnx

from tjx.nn.configs import TransformerConfig
from tjx.nn.mlp import MLP


def model_mlp(config: TransformerConfig, mlp_dim: int, *, rngs: nnx.Rngs, out_std: float) -> MLP:
    """The `MLP` of a model's layer, ``mlp_dim`` wide, with the config's activation, biases, init,
    precision and implementation (``mlp.impl``; a dense layer's MLP and an MoE layer's shared
    experts alike).

    Parameters
    ----------
    config : TransformerConfig
        The model's config, its ``mlp.activation`` filled.
    mlp_dim : int
        The hidden width.
    rngs : nnx.Rngs
        The parameters' keys.
    out_std : float
        The output projection's init std (GPT-2 scales the residual branches').

    Returns
    -------
    MLP
    """
    assert config.mlp.activation is not None  # the config filled it (its family's)
    return MLP(
        config.d_model,
        mlp_dim,
        rngs=rngs,
        activation_name=config.mlp.activation,
        use_bias=config.use_bias,
        init_std=config.init.std,
        out_std=out_std,
        precision=config.precision,
        impl=config.mlp.impl,
    )
