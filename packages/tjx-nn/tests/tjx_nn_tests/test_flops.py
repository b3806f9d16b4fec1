"""flops_per_token / matmul_param_count against an independent count of the built model's
matmul weights (read from ``nnx.state``), and GPT-2 small by hand."""

import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.families.gemma4 import Gemma4Options
from tjx.nn.families.llama4.options import Llama4Options
from tjx_nn_tests._helpers import TINY, gpt2_tiny, llama_tiny

VIT = dict(d_model=32, num_layers=2, num_heads=4, image_size=8, patch_size=4, num_classes=5)


def _positions(cfg, path, s, src, tied):
    """How many positions per sequence a weight multiplies at in ``__call__`` (0 = never).

    Read from the module path only, independently of tjx.nn.flops: every Dense ``kernel`` is a
    matmul weight; a token table is one only when it is the output projection (no separate
    ``head``; BERT's MLM head is always tied); position/type tables, biases, norms and the
    class token are not.
    """
    names = [str(p) for p in path]
    leaf = names[-1]
    if leaf == "embedding":
        return s if names[0] == "embed" and tied else 0
    if leaf != "kernel":
        return 0
    if isinstance(cfg, tnn.ViTConfig):
        return {"patch_embed": s - 1, "head": 1}.get(names[0], s)
    if isinstance(cfg, tnn.BertConfig) and names[0] in ("pooler", "classifier"):
        return 0  # classify() only; __call__ is the MLM head
    if names[0] == "encoder" or ("cross_attn" in names and names[-2] in ("key", "value")):
        return src
    return s


def _independent(cfg, s, src):
    abstract = nnx.eval_shape(lambda: tnn.build_model(cfg, rngs=nnx.Rngs(0)))
    flat = [
        (path, int(np.prod(v.get_value().shape)))
        for path, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    ]
    tied = isinstance(cfg, tnn.BertConfig) or not any(str(p[0]) == "head" for p, _ in flat)
    pos = [_positions(cfg, path, s, src, tied) for path, _ in flat]
    weighted = sum(size * n for (_, size), n in zip(flat, pos, strict=False))
    n_matmul = sum(size for (_, size), n in zip(flat, pos, strict=False) if n > 0)
    return weighted, n_matmul


CASES = [
    ("gpt2-tied", gpt2_tiny(), 12, None),
    ("gpt2-untied-scan", gpt2_tiny(tie_embeddings=False, scan_layers=True), 16, None),
    ("llama-untied-gqa", llama_tiny(), 8, None),
    ("llama-tied", llama_tiny(tie_embeddings=True), 8, None),
    (
        "llama-mla",
        llama_tiny(
            mla=tnn.MLAConfig(kv_latent_dim=8),
            head_dim=6,
            attention=tnn.AttentionConfig(type="mla"),
        ),
        8,
        None,
    ),
    ("bert", tnn.make_config(tnn.BertConfig, {**TINY, "num_labels": 3}), 16, None),
    ("vit", tnn.make_config(tnn.ViTConfig, VIT), 5, None),
    (
        "encdec-untied",
        tnn.make_config(
            tnn.EncoderDecoderConfig,
            {**TINY, "num_encoder_layers": 3, "tie_embeddings": False, "num_kv_heads": 2},
        ),
        6,
        10,
    ),
    (
        "encdec-tied-rope",
        tnn.make_config(tnn.EncoderDecoderConfig, {**TINY, "position.kind": "rope"}),
        8,
        None,
    ),
    # T5 relative bias tables are lookups (leaf "table", not a kernel): excluded like positions.
    (
        "encdec-t5-scan",
        tnn.make_config(
            tnn.EncoderDecoderConfig,
            {**TINY, "position.kind": "t5", "scan_layers": True, "num_kv_heads": 2},
        ),
        6,
        10,
    ),
    ("llama-t5", llama_tiny(position=tnn.PositionConfig(kind="t5")), 8, None),
]
#: Qwen3.5's layout: delta layers (no score matrix) around a gated attention layer.
QWEN3_5 = dict(
    mixer_pattern=["delta", "attention", "delta"], **{"attention.output_gate": True},
    delta=tnn.DeltaConfig(key_heads=2, value_heads=4, key_dim=3, value_dim=5),
)  # fmt: skip


@pytest.mark.parametrize("cfg,s,src", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_flops_equal_six_times_matmul_weights_plus_attention(cfg, s, src):
    S = s if src is None else src
    weighted, n_matmul = _independent(cfg, s, S)
    A = cfg.num_heads * cfg.head_dim
    if isinstance(cfg, tnn.EncoderDecoderConfig):
        le, ld = cfg.num_encoder_layers, cfg.num_decoder_layers
        full, causal = le * S * S + ld * s * S, ld * s * s  # enc self + cross; dec self
    elif isinstance(cfg, tnn.ViTConfig | tnn.BertConfig):
        full, causal = cfg.num_layers * s * s, 0  # bidirectional
    else:
        full, causal = 0, cfg.num_layers * s * s
    kw = {} if src is None else {"src_len": src}
    # PaLM counts every score matrix whole; MaxText and torchtitan a causal one at half.
    palm = (6 * weighted + 12 * A * (full + causal)) / s
    assert tnn.flops_per_token(cfg, s, causal_half=False, **kw) == palm
    assert tnn.flops_per_token(cfg, s, **kw) == (6 * weighted + 12 * A * (full + causal / 2)) / s
    assert tnn.matmul_param_count(cfg) == n_matmul
    # Lookup tables are excluded, so N_matmul < N for every family here.
    assert n_matmul < tnn.config_param_count(cfg)
    if not isinstance(cfg, tnn.ViTConfig | tnn.EncoderDecoderConfig | tnn.BertConfig):
        assert tnn.flops_per_token(cfg, s) == 6 * n_matmul + 6 * cfg.num_layers * A * s


def test_gpt2_small_by_hand():
    d, L, V, s = 768, 12, 50257, 1024
    n_matmul = L * (3 * d * d + d * d + 2 * 4 * d * d) + V * d  # qkv, out, mlp; tied unembed
    assert n_matmul == 123_532_032  # HF's 124,439,808 minus wpe (786,432) and biases/norms
    cfg = tnn.gpt2_config("small")
    assert tnn.matmul_param_count(cfg) == n_matmul
    assert tnn.flops_per_token(cfg, s, causal_half=False) == 6 * n_matmul + 12 * L * d * s
    assert tnn.flops_per_token(cfg, s, causal_half=False) == 854_438_400  # PaLM
    assert tnn.flops_per_token(cfg, s) == 6 * n_matmul + 6 * L * d * s == 797_815_296
    # Untying adds a lookup-only table: the FLOPs do not change.
    untied = tnn.gpt2_config("small", tie_embeddings=False)
    assert tnn.flops_per_token(untied, s) == tnn.flops_per_token(cfg, s)
    assert tnn.config_param_count(untied) == 124_439_808 + V * d


def test_flops_errors():
    with pytest.raises(ValueError, match="seq_len"):
        tnn.flops_per_token(gpt2_tiny(), 0)
    with pytest.raises(ValueError, match="seq_len"):
        tnn.flops_per_token(gpt2_tiny(), 2.5)
    with pytest.raises(ValueError, match="src_len"):
        tnn.flops_per_token(gpt2_tiny(), 8, src_len=8)
    with pytest.raises(ValueError, match="src_len"):
        tnn.flops_per_token(tnn.make_config(tnn.EncoderDecoderConfig, TINY), 8, src_len=0)
    with pytest.raises(ValueError, match="num_patches"):
        tnn.flops_per_token(tnn.make_config(tnn.ViTConfig, VIT), 16)
    with pytest.raises(ValueError, match="causal_half"):
        tnn.flops_per_token(gpt2_tiny(), 8, causal_half=1)


def test_flops_per_unit_is_per_image_for_a_vit_and_per_token_otherwise():
    vit = tnn.make_config(
        tnn.ViTConfig, VIT
    )  # 8x8 images in 4x4 patches: 4 patches + the class token
    weighted, _ = _independent(vit, 5, 5)
    per_image = 6 * weighted + 12 * vit.num_heads * vit.head_dim * vit.num_layers * 5 * 5
    assert tnn.flops_per_unit(vit, 123) == per_image  # the sequence is the image's, not 123
    assert tnn.flops_per_unit(gpt2_tiny(), 12) == tnn.flops_per_token(gpt2_tiny(), 12)


@pytest.mark.parametrize("seq_len", [8, 9])
def test_flops_per_unit_of_an_encoder_decoder_is_per_continued_token(seq_len):
    """The trainer counts an encoder-decoder's continued tokens (the window's second half, read
    from its first): one window's FLOPs are those of a ``half``-token source and a
    ``seq_len - half + 1``-token target, spread over that target."""
    config = tnn.make_config(tnn.EncoderDecoderConfig, TINY)
    half = seq_len // 2
    target = seq_len - half + 1
    per_unit = tnn.flops_per_unit(config, seq_len)
    assert per_unit * target == pytest.approx(
        tnn.flops_per_token(config, target, src_len=half) * target, rel=1e-12
    )
    assert target == tnn.objective_of(config).units_per_window(seq_len)
    # Less than pricing a full window on both sides, as the count did before.
    assert per_unit < tnn.flops_per_token(config, seq_len)


def test_a_delta_layer_counts_its_projections_and_its_state_products_not_a_score_matrix():
    cfg = llama_tiny(**{**QWEN3_5, "num_layers": 3})
    s = 8
    weighted, n_matmul = _independent(cfg, s, s)  # the built model's kernels, gate included
    assert tnn.matmul_param_count(cfg) == n_matmul
    A, attention_layers, delta_layers = cfg.num_heads * cfg.head_dim, 1, 2
    state = 18 * delta_layers * 4 * 3 * 5  # per token: 3 products of H_v·d_k·d_v, x3 with backward
    want = (6 * weighted + 6 * A * attention_layers * s * s) / s + state
    assert tnn.flops_per_token(cfg, s) == pytest.approx(want, rel=1e-12)


def test_each_mtp_depth_counts_a_layer_and_the_shared_head_once_more():
    """Multi-token prediction (``mtp.depths``): its kernels from the built model, its blocks'
    attention as the stack's layers', and the head each depth scores with again."""
    cfg, s, depths = llama_tiny(mtp=tnn.MTPConfig(depths=2)), 8, 2
    weighted, n_matmul = _independent(cfg, s, s)
    head = cfg.vocab_size * cfg.d_model
    A, layers = cfg.num_heads * cfg.head_dim, cfg.num_layers + depths
    assert tnn.matmul_param_count(cfg) == n_matmul + depths * head
    want = (6 * (weighted + depths * head * s) + 6 * A * layers * s * s) / s
    assert tnn.flops_per_token(cfg, s) == want


def test_a_chunked_layer_counts_its_chunks_score_blocks():
    """Llama 4: a local layer with chunks of 3 over 8 positions scores blocks of 3, 3 and 2
    positions (22 pairs' area, half of it causally); the global layer its whole 8 x 8."""
    cfg = llama_tiny(
        attention=tnn.AttentionConfig(chunk=3, window_pattern=["local", "global"]),
        llama4=Llama4Options(global_nope=True),
    )
    s = 8
    weighted, _ = _independent(cfg, s, s)
    A = cfg.num_heads * cfg.head_dim
    blocks = 3 * 3 + 3 * 3 + 2 * 2
    palm = (6 * weighted + 12 * A * (blocks + s * s)) / s
    assert tnn.flops_per_token(cfg, s, causal_half=False) == palm
    assert tnn.flops_per_token(cfg, s) == (6 * weighted + 12 * A * (blocks + s * s) / 2) / s


def test_gemma4_layers_count_each_at_its_own_shape():
    """Global layers twice as wide with one key/value head and no value projection, two layers
    reading earlier ones' keys and values with a double MLP, per-layer embeddings: the weights
    against the built model's, the score matrices at each layer's width (a window of 4 of 8)."""
    cfg = llama_tiny(
        num_layers=4, num_heads=4, num_kv_heads=2, head_dim=8, tie_embeddings=True,
        attention=tnn.AttentionConfig(sliding_window=4, window_pattern=["local", "global"]),
        gemma4=Gemma4Options(global_head_dim=16, global_kv_heads=1, global_values_from_keys=True,
                             kv_shared_layers=2, kv_shared_mlp_dim=2 * 24, per_layer_input_dim=4),
    )  # fmt: skip
    s = 8
    weighted, n_matmul = _independent(cfg, s, s)
    assert tnn.matmul_param_count(cfg) == n_matmul
    # Local layers: s·4 - 4²/2 = 24 pairs at width 8; global: s²/2 = 32 pairs at width 16.
    pairs = 2 * (24 * 8 + 32 * 16)
    want = (6 * weighted + 12 * cfg.num_heads * pairs) / s
    assert tnn.flops_per_token(cfg, s) == want


def test_an_moe_block_beside_the_mlp_adds_its_active_weights_to_the_mlp():
    """Gemma 4's MoE layers keep their MLP: with every expert active (top 2 of 2) the active
    weights are all of the built model's matmul weights."""
    cfg = llama_tiny(
        moe=tnn.MoEConfig(num_experts=2, experts_per_token=2, expert_mlp_dim=8, beside_mlp=True,
                          router_input_norm=True, router_expert_scale=True),
        tie_embeddings=True,
    )  # fmt: skip
    _, n_matmul = _independent(cfg, 8, 8)
    assert tnn.matmul_param_count(cfg) == n_matmul
    attention = 6 * cfg.num_layers * cfg.num_heads * cfg.head_dim * 8
    assert tnn.flops_per_token(cfg, 8) == 6 * n_matmul + attention
