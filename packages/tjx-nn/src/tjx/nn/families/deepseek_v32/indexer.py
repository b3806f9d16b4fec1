"""DeepSeek Sparse Attention's lightning indexer (`Indexer`): which keys each query of a
DeepSeek-V3.2 MLA layer attends to, as transformers 5.24's ``DeepseekV32Indexer`` scores them.

Per token ``x`` (the layer's input, ``d_model``) and its query latent ``c_q`` (DeepSeek's
``q_a_layernorm(q_a_proj(x))``, ``q_lora_rank``), with ``H = index_n_heads``, ``D =
index_head_dim`` and ``ρ = qk_rope_head_dim``:

* ``q = wq_b(c_q)`` ``[H, D]`` and ``k = LayerNorm(wk(x))`` ``[D]`` (one key per token, shared
  by the heads; LayerNorm with its bias, eps 1e-6), their first ``ρ`` dims turned by the model's
  RoPE the rotate-half way (the main MLA's rotation is interleaved: not the indexer's);
* ``I[s, t] = Σ_h w[s, h] · relu(q[s, h] · k[t] / sqrt(D))`` with ``w = weights_proj(x) /
  sqrt(H)``, in float32;
* each query keeps the ``index_topk`` keys of highest ``I`` among the ones it may see (causal,
  its segment), and the attention's logits of every other key get ``-inf`` (an additive bias:
  tjx.kernels' XLA path; the fused kernels take no per-query key set, `tjx.nn.kernel_choice`).

transformers computes the indexer under ``torch.no_grad``: the main loss sends it no gradient
(the selection is a constant of the step); here ``stop_gradient`` does the same. Its keys are
cached per layer (``"index_key"`` ``[L, b, T, D]``, `tjx.nn.kv_cache`), so a decode step scores
its queries against every cached key, as transformers' ``update_indexer`` does.

Its loss (`index_loss`; transformers 5.24 defines none) is the DeepSeek-V3.2 report's
("DeepSeek Sparse Attention", continued pre-training): per query ``t``, ``KL(p_t ‖
softmax(I_t))`` with ``p_t`` the main attention's probabilities summed over its heads and
L1-normalised, both over the keys ``t`` selected (``mla.index_loss="sparse"``, the report's
sparse stage) or every key ``t`` may see (``"dense"``, its warm-up; the forward stays sparse: a
warm-up proper keeps every key, ``index_topk`` ≥ the sequence). ``p`` is a constant
(``stop_gradient``) and the indexer's inputs are detached from the main model (the report's
"the indexer input is detached from the computational graph"): the loss trains the indexer
only, and the language-model loss never reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.configs import TransformerConfig
from tjx.nn.families.deepseek_v32.options import INDEX_KEY
from tjx.nn.kv_cache import step_visible, write_step
from tjx.nn.linear import Dense
from tjx.nn.norms import LayerNorm
from tjx.nn.params import normal

Array = jax.Array
#: transformers' ``k_norm`` epsilon (fixed, whatever ``rms_norm_eps`` says).
KEY_NORM_EPS = 1e-6
#: Rotates ``[b, s, heads, ρ]`` at positions ``[b, s]`` (the layer's RoPE).
Rope = Callable[[Array, Array], Array]


class Selection(NamedTuple):
    """A prefill's selection (`Indexer.prefill`): what the attention and the loss read."""

    #: float32 ``[b, 1, s, s]``: 0 at each query's selected keys, ``-inf`` elsewhere.
    bias: Array
    #: ``[b, s, D]``: the indexer keys (what a cache keeps).
    keys: Array
    #: float32 ``[b, s, s]``: the index scores ``I`` (differentiable in the indexer's weights).
    scores: Array
    #: bool ``[b, s, s]``: the keys each query may see (causal, its segment).
    visible: Array

    @property
    def cached(self) -> dict[str, Array]:
        """What a cache keeps of it: the indexer keys (``mla.selection_cache``)."""
        return {INDEX_KEY: self.keys}


class Indexer(nnx.Module):
    """One MLA layer's lightning indexer (module docstring): ``query`` (``wq_b``), ``key``
    (``wk``), ``key_norm`` (``k_norm``) and ``weights`` (``weights_proj``); the attention layer's
    key selection (`tjx.nn.families.parts.KeySelector`)."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs) -> None:
        c, m = config, config.mla
        assert m.q_lora_rank and m.index_n_heads and m.index_head_dim and m.qk_rope_head_dim
        assert m.key_selection is not None
        self.selection_name = m.key_selection
        self.heads, self.dim, self.rope = m.index_n_heads, m.index_head_dim, m.qk_rope_head_dim
        self.topk = int(m.index_topk or 0)
        # Its KL loss's form (mla.index_loss_weight > 0), else None: `loss` reports none.
        self.loss_form = m.index_loss if m.index_loss_weight > 0 else None
        common: dict[str, Any] = dict(
            rngs=rngs, use_bias=False, init=normal(c.init.std), precision=c.precision
        )
        self.query = Dense(
            (m.q_lora_rank,), (self.heads, self.dim), (None,), (None, None), **common
        )
        self.key = Dense((c.d_model,), (self.dim,), ("embed",), (None,), **common)
        self.key_norm = LayerNorm(self.dim, rngs=rngs, eps=KEY_NORM_EPS, precision=c.precision)
        self.weights = Dense((c.d_model,), (self.heads,), ("embed",), (None,), **common)

    def keys(self, x: Array, positions: Array, rope: Rope) -> Array:
        """The indexer keys ``[b, s, D]`` of inputs ``x`` ``[b, s, d_model]`` (what is cached)."""
        k = self.key_norm(self.key(x))[:, :, None, :]
        k = jnp.concatenate([rope(k[..., : self.rope], positions), k[..., self.rope :]], -1)
        return k[:, :, 0, :]

    def scores(self, x: Array, q_latent: Array, positions: Array, keys: Array, rope: Rope) -> Array:
        """float32 ``[b, s, T]``: each query's index score of each of ``keys`` ``[b, T, D]``."""
        q = self.query(q_latent)
        q = jnp.concatenate([rope(q[..., : self.rope], positions), q[..., self.rope :]], -1)
        f32 = jnp.float32
        dots = jnp.einsum("bshd,btd->bsht", q.astype(f32), keys.astype(f32)) / math.sqrt(self.dim)
        # transformers keeps weights_proj in float32 (``_keep_in_fp32_modules``)
        kernel = self.weights.kernel[...].astype(f32)
        w = jnp.einsum("bsd,dh->bsh", x.astype(f32), kernel) * self.heads**-0.5
        return jnp.einsum("bsh,bsht->bst", w, jax.nn.relu(dots))

    def bias(self, scores: Array, visible: Array) -> Array:
        """float32 ``[b, 1, s, T]``: 0 at each query's top-``index_topk`` visible keys (by
        ``scores``), ``-inf`` elsewhere (an additive logit bias, every head alike)."""
        chex.assert_equal_shape([scores, visible])
        scores = jax.lax.stop_gradient(jnp.where(visible, scores, -jnp.inf))
        b, s, t = scores.shape
        k = min(self.topk, t)
        _, top = jax.lax.top_k(scores, k)  # [b, s, k]
        rows = jnp.arange(b)[:, None, None]
        cols = jnp.arange(s)[None, :, None]
        kept = jnp.zeros((b, s, t), bool).at[rows, cols, top].set(True)
        # A query seeing fewer than k keys also "keeps" some it cannot see: still masked.
        return jnp.where(kept & visible, 0.0, -jnp.inf).astype(jnp.float32)[:, None]

    def prefill(
        self, attn: Any, x: Array, positions: Array, segment_ids: Any, local: Any
    ) -> Selection:
        """A whole call's `Selection`: its sparse bias (causal within each segment,
        ``segment_ids`` ``[b, s]`` with 0 = padding, or None), keys, scores and visible keys, for
        the DeepSeek MLA layer ``attn`` (its query latent and RoPE; ``local`` its window
        switch). The inputs are detached: only `index_loss` trains the indexer."""
        rope = _rope(attn, local)
        x, latent = _detached(attn, x)
        keys = self.keys(x, positions, rope)
        s = x.shape[1]
        visible = jnp.tril(jnp.ones((s, s), bool))[None]
        if segment_ids is not None:
            if isinstance(segment_ids, tuple):
                raise ValueError(
                    "DeepSeek Sparse Attention is self-attention: its mask takes one segment "
                    "ids array, not a (queries, keys) pair"
                )
            seg = segment_ids.astype(jnp.int32)
            visible = visible & (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)
        visible = jnp.broadcast_to(visible, (x.shape[0], s, s))
        scores = self.scores(x, latent, positions, keys, rope)
        return Selection(self.bias(scores, visible), keys, scores, visible)

    def step(
        self,
        attn: Any,
        x: Array,
        positions: Array,
        cache: dict[str, Array],
        cache_pos: Array,
        local: Any,
    ) -> tuple[Array, dict[str, Array]]:
        """A decode step's sparse bias ``[b, 1, s, T]`` over the cache's slots, and the cache
        with the step's indexer keys written (`tjx.nn.kv_cache.write_step`: the same slots the
        latents take), for the DeepSeek MLA layer ``attn``."""
        rope = _rope(attn, local)
        x, latent = _detached(attn, x)
        new = {INDEX_KEY: self.keys(x, positions, rope)}
        cache, seen, held = write_step(cache, new, cache_pos, rolling=False)
        visible = step_visible(held, positions)
        scores = self.scores(x, latent, positions, seen[INDEX_KEY], rope)
        return self.bias(scores, visible), cache

    def loss(
        self, selected: Selection, q: Array, k: Array, scale: float
    ) -> tuple[Array, Array] | None:
        """`index_loss` of ``selected`` in the configured form, or None where the config does
        not train the indexer (``mla.index_loss_weight`` 0)."""
        if self.loss_form is None:
            return None
        return index_loss(selected, q, k, scale, self.loss_form)


def index_loss(
    selection: Selection, q: Array, k: Array, scale: float, form: str
) -> tuple[Array, Array]:
    """One layer's indexer loss as sums: ``Σ_t KL(p_t ‖ softmax(I_t))`` over its queries, and
    how many queries it sums (each sees at least one key).

    Parameters
    ----------
    selection : Selection
        The layer's prefill selection (its scores ``I`` carry the indexer's gradient).
    q, k : Array
        The main attention's queries and keys ``[b, s, heads, width]``, as its kernel reads them
        (``scale`` its softmax scale): ``p_t`` is their softmax summed over heads, L1-normalised
        (a constant: ``stop_gradient``).
    scale : float
        The main attention's logit scale.
    form : str
        ``"sparse"``: ``p`` and ``softmax(I)`` over each query's selected keys; ``"dense"``:
        over every key it may see.

    Returns
    -------
    (Array, Array)
        float32 scalars: the summed KL and the queries it covers.
    """
    chex.assert_equal_shape([q, k])
    keep = selection.visible
    if form == "sparse":
        keep = keep & (selection.bias[:, 0] == 0)
    f32 = jnp.float32
    logits = jnp.einsum("bshd,bthd->bhst", q.astype(f32), k.astype(f32)) * scale
    floor = jnp.finfo(f32).min  # not -inf: a query that sees nothing (padding) stays finite
    probs = jax.nn.softmax(jnp.where(keep[:, None], logits, floor), axis=-1)
    target = jax.lax.stop_gradient(jnp.mean(probs, axis=1))  # Σ_h, then L1: each row sums to H
    log_q = jax.nn.log_softmax(jnp.where(keep, selection.scores, floor), axis=-1)
    safe = jnp.where(target > 0, target, 1.0)
    kl = jnp.where(keep & (target > 0), target * (jnp.log(safe) - log_q), 0.0)
    queries = jnp.any(keep, axis=-1)
    return jnp.sum(jnp.where(queries, jnp.sum(kl, -1), 0.0)), jnp.sum(queries).astype(f32)


def _detached(attn: Any, x: Array) -> tuple[Array, Array]:
    """The indexer's inputs, ``x`` and DeepSeek's query latent ``q_a_layernorm(q_a_proj(x))`` of
    the MLA layer ``attn``, detached from the main model (the report trains the indexer by its
    own loss alone: that loss must not move the main model's weights)."""
    latent = attn.query_latent_norm(attn.query_down(x))
    return jax.lax.stop_gradient(x), jax.lax.stop_gradient(latent)


def _rope(attn: Any, local: Any) -> Rope:
    """The MLA layer ``attn``'s RoPE (rotate-half, its base and scaling) as a `Rope`."""
    return lambda t, p: attn.positions.rope(t, p, local=local)  # type: ignore[no-any-return]
