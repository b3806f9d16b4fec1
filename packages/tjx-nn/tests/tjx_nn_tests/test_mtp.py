"""Multi-token prediction (the ``mtp`` section, :mod:`tjx.nn.mtp`): its forward and loss against a
float64 NumPy reference written from DeepSeek-V3's equations, greedy self-speculative decoding
against plain greedy decoding (for the MTP families' flavours; one two-token main-model pass per
step, counted), and the settings' refusals. (Its HF tensors: test_mla_deepseek.py
and hf/test_gpt_oss_glm.py.)"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn import generation, speculative
from tjx.nn.mtp import MTPLayer, mtp_hidden, mtp_labels

TINY = dict(
    vocab_size=40, max_seq_len=32, d_model=16, num_layers=2, num_heads=4, num_kv_heads=2,
    mlp=tnn.MLPConfig(dim=24), mtp=tnn.MTPConfig(depths=2, loss_weight=0.3),
)  # fmt: skip


def _rms(x, w, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w


def _rope(x, pos, theta=10000.0):
    half = x.shape[-1] // 2
    ang = pos[:, None, None] * (1.0 / theta ** (np.arange(half) / half))
    a, b = x[..., :half], x[..., half:]
    return np.concatenate(
        [a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)], -1
    )


def _block(p, t, x):
    """A pre-norm Llama layer (GQA, RoPE, SwiGLU) of one sequence ``x`` [s, d] in float64."""
    s = x.shape[0]
    pos = np.arange(s, dtype=np.float64)
    a = _rms(x, p[t + "attn_norm.scale"])
    q = _rope(np.einsum("sd,dhk->shk", a, p[t + "attn.query.kernel"]), pos)
    k = _rope(np.einsum("sd,dhk->shk", a, p[t + "attn.key.kernel"]), pos)
    v = np.einsum("sd,dhk->shk", a, p[t + "attn.value.kernel"])
    rep = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, rep, 1), np.repeat(v, rep, 1)
    logits = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    logits = np.where(np.tril(np.ones((s, s), bool)), logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    x = x + np.einsum("shk,hkd->sd", np.einsum("hqk,khd->qhd", w, v), p[t + "attn.out.kernel"])
    m = _rms(x, p[t + "mlp_norm.scale"])
    gate, up = m @ p[t + "mlp.fc_gate.kernel"], m @ p[t + "mlp.fc_in.kernel"]
    return x + (gate / (1 + np.exp(-gate)) * up) @ p[t + "mlp.fc_out.kernel"]


def _ce(logits, labels):
    """Per-position cross-entropy (float64) and the mask of scored labels."""
    top = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    ok = labels >= 0
    picked = np.take_along_axis(logits, np.where(ok, labels, 0)[..., None], -1)[..., 0]
    return np.where(ok, lse - picked, 0.0), ok


def _reference(p, c, tokens, targets):
    """(main loss, per-depth mean losses) of one sequence, DeepSeek-V3's MTP written out: depth
    k at position i reads h^{k-1}_i and Emb(t_{i+k}), its labels are t_{i+k+1}."""
    s = len(tokens)
    x = p["embed.embedding"][tokens]
    for i in range(c.num_layers):
        x = _block(p, f"stack.layers.{i}.", x)
    head = p["head.kernel"]
    nll, ok = _ce(_rms(x, p["final_norm.scale"]) @ head, targets)
    main = nll.sum() / ok.sum()
    h, depths = x, []
    for k in range(1, c.mtp.depths + 1):
        t = f"mtp.layers.{k - 1}."
        ahead = np.array([tokens[i + k] if i + k < s else 0 for i in range(s)])
        e = _rms(p["embed.embedding"][ahead], p[t + "enorm.scale"])
        joined = np.concatenate([e, _rms(h, p[t + "hnorm.scale"])], -1)  # embedding first
        h = _block(p, t + "block.", joined @ p[t + "eh_proj.kernel"])
        labels = np.array([targets[i + k] if i + k < s else -100 for i in range(s)])
        nll, ok = _ce(_rms(h, p[t + "norm.scale"]) @ head, labels)
        depths.append(nll.sum() / ok.sum())
    return main, np.array(depths)


def _model(seed, **changes):
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, {**TINY, **changes}), rngs=nnx.Rngs(seed))
    rs = np.random.default_rng(seed)  # norms start at 1: random, so a swapped norm shows
    flat = tnn.get_flat_params(model)
    tnn.set_flat_params(
        model,
        {k: v + 0.3 * rs.standard_normal(v.shape) if "norm" in k else v for k, v in flat.items()},
    )
    return model


def test_mtp_loss_is_deepseeks_equations_in_float64():
    """Fresh random weights and tokens; tolerance 2e-5 relative (float32 against float64)."""
    seed = int(np.random.default_rng().integers(1 << 30))
    model = _model(seed)
    rs = np.random.default_rng(seed)
    tokens = rs.integers(0, TINY["vocab_size"], (2, 12))
    batch = {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:])}
    graphdef, state = nnx.split(model)  # one compile: eagerly every op compiles on its own
    # The random batch is an argument, not a constant: the same program on every run, cached.
    out = jax.jit(lambda st, b: tnn.objective_loss(nnx.merge(graphdef, st), b, chunked=False))(
        state, batch
    )
    p = {k: np.asarray(v, np.float64) for k, v in tnn.get_flat_params(model).items()}
    refs = [_reference(p, model.config, tokens[r, :-1], tokens[r, 1:]) for r in range(2)]
    # Both rows score as many labels per depth, so the batch means are the rows' means.
    main = np.mean([m for m, _ in refs])
    depths = np.mean([d for _, d in refs], axis=0)
    assert out.mtp is not None
    np.testing.assert_allclose(out.mtp.sum_loss / out.mtp.num_tokens, depths, rtol=2e-5)
    np.testing.assert_array_equal(out.mtp.num_tokens, [2 * 10, 2 * 9])
    np.testing.assert_allclose(out.mtp.loss, depths.mean(), rtol=2e-5)
    np.testing.assert_allclose(out.loss, main + 0.3 * depths.mean(), rtol=2e-5)
    metric = tnn.mtp_metric(out.mtp.sum_loss, out.mtp.num_tokens)
    np.testing.assert_allclose(metric, depths.mean(), rtol=2e-5)


def test_packed_documents_score_no_label_across_a_boundary():
    seg = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 0]])
    targets = jnp.arange(8)[None]
    got = np.asarray(mtp_labels(targets, 1, seg))
    np.testing.assert_array_equal(got, [[1, 2, -100, 4, 5, 6, -100, -100]])
    got2 = np.asarray(mtp_labels(targets, 2, None))
    np.testing.assert_array_equal(got2, [[2, 3, 4, 5, 6, 7, -100, -100]])


def test_every_mtp_depth_gets_gradients():
    model = _model(1)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 40, (2, 9)))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        return tnn.objective_loss(nnx.merge(graphdef, p, rest), batch).loss

    grads = nnx.to_pure_dict(jax.jit(jax.grad(loss))(params))
    for depth in (0, 1):
        layer = grads["mtp"]["layers"][depth]
        for leaf in (layer["eh_proj"]["kernel"], layer["block"]["attn"]["query"]["kernel"]):
            assert float(jnp.abs(leaf).sum()) > 0


def test_mtp_trains_with_dropout_and_scores_without():
    """With dropout, two training calls draw new keys (their MTP losses differ) and an
    evaluation call is neither."""
    model = _model(6, dropout=0.5)
    tokens = jnp.asarray(np.random.default_rng(6).integers(0, 40, (2, 9)))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(st):
        m = nnx.merge(graphdef, st)
        train = [tnn.objective_loss(m, batch, deterministic=False).mtp.loss for _ in range(2)]
        return train, tnn.objective_loss(m, batch).mtp.loss

    (first, second), quiet = run(state)
    assert float(first) != float(second) and float(first) != float(quiet)


def test_an_moe_depth_adds_its_router_losses_to_the_mtp_loss():
    """MoE blocks where the stack's layer would be (past ``moe.first_dense``), their router
    penalty in ``MTPLoss.loss`` (the cross-entropy means alone in its sums)."""
    moe = tnn.MoEConfig(num_experts=4, experts_per_token=2, first_dense=1, router_aux_loss=0.5)
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, {**TINY, "moe": moe}), rngs=nnx.Rngs(5))
    assert [layer.block.moe is not None for layer in model.mtp.layers] == [True, True]
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, 40, (2, 9)))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    graphdef, state = nnx.split(model)

    def run(st):
        m = nnx.merge(graphdef, st)
        out = tnn.objective_loss(m, batch)
        prenorm, _ = m.trunk(batch["inputs"])
        _, stats = mtp_hidden(m, prenorm, batch)
        return out, tnn.router_penalty(stats, m.config)

    out, penalty = jax.jit(run)(state)
    ce = np.mean(np.asarray(out.mtp.sum_loss) / np.asarray(out.mtp.num_tokens))
    assert float(penalty) > 0
    np.testing.assert_allclose(out.mtp.loss, ce + penalty, rtol=1e-5)


#: The MTP families' flavours: GQA; DeepSeek-V3's (MLA with a low-rank query, yarn, MoE layers
#: with a sigmoid router and a shared expert, the depth an MoE block); GLM-4.5's (partial RoPE,
#: q/k/v biases, MoE).
MOE = dict(moe=tnn.MoEConfig(
    num_experts=4, experts_per_token=2, expert_mlp_dim=8, num_shared_experts=1, first_dense=1,
    router="sigmoid",
))  # fmt: skip
DEEPSEEK_V3 = dict(
    **MOE, num_kv_heads=4, head_dim=8, **{"attention.type": "mla"},
    mla=tnn.MLAConfig(kv_latent_dim=8, qk_rope_head_dim=4, v_head_dim=6, q_lora_rank=10),
    position=tnn.PositionConfig(rope_scaling=dict(
        type="yarn", factor=4.0, original_max_position_embeddings=8, mscale=1.0,
        mscale_all_dim=1.0)),
)  # fmt: skip
MTP_FAMILIES = {
    "gqa": {},
    "deepseek-v3": DEEPSEEK_V3,
    "glm-4.5": dict(
        **MOE, head_dim=8, **{"position.rope_fraction": 0.5}, **{"attention.qkv_bias": True}
    ),
}


@pytest.mark.parametrize("family", list(MTP_FAMILIES))
def test_speculative_greedy_emits_plain_greedys_tokens(family):
    model = _model(2, mtp=tnn.MTPConfig(depths=1), **MTP_FAMILIES[family])
    rs = np.random.default_rng(2)
    prompts = rs.integers(0, 40, (3, 5))
    lengths = np.array([5, 2, 4])
    kw = dict(max_new_tokens=12, prompt_lengths=lengths)
    want = np.asarray(tnn.generate(model, prompts, **kw))
    got = tnn.generate_speculative(model, prompts, **kw)
    np.testing.assert_array_equal(np.asarray(got.tokens), want)
    assert got.drafted > 0 and 0.0 <= got.acceptance_rate <= 1.0
    # A row stopping at an end-of-sequence id stops there as plain greedy does.
    eos = int(want[0, 7])
    stopped = tnn.generate_speculative(model, prompts, eos_id=eos, **kw)
    np.testing.assert_array_equal(stopped.tokens, tnn.generate(model, prompts, eos_id=eos, **kw))


def _copying_model(**changes):
    """A model whose depth 1 drafts what the main model will say, by construction: attention
    writes nothing (output projections zero), so the main model's next token is a function of
    the current token alone; embedding rows of RMS 1 (``enorm(e) = e`` up to eps); and depth 1
    is the main layer behind ``eh_proj = [I; 0]`` (the embedding passed, the hidden state
    dropped) with the final norm: its prediction at i is the main model's at i + 1."""
    c = tnn.make_config(
        tnn.LlamaConfig, {**TINY, "num_layers": 1, "mtp": tnn.MTPConfig(depths=1), **changes}
    )
    model = tnn.Llama(c, rngs=nnx.Rngs(3))
    flat = tnn.get_flat_params(model)
    e = flat["embed.embedding"]
    flat["embed.embedding"] = e / np.sqrt(np.mean(e * e, -1, keepdims=True))
    flat["stack.layers.0.attn.out.kernel"] = np.zeros_like(flat["stack.layers.0.attn.out.kernel"])
    for name in [n for n in flat if n.startswith("stack.layers.0.")]:
        flat[name.replace("stack.layers.0.", "mtp.layers.0.block.")] = flat[name]
    d = c.d_model
    flat["mtp.layers.0.eh_proj.kernel"] = np.concatenate([np.eye(d), np.zeros((d, d))])
    flat["mtp.layers.0.norm.scale"] = flat["final_norm.scale"]
    tnn.set_flat_params(model, flat)
    return model


def test_a_draft_that_copies_the_main_model_is_always_accepted():
    model = _copying_model()
    prompts = np.random.default_rng(4).integers(0, 40, (2, 3))
    got = tnn.generate_speculative(model, prompts, max_new_tokens=9)
    np.testing.assert_array_equal(got.tokens, tnn.generate(model, prompts, max_new_tokens=9))
    assert got.acceptance_rate == 1.0 and got.drafted > 0


def test_each_step_verifies_its_draft_in_one_pass_of_the_main_model(monkeypatch):
    """#68's claim, counted (never timed): the prefill and then one main-model pass per step,
    over two tokens (the last one and the draft), against greedy's one pass per token. Every
    draft of the copying model is accepted: 9 tokens take the prefill and 4 passes."""
    model = _copying_model(vocab_size=37)  # a config of its own: its programs trace here
    passes, programs, greedy_steps = [], [], []
    trunk, layer = tnn.DecoderLM.cached_trunk, MTPLayer.__call__

    def counted_trunk(self, tokens, *args, **kw):
        passes.append(("main", tokens.shape, kw.get("extend", False)))
        return trunk(self, tokens, *args, **kw)

    def counted_layer(self, hidden, embedded, **kw):
        passes.append(("mtp", embedded.shape[:2], kw.get("extend", False)))
        return layer(self, hidden, embedded, **kw)

    def counted(calls, fn):
        def run(*args, **kw):
            calls.append(1)
            return fn(*args, **kw)

        return run

    monkeypatch.setattr(tnn.DecoderLM, "cached_trunk", counted_trunk)
    monkeypatch.setattr(MTPLayer, "__call__", counted_layer)
    monkeypatch.setattr(speculative, "_verify", counted(programs, speculative._verify))
    monkeypatch.setattr(generation, "_decode", counted(greedy_steps, generation._decode))
    prompts = np.random.default_rng(5).integers(0, 37, (2, 3))
    got = tnn.generate_speculative(model, prompts, max_new_tokens=9)
    # Traced once each: the prefill's passes over the prompt, the step's over two tokens.
    assert passes == [
        ("main", (2, 3), False), ("mtp", (2, 3), False), ("main", (2, 2), True),
        ("mtp", (2, 2), True),
    ]  # fmt: skip
    assert got.acceptance_rate == 1.0 and got.passes == len(programs) == 4
    want = tnn.generate(model, prompts, max_new_tokens=9)
    np.testing.assert_array_equal(got.tokens, want)
    assert len(greedy_steps) == 8  # greedy: a one-token pass for each token after the first


@pytest.mark.parametrize(
    "mtp, fields, needle",
    [
        (dict(depths=-1), {}, "MTPConfig.depths must be a non-negative int"),
        (dict(loss_weight=-0.1), {}, "MTPConfig.loss_weight must be >= 0"),
        ({}, {"attention.sliding_window": 4}, "mtp.depths: multi-token prediction is implemented"),
        ({}, dict(position=tnn.PositionConfig(kind="t5")), "got position.kind='t5'"),
    ],
)
def test_bad_mtp_settings_are_refused_by_name(mtp, fields, needle):
    with pytest.raises(ValueError, match=needle):
        tnn.make_config(
            tnn.LlamaConfig, {**TINY, **fields, "mtp": tnn.MTPConfig(**{"depths": 2, **mtp})}
        )


def test_mtp_is_refused_where_it_cannot_run():
    with pytest.raises(ValueError, match="mtp: only decoders"):
        tnn.BertConfig(
            vocab_size=30, d_model=16, num_layers=1, num_heads=2, mtp=tnn.MTPConfig(depths=1)
        )
    plain = tnn.Llama(
        tnn.make_config(tnn.LlamaConfig, {**TINY, "mtp": tnn.MTPConfig()}), rngs=nnx.Rngs(0)
    )
    with pytest.raises(ValueError, match="mtp.depths >= 1"):
        tnn.generate_speculative(plain, [[1, 2]], max_new_tokens=2)
    model = tnn.Llama(
        tnn.make_config(tnn.LlamaConfig, {**TINY, "mtp": tnn.MTPConfig(depths=1)}), rngs=nnx.Rngs(0)
    )
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len=32"):
        tnn.generate_speculative(model, [[1, 2]], max_new_tokens=31)
    none = tnn.generate_speculative(model, np.zeros((0, 3)), max_new_tokens=2)
    assert none.tokens.shape == (0, 5) and math.isnan(none.acceptance_rate)
    scanned = tnn.Llama(model.config.replace(scan_layers=True), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="multi-token-prediction modules are not pipelined"):
        tnn.decoder_stages(scanned)
    with pytest.raises(ValueError, match="multi-token prediction is not pipelined"):
        tnn.check_pipelinable(scanned.config)
    # A split sequence: depth k's tokens k places on may sit on another device.
    split = object()  # any split: the refusal comes before the split is used
    with tnn.sequence_parallel(split), pytest.raises(ValueError, match="sequence_parallel split"):
        mtp_hidden(model, jnp.zeros((1, 4, 16)), {"inputs": jnp.zeros((1, 4), jnp.int32)})
