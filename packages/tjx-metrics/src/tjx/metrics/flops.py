"""Model FLOPs per token for dense decoder transformers (training: forward + backward).

Two conventions, both reported by the trainer:

    mfu       FLOPs/token = 6·N + 6·L·d·s    causal attention at half: MaxText (since 2025),
                                             torchtitan (the default here)
    mfu_palm  FLOPs/token = 6·N + 12·L·d·s   PaLM (Chowdhery et al. 2022, appendix B), nanoGPT,
                                             Megatron: the full score matrix

* ``6·N``: each parameter takes part in one multiply-add (2 FLOPs) in the forward pass and two in
  the backward pass (gradients w.r.t. activations and w.r.t. weights), so 2 + 4 = 6 FLOPs per
  parameter per token. ``N`` is the parameter count you pass (PaLM and nanoGPT use the full count;
  embedding lookups are not matmuls, so passing the non-embedding count is the stricter choice —
  either way, say which one you report; tjx-nn's ``flops_per_token`` counts matmul weights only:
  no lookup tables, a tied embedding once, as the unembedding).
* the attention score ``Q·Kᵀ`` and the weighted sum ``A·V`` are matmuls without parameters; per
  layer and token each costs ``2·d·s`` FLOPs forward over the whole score matrix (``d =
  heads·head_dim``, ``s`` = sequence length), so ``4·L·d·s`` forward and ``3×`` that, ``12·L·d·s``,
  for forward + backward. A causal model needs only the unmasked half, ``6·L·d·s``: what a flash
  kernel that skips masked tiles does, and what MaxText and torchtitan count
  (``causal_discount=True``, the default). ``causal_discount=False`` gives PaLM's figure, to
  compare with papers that use it (say which one you quote).

Not counted (all small for realistic models): softmax, norms, activations, the optimizer update,
rematerialisation (recomputed FLOPs make *hardware* FLOPs utilisation larger than *model* FLOPs
utilisation, which is why MFU uses model FLOPs).
"""

from __future__ import annotations

from typing import Any

__all__ = ["flops_per_token_from_config", "transformer_flops_per_token"]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


def transformer_flops_per_token(
    *,
    num_params: int,
    num_layers: int,
    d_model: int,
    seq_len: int,
    causal_discount: bool = True,
    training: bool = True,
) -> float:
    """Model FLOPs per token: ``6·N + 6·L·d·s`` (causal attention at half: MaxText,
    torchtitan), or PaLM's ``6·N + 12·L·d·s`` with ``causal_discount=False`` (module notes).

    Parameters
    ----------
    num_params
        ``N``, parameters that take part in per-token matmuls (see module notes).
    num_layers
        ``L``, transformer blocks.
    d_model
        ``d``, attention width (``num_heads · head_dim``; equals the model width for standard
        decoders).
    seq_len
        ``s``, the sequence length attended over (the training context length).
    causal_discount
        Halve the attention term (``6·L·d·s``): only the unmasked half of a causal score matrix
        (default, MaxText's and torchtitan's convention). ``False``: PaLM's full matrix.
    training
        ``True`` (default): forward + backward. ``False``: forward only (``2·N + 4·L·d·s``), for
        inference / evaluation throughput.

    Returns
    -------
    float
        FLOPs per token.

    Examples
    --------
    GPT-2 small (124,439,808 parameters, 12 layers, width 768) at context 1024:

    >>> transformer_flops_per_token(
    ...     num_params=124_439_808, num_layers=12, d_model=768, seq_len=1024
    ... )
    803261952.0
    >>> transformer_flops_per_token(
    ...     num_params=124_439_808, num_layers=12, d_model=768, seq_len=1024, causal_discount=False
    ... )
    859885056.0
    """
    n = _positive_int(num_params, "num_params")
    layers = _positive_int(num_layers, "num_layers")
    d = _positive_int(d_model, "d_model")
    s = _positive_int(seq_len, "seq_len")
    if not isinstance(causal_discount, bool):
        raise ValueError(f"causal_discount must be True or False; got {causal_discount!r}")
    if not isinstance(training, bool):
        raise ValueError(f"training must be True or False; got {training!r}")
    attention = 2.0 * 2.0 * layers * d * s  # Q·Kᵀ and A·V, forward, full matrix
    if causal_discount:
        attention /= 2.0
    forward = 2.0 * n + attention
    return 3.0 * forward if training else forward


def flops_per_token_from_config(
    config: Any,
    *,
    num_params: int,
    seq_len: int | None = None,
    causal_discount: bool = True,
    training: bool = True,
) -> float:
    """FLOPs per token read from a model config (duck-typed, e.g. ``tjx.nn.GPT2Config``).

    Parameters
    ----------
    config
        Any object with ``num_layers`` and ``d_model`` attributes, and ``max_seq_len`` when
        ``seq_len`` is not given. If it has ``num_heads`` and ``head_dim`` the attention width is
        ``num_heads · head_dim``; otherwise ``d_model``.
    num_params
        Parameter count (e.g. ``tjx.nn.count_params(model)``); a config alone does not fix it.
    seq_len
        Training sequence length; defaults to ``config.max_seq_len``.
    causal_discount, training
        As in :func:`transformer_flops_per_token`.

    Returns
    -------
    float
        FLOPs per token.
    """
    missing = [name for name in ("num_layers", "d_model") if not hasattr(config, name)]
    if seq_len is None and not hasattr(config, "max_seq_len"):
        missing.append("max_seq_len (or pass seq_len=)")
    if missing:
        raise ValueError(f"config {type(config).__name__} lacks field(s): {', '.join(missing)}")
    width = config.d_model
    head_dim = getattr(config, "head_dim", None)
    num_heads = getattr(config, "num_heads", None)
    if isinstance(head_dim, int) and isinstance(num_heads, int):
        width = head_dim * num_heads
    return transformer_flops_per_token(
        num_params=num_params,
        num_layers=config.num_layers,
        d_model=width,
        seq_len=config.max_seq_len if seq_len is None else seq_len,
        causal_discount=causal_discount,
        training=training,
    )
