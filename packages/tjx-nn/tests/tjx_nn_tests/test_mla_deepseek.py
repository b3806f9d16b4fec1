"""DeepSeek's MLA (``qk_rope_head_dim``) and routing (grouped top-k, routed scale): against a
float64 NumPy reference written from the paper's equations, the KV cache against the full
forward, the HF mapping without transformers (tests-integration's test_hf_families.py compares
with transformers itself), and the settings' refusals."""

import json
import math
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.attention import Attention
from tjx.nn.routers import ROUTERS
from tjx_nn_tests._helpers import most_reads_alive, mtp_refusal

MLA = dict(
    vocab_size=48, max_seq_len=32, d_model=32, num_layers=3, num_heads=4, num_kv_heads=4,
    head_dim=12, mlp=tnn.MLPConfig(dim=40), **{"attention.type": "mla"},
    mla=tnn.MLAConfig(kv_latent_dim=16, qk_rope_head_dim=4, v_head_dim=6),
)  # fmt: skip
# Whole models run jitted, one program per model and shape: eagerly, each of a model's ops was
# traced, lowered and looked up in the compilation cache on its own.
_forward = nnx.jit(lambda model, tokens: model(tokens))
# A layer alone as well: jitted, with the layer and its inputs as arguments (the same program on
# every run, which the persistent compilation cache serves).
_attend = nnx.jit(lambda attn, x: attn(x)[0])
_prefill = nnx.jit(lambda attn, x, cache, pos: attn(x, cache=cache, cache_pos=pos))

MOE = tnn.MoEConfig(
    num_experts=8, experts_per_token=2, expert_mlp_dim=12, num_shared_experts=1, first_dense=1
)


def _mla(**changes):
    """`MLA`'s fields with ``changes`` to its ``mla`` section."""
    return dict(MLA, mla=replace(MLA["mla"], **changes))


def _moe(**changes):
    """`MOE` with ``changes``."""
    return replace(MOE, **changes)


YARN = dict(
    type="yarn", factor=4.0, original_max_position_embeddings=8, mscale=1.0, mscale_all_dim=1.0
)


def _rms(x, w, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w


def _rope(x, pos, inv, attention=1.0):
    """Rotate-half RoPE of ``x`` [s, ..., dim] at ``pos`` [s] (float64)."""
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(ang) * attention, np.sin(ang) * attention
    shape = (len(pos),) + (1,) * (x.ndim - 2) + (-1,)
    cos, sin = cos.reshape(shape), sin.reshape(shape)
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)


def _reference(attn, config, x):
    """DeepSeek MLA of one sequence ``x`` [s, d] in float64 from ``attn``'s parameters."""
    p = {k: np.asarray(v, np.float64) for k, v in tnn.get_flat_params(attn).items()}
    s, rope = x.shape[0], config.mla.qk_rope_head_dim
    pos = np.arange(s, dtype=np.float64)
    inv, attention = tnn.rope_parameters(
        rope, config.position.rope_theta, config.position.rope_scaling
    )
    q_in = x
    if config.mla.q_lora_rank:
        q_in = _rms(x @ p["query_down.kernel"], p["query_latent_norm.scale"])
    q = np.einsum("si,ihd->shd", q_in, p["query.kernel"])
    nope = q.shape[-1] - rope
    q[..., nope:] = _rope(q[..., nope:], pos, inv, attention)
    latent = _rms(x @ p["kv_down.kernel"], p["kv_latent_norm.scale"])
    k_rope = _rope(x @ p["key_rope.kernel"], pos, inv, attention)  # [s, rope], one per token
    k_nope = np.einsum("sr,rhd->shd", latent, p["key.kernel"])
    k = np.concatenate([k_nope, np.broadcast_to(k_rope[:, None], (*k_nope.shape[:2], rope))], -1)
    v = np.einsum("sr,rhd->shd", latent, p["value.kernel"])
    scale = config.head_dim**-0.5
    if config.position.rope_scaling is not None:
        scale *= (0.1 * math.log(config.position.rope_scaling.factor) + 1.0) ** 2
    logits = np.einsum("qhd,khd->hqk", q, k) * scale
    logits = np.where(np.tril(np.ones((s, s), bool)), logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = np.einsum("hqk,khd->qhd", w, v)
    return np.einsum("qhd,hdo->qo", out, p["out.kernel"])


@pytest.mark.parametrize(
    "extra",
    [MLA, dict(_mla(q_lora_rank=10), position=tnn.PositionConfig(rope_scaling=YARN))],
    ids=["v2-lite query", "v3 low-rank query, yarn mscale"],
)
def test_deepseek_attention_matches_a_float64_reference(extra):
    config = tnn.make_config(tnn.LlamaConfig, extra)
    attn = Attention(config, rngs=nnx.Rngs(3), causal=True)
    x = np.random.default_rng(0).normal(size=(1, 10, 32)).astype(np.float32)
    got = np.asarray(_attend(attn, jnp.asarray(x)))[0]
    want = _reference(attn, config, x[0].astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_decoding_with_the_latent_cache_matches_the_full_forward():
    moe = _moe(router="sigmoid", router_groups=4, router_topk_groups=2, router_scale=2.5)
    config = tnn.make_config(tnn.LlamaConfig, {**_mla(q_lora_rank=10), "moe": moe})
    model = tnn.Llama(config, rngs=nnx.Rngs(1))
    prompt = jnp.asarray(np.random.default_rng(2).integers(0, 48, (2, 5)))
    out = tnn.generate(model, prompt, max_new_tokens=8, temperature=0)
    logits = _forward(model, out)
    # Each generated token is the full forward's argmax at the position before it.
    np.testing.assert_array_equal(np.argmax(logits[:, 4:-1], -1), out[:, 5:])


def test_the_cache_holds_the_normed_latent_and_the_shared_rope_key():
    config = tnn.make_config(tnn.LlamaConfig, MLA)
    cache = tnn.init_cache(config, batch=2, max_len=8)
    assert {k: v.shape for k, v in cache.items()} == {
        "latent": (3, 2, 8, 16),
        "rope_key": (3, 2, 8, 4),
    }
    assert tnn.kv_cache_bytes(config, batch=2, seq_len=8, dtype=jnp.float32) == 3 * 2 * 8 * 20 * 4


def test_defaults_leave_the_older_mla_and_the_routers_as_they_were():
    """No DeepSeek field set: no new module, the same cache, scale and routing weights."""
    older = tnn.make_config(tnn.LlamaConfig, {**_mla(qk_rope_head_dim=None, v_head_dim=None)})
    attn = Attention(older, rngs=nnx.Rngs(0), causal=True)
    assert attn.key_rope is None and attn.kv_latent_norm is None and attn.width == 12
    assert attn.scale == 1.0 / math.sqrt(12)
    assert set(tnn.init_cache(older, batch=1, max_len=4)) == {"latent"}
    logits = jax.random.normal(jax.random.key(0), (5, 8))
    routing = ROUTERS["softmax"].fn(
        logits, None, tnn.make_config(tnn.LlamaConfig, {**MLA, "moe": MOE})
    )
    top, _ = jax.lax.top_k(jax.nn.softmax(logits), 2)
    np.testing.assert_array_equal(routing.weights, top / top.sum(-1, keepdims=True))


def _grouped_reference(scores, steer, groups, keep, k, by):
    """Top-k of ``steer`` [t, E] within each row's ``keep`` best groups (scored by ``by``)."""
    t, e = steer.shape
    chosen = []
    for row in range(t):
        g = steer[row].reshape(groups, e // groups)
        best = np.argsort(-by(g))[:keep]
        allowed = np.concatenate([np.arange(e // groups) + j * (e // groups) for j in best])
        chosen.append(sorted(allowed[np.argsort(-steer[row, allowed])[:k]]))
    return np.asarray(chosen)


@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
def test_grouped_routing_chooses_within_each_tokens_best_groups(router):
    moe = _moe(router=router, router_groups=4, router_topk_groups=2, router_scale=2.5,
               router_norm_topk=router == "sigmoid")  # fmt: skip
    config = tnn.make_config(tnn.LlamaConfig, {**MLA, "moe": moe})
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(64, 8)).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32) * 0.3 if router == "sigmoid" else None
    got = ROUTERS[router].fn(
        jnp.asarray(logits), None if bias is None else jnp.asarray(bias), config
    )
    x = logits.astype(np.float64)
    if router == "softmax":  # DeepSeek-V2: groups by their best probability
        scores = np.exp(x - x.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        steer, by = scores, lambda g: g.max(-1)
    else:  # DeepSeek-V3: groups by the sum of their two best scores + bias
        scores = 1 / (1 + np.exp(-x))
        steer, by = scores + bias, lambda g: np.sort(g, -1)[:, -2:].sum(-1)
    want = _grouped_reference(scores, steer, 4, 2, 2, by)
    experts = np.asarray(got.experts)
    np.testing.assert_array_equal(np.sort(experts, -1), want)
    weights = np.take_along_axis(scores, experts, -1)
    if router == "sigmoid":
        weights = weights / weights.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(got.weights), 2.5 * weights, rtol=1e-5)


@pytest.mark.parametrize(
    "fields, needle",
    [
        (dict(MLA, mla=dict(kv_latent_dim=16, v_head_dim=6)), "v_head_dim: only DeepSeek's MLA"),
        (dict(MLA, num_kv_heads=2), "num_kv_heads: DeepSeek's MLA"),
        (_mla(qk_rope_head_dim=5), "qk_rope_head_dim must be even"),
        (
            dict(MLA, **{"attention.type": "mha"}, mla=dict(q_lora_rank=8, qk_rope_head_dim=4)),
            "mla.q_lora_rank: only",
        ),
        (dict(MLA, moe=dict(router_scale=2.0)), "router_scale: only MoE models"),
        (dict(MLA, moe=dict(vars(MOE), router_groups=3)), "router_groups: 3 must divide"),
        (
            dict(MLA, moe=dict(vars(MOE), router_groups=4, router_topk_groups=5)),
            "router_topk_groups",
        ),
        (
            dict(MLA, moe=dict(vars(MOE), router="sigmoid", router_groups=8, router_topk_groups=2)),
            "two best",
        ),
    ],
)
def test_deepseek_settings_out_of_place_are_refused_by_name(fields, needle):
    """(A section given as a mapping here: its own checks run as it is built.)"""
    sections = {"mla": tnn.MLAConfig, "moe": tnn.MoEConfig}
    with pytest.raises(ValueError, match=needle):
        built = {k: sections[k](**v) if isinstance(v, dict) else v for k, v in fields.items()}
        tnn.make_config(tnn.LlamaConfig, built)


V3 = dict(
    _mla(q_lora_rank=10),
    position=tnn.PositionConfig(rope_scaling=YARN),
    moe=_moe(router="sigmoid", router_groups=4, router_topk_groups=2, router_scale=2.5),
)
V2 = dict(MLA, moe=_moe(num_shared_experts=2, router_norm_topk=False, router_scale=1.5))


@pytest.mark.parametrize("fields, model_type", [(V2, "deepseek_v2"), (V3, "deepseek_v3")])
def test_a_deepseek_export_loads_back_as_the_same_model(tmp_path, fields, model_type):
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, fields), rngs=nnx.Rngs(0))
    tnn.save_hf(model, tmp_path / "ck")
    hf = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert hf["model_type"] == model_type and hf["head_dim"] == 4
    loaded, config = tnn.load_hf(tmp_path / "ck", scan_layers=True)
    aux = config.moe.router_aux_loss
    assert config == model.config.replace(scan_layers=True, **{"moe.router_aux_loss": aux})
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 48, (1, 9)))
    np.testing.assert_allclose(
        _forward(loaded, tokens), _forward(model, tokens), rtol=1e-5, atol=1e-5
    )


def _v3_folder(tmp_path, **hf_changes):
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, V3), rngs=nnx.Rngs(0))
    folder = tmp_path / "v3"
    tnn.save_hf(model, folder)
    hf = json.loads((folder / "config.json").read_text()) | hf_changes
    (folder / "config.json").write_text(json.dumps(hf))
    return folder


def test_multi_token_prediction_layers_are_skipped_with_one_line(tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    folder = _v3_folder(tmp_path, num_nextn_predict_layers=1)
    tensors = load_file(str(folder / "model.safetensors"))
    mtp = {n.replace("layers.2.", "layers.3."): t for n, t in tensors.items() if "layers.2." in n}
    mtp["model.layers.3.eh_proj.weight"] = np.zeros((32, 64), np.float32)
    save_file({**tensors, **mtp}, str(folder / "model.safetensors"))
    model, config = tnn.load_hf(folder, **{"mtp.depths": 0})  # the causal LM alone
    err = capsys.readouterr().err
    assert config.num_layers == 3 and err.count("multi-token-prediction") == 1
    assert model.mtp is None
    with pytest.raises(ValueError, match="mtp.depths=2: the checkpoint stores 1"):
        tnn.load_hf(folder, **{"mtp.depths": 2})
    with pytest.raises(ValueError, match="mtp.depths=2: the checkpoint stores 1"):
        tnn.read_hf_config(folder, **{"mtp.depths": 2})  # a plan refuses it as the load does


def test_mtp_layers_a_config_counts_but_the_folder_lacks_load_as_none_with_one_line(
    tmp_path, capsys
):
    """transformers keeps num_nextn_predict_layers in a folder it saves, without the layers."""
    folder = _v3_folder(tmp_path, num_nextn_predict_layers=1)  # tensors of the causal LM only
    config = tnn.read_hf_config(folder)
    model, loaded = tnn.load_hf(folder)
    err = capsys.readouterr().err.splitlines()
    assert config.mtp.depths == loaded.mtp.depths == 0 and model.mtp is None
    assert len(err) == 2 and all("holds none of their tensors (model.layers.3.*" in e for e in err)
    # One of their tensors without the rest is damage, named as such.
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    save_file(
        {**tensors, "model.layers.3.enorm.weight": np.ones(32, np.float32)},
        str(folder / "model.safetensors"),
    )
    with pytest.raises(ValueError, match="checkpoint lacks tensor"):
        tnn.load_hf(folder)


def test_a_config_counting_more_mtp_layers_than_the_folder_holds_refuses_the_rest_as_it_reads(
    tmp_path, capsys
):
    """num_nextn_predict_layers 2 over a folder holding depth 0 alone (model.layers.3.*, none of
    model.layers.4.*): the checkpoint stores 1, said in one line; mtp.depths 2 is refused as the
    config is read (a plan) and as it loads, naming the setting, not at the first tensor the
    load lacks; the depth it holds loads whole, and mtp.depths=0 loads the causal LM alone."""
    from safetensors.numpy import load_file

    model = tnn.Llama(
        tnn.make_config(tnn.LlamaConfig, {**V3, "mtp": tnn.MTPConfig(depths=1)}),
        rngs=nnx.Rngs(1),
    )
    folder = tmp_path / "v3"
    tnn.save_hf(model, folder)
    hf = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(hf | {"num_nextn_predict_layers": 2}))
    assert not any(n.startswith("model.layers.4.") for n in load_file(folder / "model.safetensors"))
    assert mtp_refusal(folder, 2) == (
        "mtp.depths=2: the checkpoint stores 1 multi-token-prediction layer(s) "
        "(num_nextn_predict_layers); set mtp.depths <= 1"
    )
    capsys.readouterr()
    loaded, config = tnn.load_hf(folder)
    said = capsys.readouterr().err.splitlines()
    assert said == [
        "tjx: config.json counts 2 multi-token-prediction layer(s) (num_nextn_predict_layers) but "
        "the checkpoint holds the first 1 (model.layers.3.*; none of model.layers.4.*): reading "
        "it as 1 (mtp.depths <= 1)"
    ]
    assert config.mtp.depths == 1
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    trunk, config = tnn.load_hf(folder, **{"mtp.depths": 0})
    assert config.mtp.depths == 0 and trunk.mtp is None


def test_multi_token_prediction_round_trips_exactly(tmp_path):
    """V3 with an MTP depth (an MoE block, as DeepSeek-V3's): written in DeepSeek's layout (the
    shared embedding and head as copies), read back to the same parameters, written again to
    the same tensors."""
    from safetensors.numpy import load_file

    model = tnn.Llama(
        tnn.make_config(tnn.LlamaConfig, {**V3, "mtp": tnn.MTPConfig(depths=1)}),
        rngs=nnx.Rngs(1),
    )
    assert model.mtp is not None and model.mtp.layers[0].block.moe is not None
    tnn.save_hf(model, tmp_path / "a")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["num_nextn_predict_layers"] == 1
    first = load_file(str(tmp_path / "a" / "model.safetensors"))
    p = "model.layers.3."
    assert first[p + "eh_proj.weight"].shape == (32, 64)
    assert {p + n for n in ("enorm.weight", "hnorm.weight", "shared_head.norm.weight")} <= set(
        first
    )
    assert (
        p + "mlp.gate.e_score_correction_bias" in first
        and p + "self_attn.kv_b_proj.weight" in first
    )
    np.testing.assert_array_equal(
        first[p + "embed_tokens.weight"], first["model.embed_tokens.weight"]
    )
    np.testing.assert_array_equal(first[p + "shared_head.head.weight"], first["lm_head.weight"])
    loaded, config = tnn.load_hf(tmp_path / "a")
    assert config.mtp.depths == 1
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got) and any(n.startswith("mtp.layers.0.block.moe.") for n in got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    tnn.save_hf(loaded, tmp_path / "b")
    again = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert set(again) == set(first)
    for name in first:
        np.testing.assert_array_equal(again[name], first[name], err_msg=name)


def test_a_model_with_mtp_is_not_saved_where_hf_has_no_place_for_it(tmp_path):
    model = tnn.Llama(
        tnn.make_config(tnn.LlamaConfig, {**V2, "mtp": tnn.MTPConfig(depths=1)}),
        rngs=nnx.Rngs(0),
    )
    with pytest.raises(ValueError, match="mtp.depths=1: model_type 'deepseek_v2' stores no"):
        tnn.save_hf(model, tmp_path / "ck")


@pytest.mark.parametrize(
    "changes, needle",
    [
        (dict(num_key_value_heads=2), "num_key_value_heads 2"),
        (dict(attention_bias=True, mlp_bias=True), "attention_bias"),
        (dict(scoring_func="softmax"), "scoring_func"),
        (dict(moe_layer_freq=2), "moe_layer_freq"),
        (dict(model_type="deepseek_v2", norm_topk_prob=True, n_group=1, topk_group=1), "norm_topk"),
        (dict(auto_map={"AutoModel": "modeling_x.X"}), "auto_map"),
    ],
)
def test_deepseek_options_tjx_does_not_compute_are_refused_in_one_line(tmp_path, changes, needle):
    folder = _v3_folder(tmp_path, **changes)
    with pytest.raises(ValueError, match=needle) as err:
        tnn.load_hf(folder)
    assert "\n" not in str(err.value)


def test_an_rms_norm_eps_other_than_1e6_keeps_the_latent_norms_at_1e6(tmp_path):
    """transformers' DeepSeek-V3 norms its latents at 1e-6 whatever rms_norm_eps (Kimi-K2.5's
    1e-5) gives its other norms: tjx reads it so (``mla.latent_norm_eps``), computes with both
    (a model with one epsilon everywhere gives other logits) and writes rms_norm_eps back."""
    folder = _v3_folder(tmp_path, rms_norm_eps=0.5)  # large: both epsilons change the logits
    model, config = tnn.load_hf(folder)
    assert (config.norm.eps, config.mla.latent_norm_eps) == (0.5, 1e-6)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, V3["vocab_size"], (1, 6)))
    one_eps, _ = tnn.load_hf(folder, mla=replace(config.mla, latent_norm_eps=None))
    assert not np.allclose(_forward(model, tokens), _forward(one_eps, tokens), atol=1e-3)
    tnn.save_hf(model, tmp_path / "back")
    assert json.loads((tmp_path / "back" / "config.json").read_text())["rms_norm_eps"] == 0.5
    with pytest.raises(ValueError, match="MLAConfig.latent_norm_eps: 0.0 must be > 0"):
        replace(config.mla, latent_norm_eps=0.0)
    with pytest.raises(ValueError, match="mla.latent_norm_eps"):  # HF's latents: 1e-6 only
        tnn.save_hf(one_eps, tmp_path / "one")


def test_deepseek_upstream_auto_map_loads(tmp_path):
    auto = {"AutoConfig": "configuration_deepseek.DeepseekV3Config"}
    _, config = tnn.load_hf(_v3_folder(tmp_path, auto_map=auto))
    assert config.moe.router == "sigmoid"


def test_a_model_deepseek_cannot_express_is_not_written(tmp_path):
    gated = replace(V2["moe"], shared_expert_gate=True)
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, {**dict(V2, moe=gated)}), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="shared_expert_gate=True"):
        tnn.save_hf(model, tmp_path / "no")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("q_lora_rank", [None, 10])
def test_flops_count_every_weight_of_deepseeks_attention_once(q_lora_rank):
    """The attention's matmul weights in ``flops_per_token`` are its kernels' sizes, and the
    score/value terms use head_dim for q·k and v_head_dim for the values."""
    from tjx.nn.flops import _attention_weights

    config = tnn.make_config(tnn.LlamaConfig, {**_mla(q_lora_rank=q_lora_rank)})
    attn = Attention(config, rngs=nnx.Rngs(0), causal=True)
    kernels = {k: v.size for k, v in tnn.get_flat_params(attn).items() if k.endswith("kernel")}
    assert sum(_attention_weights(config)) == sum(kernels.values())
    s = 16
    older = tnn.make_config(tnn.LlamaConfig, {**_mla(v_head_dim=12, q_lora_rank=q_lora_rank)})
    # Narrower values (6 instead of 12 dims a head) save, per token and layer, 6·(their value
    # and output weights) (2 FLOPs a multiply-add, x3 with the backward pass), and 6·(4 heads x
    # 6 dims)·s/2 in the weighted sum (a causal query sees s/2 keys on average).
    saved = tnn.flops_per_token(older, s) - tnn.flops_per_token(config, s)
    fewer = sum(_attention_weights(older)) - sum(_attention_weights(config))
    assert fewer == 16 * 4 * 6 + 4 * 6 * 32  # value [r, h, 6] and out [h, 6, d]
    assert saved == 3 * (6 * fewer + 6 * (4 * 6) * s / 2)


#: DeepSeek-V2-Lite's config.json as published (its keys and switches), shrunk to tiny sizes.
V2_LITE = {
    "architectures": ["DeepseekV2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV2Config",
        "AutoModel": "modeling_deepseek.DeepseekV2Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM",
    },
    "aux_loss_alpha": 0.001, "bos_token_id": 100000, "eos_token_id": 100001,
    "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 32,
    "initializer_range": 0.02, "intermediate_size": 48, "kv_lora_rank": 16,
    "max_position_embeddings": 1280, "model_type": "deepseek_v2", "moe_intermediate_size": 12,
    "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 8, "n_shared_experts": 2,
    "norm_topk_prob": False, "num_attention_heads": 4, "num_experts_per_tok": 6,
    "num_hidden_layers": 3, "num_key_value_heads": 4, "pretraining_tp": 1, "q_lora_rank": None,
    "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707,
                     "mscale_all_dim": 0.707, "original_max_position_embeddings": 32,
                     "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax",
    "seq_aux": True, "tie_word_embeddings": False, "topk_group": 1, "topk_method": "greedy",
    "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": True,
    "v_head_dim": 6, "vocab_size": 64,
}  # fmt: skip


def test_v2_lites_published_config_reads_with_its_yarn_softmax_scale():
    from tjx.nn.hf.deepseek import deepseek_config_from_hf
    from tjx.nn.hf.quantized import Quantization, quantization_from_hf

    config = deepseek_config_from_hf(V2_LITE)
    assert (config.mla.q_lora_rank, config.head_dim, config.mla.v_head_dim) == (None, 12, 6)
    moe = config.moe
    assert (moe.experts_per_token, moe.router, moe.router_groups) == (6, "softmax", 1)
    assert config.position.rope_scaling.type == "yarn" and config.max_seq_len == 1280
    attn = Attention(config, rngs=nnx.Rngs(0), causal=True)
    mscale = 0.1 * 0.707 * math.log(40) + 1  # transformers' yarn_get_mscale(40, 0.707)
    assert attn.scale == pytest.approx(12**-0.5 * mscale**2, rel=1e-12)
    # An FP8 release (#70): its quantization_config is read where the weights load
    # (tjx.nn.hf.quantized, transformers' default 128 x 128 blocks); the architecture's reader
    # never takes the key silently.
    fp8 = dict(V2_LITE, quantization_config={"quant_method": "fp8"})
    assert quantization_from_hf(fp8) == Quantization("fp8", (128, 128))
    with pytest.raises(ValueError, match="quantization_config are not understood"):
        deepseek_config_from_hf(fp8)


def test_a_deepseek_models_adapters_are_not_exported_as_a_peft_folder(tmp_path):
    """PEFT's targets would be HF's q/k/v_proj, which DeepSeek's attention does not have (and
    its query rows are permuted): refused, nothing written; ``save_hf`` merges them instead."""
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, V2), rngs=nnx.Rngs(0))
    lora = tnn.LoraConfig(rank=2, targets=("q", "v"))
    tnn.add_lora(model, lora, rngs=nnx.Rngs(1))
    from tjx.nn.lora import lora_modules

    for i, (_, _, dense) in enumerate(lora_modules(model)):  # B starts at 0: make it count
        b = dense.lora.lora_b
        b[...] = jax.random.normal(jax.random.key(i), b[...].shape) * 0.1
    with pytest.raises(ValueError, match="PEFT export does not cover MLA"):
        tnn.save_peft(model, tmp_path / "peft", lora)
    assert not (tmp_path / "peft").exists()
    tnn.save_hf(model, tmp_path / "merged")  # the adapters merged into the kernels
    loaded, _ = tnn.load_hf(tmp_path / "merged")
    tokens = jnp.asarray([[1, 2, 3, 4, 5]])
    bare = tnn.Llama(tnn.make_config(tnn.LlamaConfig, V2), rngs=nnx.Rngs(0))
    logits = _forward(model, tokens)
    assert np.abs(np.asarray(logits - _forward(bare, tokens))).max() > 1e-3  # the adapters act
    np.testing.assert_allclose(_forward(loaded, tokens), logits, rtol=1e-5, atol=1e-5)


def test_import_holds_one_tensor_or_one_layers_experts_at_a_time(tmp_path, monkeypatch):
    """Each tensor read is let go before the next, but for the routed experts, which stack one
    layer's projections (8 here) into one kernel: peak memory stays near the weights' bytes."""
    tnn.save_hf(tnn.Llama(tnn.make_config(tnn.LlamaConfig, V3), rngs=nnx.Rngs(0)), tmp_path / "ck")
    assert most_reads_alive(monkeypatch, tmp_path / "ck") == (8, 0)


@pytest.mark.parametrize(
    "extra", [MLA, dict(_mla(q_lora_rank=10), position=tnn.PositionConfig(rope_scaling=YARN))]
)
def test_the_absorbed_decode_step_equals_up_projecting_every_latent(monkeypatch, extra):
    """DeepSeek's inference form (key folded into the query, value into the output) attends to
    the same cache with the same result, to float32 rounding."""
    from tjx.nn import mla

    config = tnn.make_config(tnn.LlamaConfig, extra)
    attn = Attention(config, rngs=nnx.Rngs(4), causal=True)
    rng = np.random.default_rng(1)
    prompt, step = (jnp.asarray(rng.normal(size=(2, n, 32)), jnp.float32) for n in (6, 1))
    empty = {k: v[0] for k, v in tnn.init_cache(config, batch=2, max_len=8).items()}
    _, cache = _prefill(attn, prompt, empty, jnp.zeros((2,), jnp.int32))
    pos = jnp.full((2,), 6, jnp.int32)

    def decode():
        # A new jitted function each time: traced again, so that it reads ``mla.absorbable``.
        run = nnx.jit(lambda a, x, c, p: a(x, positions=p[:, None], cache=c, cache_pos=p))
        return run(attn, step, cache, pos)

    assert mla.absorbable(attn)
    absorbed, new = decode()
    monkeypatch.setattr(mla, "absorbable", lambda _: False)
    projected, again = decode()
    np.testing.assert_allclose(absorbed, projected, rtol=1e-5, atol=1e-6)
    for name in new:
        np.testing.assert_array_equal(new[name], again[name])
