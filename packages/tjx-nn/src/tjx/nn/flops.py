"""Model FLOPs per token for MFU: ``6·N_matmul`` plus the attention score/value matmuls.

A parameter that is a matmul weight costs 2 FLOPs per token forward and 4 backward, so ``6`` per
token. Only **matmul weights** count: embedding lookups (the token table when it is not also the
output projection, learned position and token-type tables, ViT's class token) are gathers, and
biases/norm scales are elementwise. A tied token table counts once, as the unembedding matmul.

The attention term is ``12·A·s_q·s_k`` per layer and sequence (``QKᵀ`` and ``PV``, ``2·A·s_k``
FLOPs each per query forward, ×3 with backward), ``A = num_heads·head_dim``. Two conventions
for **causal** attention (a decoder's self-attention, an encoder-decoder's decoder side):

* ``causal_half=True`` (the default, as **MaxText** (since 2025) and **torchtitan** count): a
  causal score matrix is counted at half, ``6·L·A·s`` per token for a decoder: the products a
  causal kernel must do (flash kernels skip the masked tiles). The trainer's ``mfu`` uses it.
* ``causal_half=False``: **PaLM's** appendix B (also nanoGPT's and Megatron's MFU): the full
  matrix, ``12·L·A·s``; the trainer logs it as ``mfu_palm``.

Bidirectional attention (BERT, ViT, an encoder, cross-attention) is counted whole either way.
A layer with a sliding window ``W`` counts only the keys its window holds: ``k = min(s, W)``
causal, ``min(s, 2W - 1)`` bidirectional (kernels skip the rest). A windowed causal layer's
half is exact: the ``s·k - k²/2`` query-key pairs the causal window sees (``s²/2`` when
``W >= s``); PaLM's whole count is ``s·k``.

**Delta layers** (Gated DeltaNet, ``mixer_pattern``) have no score matrix: their projections
count as matmul weights (the depthwise convolution is elementwise) and the gated delta rule as
its recurrent form's three products with the ``[d_k, d_v]`` state per value head and token
(read by the key, the rank-one write, read by the query): ``18·H_v·d_k·d_v`` per token and
layer with the backward. (The chunked kernel does more arithmetic than that to run in parallel;
this is the model's count, as a score matrix's half is.) A gated attention output
(``attention.output_gate``) adds its projection to the layer's query and output weights.

**Mixture of experts: only active parameters count.** A token goes through its MoE layer's
router (``d·E``), its ``experts_per_token`` routed experts and the shared experts, so an MoE
layer's ``N`` is ``d·E + k·N_expert + N_shared`` (``N_expert`` one expert's matmul weights), not
its ``E`` experts' total: FLOPs per token, and an MFU from them, count the work a token really
causes (MaxText's and torchtitan's convention). Capacity-dropped assignments are still counted
(the slots are computed anyway). ``count_params``/``config_param_count`` give the total.

**Multi-token prediction** (``mtp.depths``): each depth runs a decoder block at every position
(its attention counted as a layer's), its ``eh_proj`` and the shared head once more.

**Layers of their own shape** (:mod:`tjx.nn.family_config`'s ``layer_shape``) are counted one
by one: a global layer's own head width and key/value heads (its score matrix at that width), no
value projection where the values are the keys, none at all in a layer reading another's keys
and values, the shared layers' MLP width, and the per-layer embeddings' projection
(``[d, L·P]``) and each layer's gate and projection (``2·d·P``); their token table is a lookup.

The counts are derived from the config here and checked in the tests against the weights of the
built model (``nnx.state``), so the two cannot drift apart silently.
"""

from __future__ import annotations

from tjx.nn.configs import TransformerConfig
from tjx.nn.encoder_configs import BertConfig, EncoderDecoderConfig, ViTConfig
from tjx.nn.family_config import layers_differ
from tjx.nn.moe.config import expert_mlp_dim, moe_layers, shared_mlp_dim

# (matmul parameters, positions per sequence they are applied at)
_Terms = list[tuple[int, int]]


def _attention_weights(c: TransformerConfig, *, cross: bool = False) -> tuple[int, int]:
    """(query+output weights, key+value weights) of one attention layer.

    They are split because cross-attention projects queries at target positions but keys and
    values at source positions.
    """
    assert c.head_dim is not None and c.num_kv_heads is not None
    d, inner, kv_inner = c.d_model, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    if c.attention.type == "mla" and not cross and c.mla.qk_rope_head_dim is not None:
        # DeepSeek: the (low-rank) query, o_proj from the value heads; kv_down and the shared
        # rope key [d, r + rope], then per-head key [r, head_dim - rope] and value [r, v].
        r, rope, q_rank = c.mla.kv_latent_dim, c.mla.qk_rope_head_dim, c.mla.q_lora_rank
        assert r is not None
        v_inner = c.num_heads * (c.mla.v_head_dim or c.head_dim)
        query = d * q_rank + q_rank * inner if q_rank else d * inner
        kv_up = r * (c.num_heads * (c.head_dim - rope) + v_inner)
        return query + v_inner * d, d * (r + rope) + kv_up
    if c.attention.type == "mla" and not cross:
        r = c.mla.kv_latent_dim
        assert r is not None
        # kv_down [d, r], then key/value up-projections [r, kv_heads, head_dim], every token.
        return 2 * d * inner, d * r + 2 * r * kv_inner
    gate = d * inner if c.attention.output_gate and not cross else 0  # Qwen3.5's output gate
    return 2 * d * inner + gate, 2 * d * kv_inner


def _mlp_weights(c: TransformerConfig) -> int:
    assert c.mlp.dim is not None
    return (3 if c.gated else 2) * c.d_model * c.mlp.dim


def _self_block(c: TransformerConfig) -> int:
    q_out, kv = _attention_weights(c)
    return q_out + kv + _mlp_weights(c)


def _delta_sizes(c: TransformerConfig) -> tuple[int, int, int, int]:
    """(H_v, d_k, d_v, the convolved q/k/v width) of a delta layer."""
    assert c.delta.key_heads is not None and c.delta.value_heads is not None
    assert c.delta.key_dim is not None and c.delta.value_dim is not None
    hv, dk, dv = c.delta.value_heads, c.delta.key_dim, c.delta.value_dim
    return hv, dk, dv, c.delta.conv_dim


def _delta_block(c: TransformerConfig) -> int:
    """A delta layer's matmul weights: q/k/v, z, β and the decay's inputs, the output; its MLP."""
    hv, _, dv, conv = _delta_sizes(c)
    d = c.d_model
    return d * conv + d * hv * dv + 2 * d * hv + hv * dv * d + _mlp_weights(c)


def _moe_active(c: TransformerConfig) -> int:
    """An MoE layer's matmul weights one token uses: router, its k experts, the shared ones."""
    per = (3 if c.gated else 2) * c.d_model
    gate = c.d_model if c.moe.shared_expert_gate else 0
    active = c.moe.experts_per_token * expert_mlp_dim(c) + shared_mlp_dim(c)
    return c.d_model * c.moe.num_experts + per * active + gate


def _shaped_layers(c: TransformerConfig) -> int:
    """The layers' matmul weights, each at its own shape (`layer_shape`), with the
    per-layer embeddings' projections."""
    d, h, total = c.d_model, c.num_heads, 0
    for i in range(c.num_layers):
        shape = c.layer_shape(i)
        p = shape.per_layer_dim
        total += d * p  # the per-layer embeddings' projection of the embeddings, this layer's
        kv = 0 if shape.kv_source is not None else (1 if shape.values_from_keys else 2)
        total += 2 * d * h * shape.head_dim + kv * d * shape.kv_heads * shape.head_dim
        total += (3 if c.gated else 2) * d * shape.mlp_dim + 2 * d * p
    return total


def _wider_attention(c: TransformerConfig, s: int, causal_half: bool) -> int:
    """The score and value products of layers wider than ``head_dim`` beyond it (causal)."""
    extra = 0
    for i, w in enumerate(c.layer_windows()):
        width = c.layer_shape(i).head_dim - (c.head_dim or 0)
        keys = s if w is None else min(s, w)
        extra += 2 * c.num_heads * width * (6 * s * keys - (3 * keys * keys if causal_half else 0))
    return extra


def _decoder_layers(c: TransformerConfig) -> int:
    """Every layer's active matmul weights: attention or delta blocks (``mixer_pattern``), their
    MoE blocks by `_moe_active`; layers of their own shape one by one."""
    kinds = moe_layers(c)
    moe = sum(kinds)
    mixers = c.layer_mixers()
    deltas = mixers.count("delta")
    blocks = (c.num_layers - deltas) * _self_block(c) + (deltas * _delta_block(c) if deltas else 0)
    if layers_differ(c):
        blocks = _shaped_layers(c)
    if not moe:  # a dense stack
        return blocks
    if c.moe.beside_mlp:  # the MLP stays, the MoE block's active weights are added
        return blocks + moe * _moe_active(c)
    return blocks - moe * (_mlp_weights(c) - _moe_active(c))


def _mtp_weights(c: TransformerConfig) -> int:
    """The multi-token-prediction depths' active matmul weights (``mtp.depths``, :mod:`tjx.nn.mtp`):
    each depth's ``eh_proj`` (``2·d·d``), its block (MoE where the stack's layer would be) and
    the shared head it scores with once more."""
    if not c.mtp.depths:
        return 0
    n, d = c.num_layers, c.d_model
    kinds = moe_layers(c, n + c.mtp.depths)[n:]
    saved = sum(_mlp_weights(c) - _moe_active(c) for moe in kinds if moe)
    return len(kinds) * (2 * d * d + _self_block(c) + c.vocab_size * d) - saved


def _area(c: TransformerConfig, s: int, layers: int, *, causal: bool) -> tuple[int, int]:
    """Summed ``s_q·s_k`` of ``layers`` self-attention layers over ``s`` tokens (windows cut
    ``s_k`` to the keys they hold: ``k``), and the summed ``k²`` (a causal layer sees ``s·k - k²/2``
    pairs, which `flops_per_token` counts with ``causal_half``). A chunked layer's area is its
    chunks' square blocks (``Σ len²``), half of it seen causally."""
    total = overlap = 0
    mixers = c.layer_mixers(layers)
    locals_ = c.layer_locals(layers)
    for w, local, mixer in zip(c.layer_windows(layers), locals_, mixers, strict=True):
        if mixer == "delta":  # no score matrix (`flops_per_token` counts its state products)
            continue
        if local and c.attention.chunk is not None:  # a score block per chunk
            whole, rest = divmod(s, c.attention.chunk)
            block = whole * c.attention.chunk**2 + rest * rest
            total += block
            overlap += block  # causal: half of each block
            continue
        keys = s if w is None else min(s, w if causal else 2 * w - 1)
        total += s * keys
        overlap += keys * keys
    return total, overlap


def _terms(
    config: TransformerConfig, seq_len: int, src_len: int
) -> tuple[_Terms, int, tuple[int, int]]:
    """Matmul weights with their positions per sequence, the summed ``s_q·s_k`` over layers of
    bidirectional attention, and of causal attention with its summed ``k²`` (`_area`)."""
    c = config
    d, s = c.d_model, seq_len
    unembed = c.vocab_size * d  # the head, or the tied table used as the output matmul
    if isinstance(c, EncoderDecoderConfig):
        assert c.num_encoder_layers is not None and c.num_decoder_layers is not None
        le, ld, S = c.num_encoder_layers, c.num_decoder_layers, src_len
        cross_q_out, cross_kv = _attention_weights(c, cross=True)
        terms = [
            (le * _self_block(c), S),
            (ld * (_self_block(c) + cross_q_out), s),
            (ld * cross_kv, S),  # cross keys/values project the encoder output
            (unembed, s),
        ]
        whole = _area(c, S, le, causal=False)[0] + ld * s * S
        return terms, whole, _area(c, s, ld, causal=True)
    layers = _decoder_layers(c)
    if isinstance(c, ViTConfig):
        patch = c.patch_size * c.patch_size * c.num_channels * d
        # The patch projection skips the class token; the classifier reads only the class token.
        whole = _area(c, s, c.num_layers, causal=False)[0]
        return [(layers, s), (patch, s - 1), (d * c.num_classes, 1)], whole, (0, 0)
    if isinstance(c, BertConfig):
        # __call__ is the MLM head: dense transform + tied table. classify()'s pooler/classifier
        # are not part of it (they run once per sequence: add 6·(d² + d·labels)/s if you use them).
        whole = _area(c, s, c.num_layers, causal=False)[0]
        return [(layers, s), (d * d, s), (unembed, s)], whole, (0, 0)
    stacked = c.num_layers + c.mtp.depths  # a multi-token-prediction depth attends as a layer
    return [(layers + _mtp_weights(c), s), (unembed, s)], 0, _area(c, s, stacked, causal=True)


def _check(config: TransformerConfig, seq_len: int, src_len: int | None) -> int:
    for name, value in (("seq_len", seq_len), ("src_len", src_len)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    if src_len is not None and not isinstance(config, EncoderDecoderConfig):
        raise ValueError(
            f"src_len is only for EncoderDecoderConfig; got {type(config).__name__} "
            "(allowed: None)"
        )
    if isinstance(config, ViTConfig) and seq_len != config.max_seq_len:
        raise ValueError(
            f"seq_len for a ViT must be num_patches + 1 = {config.max_seq_len} (its sequence is "
            f"fixed by image_size/patch_size); got {seq_len}"
        )
    return seq_len if src_len is None else src_len


def matmul_param_count(config: TransformerConfig) -> int:
    """Parameters that are matmul weights in the model's ``__call__`` (the ``N`` of ``6·N``).

    Kernels of every projection (attention incl. MLA's ``kv_down``, cross-attention, MLP, BERT's
    MLM transform, ViT's patch projection and classifier) plus the output projection: the LM head
    when untied, else the tied token table (counted once). Lookup-only tables (untied token
    embedding, learned positions, token types, class token), biases and norms are excluded. An
    MoE layer counts its **active** weights: router, ``experts_per_token`` experts, shared
    experts and their gate (see the module's docstring).

    Parameters
    ----------
    config : TransformerConfig
        Any config ``build_model`` accepts.

    Returns
    -------
    int
        The count (scanned and unrolled layers give the same number).
    """
    s = config.max_seq_len
    return sum(n for n, _ in _terms(config, s, s)[0])


def flops_per_token(
    config: TransformerConfig,
    seq_len: int,
    *,
    src_len: int | None = None,
    causal_half: bool = True,
) -> float:
    """Training FLOPs (forward + backward) per token: ``6·N_matmul + 6·L·A·s`` for decoders
    (causal attention at half, MaxText/torchtitan), ``+ 12·L·A·s`` with ``causal_half=False``
    (PaLM).

    ``N_matmul`` is ``matmul_param_count(config)``: lookup-only tables (learned positions, the
    token table when the LM head is untied) are not multiplied and are not counted; a tied table
    is counted once as the unembedding. ``A = num_heads·head_dim``; a causal score matrix counts
    at half unless ``causal_half=False`` (the module docstring's two conventions). Weights that
    run at fewer positions than the sequence has (ViT's classifier on the class token) are
    weighted by the share of positions they run at, so the result times the tokens processed is
    the exact model FLOPs under the chosen convention.

    Per family (``s`` = ``seq_len``, ``S`` = ``src_len``, ``L_e``/``L_d`` = encoder/decoder
    layers):

    - decoders (GPT-2, LLaMA incl. GQA/MLA): per token as above; BERT's MLM ``__call__``:
      ``6·N_matmul + 12·L·A·s`` (bidirectional: whole under both conventions);
    - ViT: per position of the fixed ``num_patches + 1`` sequence (``seq_len`` must equal it);
      multiply by ``seq_len`` for FLOPs per image;
    - ``EncoderDecoder``: per **target** token, for sources of ``S`` tokens (default ``s``):
      ``6·(N_dec + N_enc·S/s) + 12·A·(c·L_d·s + L_d·S + L_e·S²/s)`` (decoder self-attention,
      at ``c`` = ½ with ``causal_half`` and 1 without; cross-attention; encoder self-attention),
      where the encoder and the cross keys/values run on ``S`` source positions.

    Parameters
    ----------
    config : TransformerConfig
        The model's config.
    seq_len : int
        Training sequence length (>= 1); the target length for an encoder-decoder.
    src_len : int, optional
        Source length of an encoder-decoder (default ``seq_len``); only for
        ``EncoderDecoderConfig``.
    causal_half : bool
        Count causal attention at half (default; MaxText's and torchtitan's MFU) or whole
        (``False``; PaLM's).

    Returns
    -------
    float
        FLOPs per trained token.

    Raises
    ------
    ValueError
        ``seq_len``/``src_len`` < 1, ``src_len`` for a model without an encoder, or a ViT
        ``seq_len`` other than ``num_patches + 1``.
    """
    S = _check(config, seq_len, src_len)
    assert config.head_dim is not None
    if not isinstance(causal_half, bool):
        raise ValueError(f"causal_half must be True or False; got {causal_half!r}")
    terms, full_area, (causal_area, overlap) = _terms(config, seq_len, S)
    weighted = sum(n * positions for n, positions in terms)
    # q·k over head_dim and the weighted sum over the value heads (DeepSeek's v_head_dim).
    widths = config.num_heads * (config.head_dim + (config.mla.v_head_dim or config.head_dim))
    # Integer numerator, one correctly rounded division: exact whenever the result is integral.
    # Half of a causal layer: s·k - k²/2 pairs (s²/2 without a window).
    attention = 6 * widths * (full_area + causal_area) - (
        3 * widths * overlap if causal_half else 0
    )
    if layers_differ(config):  # global layers wider than head_dim
        attention += _wider_attention(config, seq_len, causal_half)
    deltas = config.layer_mixers().count("delta")
    if deltas:  # the recurrent form's three state products per token (the module docstring)
        hv, dk, dv, _ = _delta_sizes(config)
        attention += 18 * deltas * hv * dk * dv * seq_len
    return (6 * weighted + attention) / seq_len


def flops_per_unit(config: TransformerConfig, seq_len: int, *, causal_half: bool = True) -> float:
    """Training FLOPs per unit a throughput counts (`tjx.nn.objective_of`'s ``unit``).

    A ViT's sequence is fixed (``num_patches + 1`` positions per image), so its unit is the
    image: ``flops_per_token`` at that length times the length. An encoder-decoder trained on
    windows of ``seq_len`` tokens continues each window's second half from its first
    (``window_halves``): its unit is a continued token, with the first half as the source.
    Decoder LMs and BERT count tokens: ``flops_per_token(config, seq_len)``.

    Parameters
    ----------
    config : TransformerConfig
        The model's config.
    seq_len : int
        Training window length (ignored for a ViT).
    causal_half : bool
        As in `flops_per_token` (default: causal attention at half).

    Returns
    -------
    float
        FLOPs per image (ViT), per continued token (encoder-decoder) or per token.
    """
    if isinstance(config, ViTConfig):
        positions = config.max_seq_len
        return float(flops_per_token(config, positions, causal_half=causal_half)) * positions
    if isinstance(config, EncoderDecoderConfig):
        from tjx.nn.encdec import window_halves  # the objective's own split (loads flax)

        source, target = window_halves(seq_len)
        return float(flops_per_token(config, target, src_len=source, causal_half=causal_half))
    return float(flops_per_token(config, seq_len, causal_half=causal_half))
