"""``config_to_dict`` / ``config_from_dict`` (a run's ``model.json``) and ``MODEL_KINDS``."""

import dataclasses
import json

import jax.numpy as jnp
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.configs import FLAT_SECTION_KEYS
from tjx.nn.families.gemma4 import Gemma4Options
from tjx.nn.families.llama4.options import Llama4Options
from tjx_nn_tests import _written_0_28 as written

#: A ``model.json`` exactly as the trainer wrote it before tjx-nn owned the format (tjx-nn 0.1):
#: runs written then must still load.
WRITTEN_BY_TJX_0_1 = {
    "class": "LlamaConfig",
    "fields": {
        "vocab_size": 40, "max_seq_len": 256, "d_model": 16, "num_layers": 2, "num_heads": 2,
        "num_kv_heads": 1, "head_dim": 8, "mlp_dim": 64, "mlp_activation": "swiglu",
        "norm": "rmsnorm", "norm_eps": 1e-06, "norm_position": "pre", "position": "rope",
        "rope_theta": 10000.0, "relative_buckets": 32, "relative_max_distance": 128,
        "use_bias": False, "dropout": 0.0, "attention_dropout": 0.0, "tie_embeddings": True,
        "attention_impl": "auto", "scan_layers": False, "remat": "none",
        "precision": {"param_dtype": "float32", "compute_dtype": "bfloat16"},
        "init_std": 0.02, "scaled_residual_init": False, "attention_type": "mha",
        "kv_latent_dim": None, "decode_topk": None,
    },
}  # fmt: skip

SMALL = dict(vocab_size=50, max_seq_len=16, d_model=16, num_layers=1, num_heads=2)
CONFIGS = [
    tnn.make_config(
        tnn.GPT2Config, {**SMALL, "precision": "bf16", "scan_layers": True, "remat": "full"}
    ),
    tnn.make_config(
        tnn.GPT2Config,
        {**SMALL, "precision": tnn.Precision(jnp.float32, jnp.bfloat16, jnp.bfloat16)},
    ),
    tnn.make_config(
        tnn.LlamaConfig,
        {
            **SMALL,
            "num_kv_heads": 1,
            "mla": tnn.MLAConfig(kv_latent_dim=8),
            "attention": tnn.AttentionConfig(type="mla"),
        },
    ),
    tnn.make_config(tnn.BertConfig, {**SMALL, "precision": "pure_bf16"}),
    tnn.ViTConfig(d_model=16, num_layers=1, num_heads=2, image_size=8, patch_size=4),
    tnn.make_config(
        tnn.EncoderDecoderConfig, {**SMALL, "num_decoder_layers": 2, "position.kind": "t5"}
    ),
    tnn.make_config(tnn.TransformerConfig, {**SMALL, "precision": "fp16"}),
    tnn.make_config(
        tnn.LlamaConfig,
        {**SMALL, "moe": tnn.MoEConfig(num_experts=4, capacity_factor=1.25, router="sigmoid")},
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_round_trip_through_json(config):
    data = json.loads(json.dumps(tnn.config_to_dict(config)))
    assert data["class"] == type(config).__name__
    assert data["fields"]["precision"] == {
        "param_dtype": jnp.dtype(config.precision.param_dtype).name,
        "compute_dtype": jnp.dtype(config.precision.compute_dtype).name,
        "logits_dtype": jnp.dtype(config.precision.logits_dtype).name,
    }
    assert tnn.config_from_dict(data) == config


def test_a_model_json_of_tjx_0_1_loads():
    config = tnn.config_from_dict(json.loads(json.dumps(WRITTEN_BY_TJX_0_1)))
    assert type(config) is tnn.LlamaConfig
    assert (config.d_model, config.num_kv_heads, config.tie_embeddings) == (16, 1, True)
    assert config.precision == tnn.Precision(jnp.float32, jnp.bfloat16)
    # Written again, it gains only the fields added since (#28's rope_scaling, qkv_bias; #39's
    # cross_entropy_impl; #42's sliding_window, window_pattern; #41's MoE settings, at their dense
    # defaults; #44's family switches and DeepSeek's MLA fields; #56's gpt-oss and GLM switches),
    # the MoE, MLA and delta settings as their sections (its flat kv_latent_dim moved in),
    newer = {"qkv_bias": False, "cross_entropy_impl": "auto",
             "sliding_window": None, "window_pattern": None,
             "moe": dataclasses.asdict(tnn.MoEConfig())}  # fmt: skip
    newer |= {
        "qk_norm": False,
        "qk_norm_scope": "head",
        "scale_embeddings": False,
        "query_pre_attn_scalar": None,
        "attn_logit_softcap": None,
        "final_logit_softcap": None,
        "mla": {
            "kv_latent_dim": None,
            "q_lora_rank": None,
            "qk_rope_head_dim": None,
            "v_head_dim": None,
            # #70's DeepSeek Sparse Attention and DeepSeek's latent norms' own epsilon: off.
            "index_topk": None,
            "index_n_heads": None,
            "index_head_dim": None,
            "index_loss_weight": 0.0,  # the indexer's loss: off, over the selected keys
            "index_loss": "sparse",
            "latent_norm_eps": None,
        },
        "attention_sinks": False,
        # #56's Qwen3.5 settings: the gated attention output, the delta layers and their sizes.
        "attention_output_gate": False,
        "mixer_pattern": None,
        "delta": {
            "key_heads": None,
            "value_heads": None,
            "key_dim": None,
            "value_dim": None,
            "conv_kernel": 4,
            "impl": "auto",
        },
        # #56's multi-token prediction (DeepSeek-V3's MTP): none, and its loss weight.
        "mtp": {"depths": 0, "loss_weight": 0.3},
        # #56's Llama 4 settings: chunks, NoPE global layers, the weightless q/k norm, the
        # NoPE layers' temperature (router_scales_input is with the MoE settings above).
        "attention_chunk": None,
        "global_nope": False,
        "qk_l2_norm": False,
        "nope_temperature_floor": None,
        "nope_temperature_scale": 0.1,
        # #56's Gemma 4 layer switches, its option section.
        "gemma4": {
            "global_head_dim": None,
            "global_kv_heads": None,
            "global_values_from_keys": False,
            "global_rope_proportion": 1.0,
            "value_norm": False,
            "kv_shared_layers": 0,
            "kv_shared_mlp_dim": None,
            "per_layer_input_dim": 0,
            "per_layer_vocab_size": None,
            "layer_scale": False,
        },
    }
    # #51's logits_dtype: the float32 logits such a run had.
    newer["precision"] = {**WRITTEN_BY_TJX_0_1["fields"]["precision"], "logits_dtype": "float32"}
    # The init and MLP settings as their sections (their flat keys moved in).
    newer["init"] = {"std": 0.02, "scaled_residual": False}
    newer["mlp"] = {"dim": 64, "activation": "swiglu", "impl": "auto"}
    newer["norm"] = {"kind": "rmsnorm", "eps": 1e-06, "position": "pre", "plus_one": False}
    newer["norm"] |= {"impl": "auto"}  # who runs them (#68), at its default
    moved = ("kv_latent_dim", "init_std", "scaled_residual_init", "mlp_dim", "mlp_activation")
    moved += ("norm", "norm_eps", "norm_position")
    # The position settings as their section (its flat keys moved in; rope_scaling,
    # rope_fraction and rope_local_theta came later, at their defaults).
    newer["position"] = {"kind": "rope", "rope_theta": 10000.0, "rope_fraction": 1.0}
    newer["position"] |= {"rope_scaling": None, "rope_local_theta": None}
    newer["position"] |= {"relative_buckets": 32, "relative_max_distance": 128}
    moved += ("position", "rope_theta", "relative_buckets", "relative_max_distance")
    old = {k: v for k, v in WRITTEN_BY_TJX_0_1["fields"].items() if k not in moved}
    want = {**WRITTEN_BY_TJX_0_1, "fields": {**old, **newer}}
    # ... and the attention settings and Llama 4's in their sections (at their defaults here;
    # the position section's are above: the file predates some of them).
    for flat in [k for k, v in FLAT_SECTION_KEYS.items() if not v.startswith("position.")]:
        assert want["fields"].pop(flat) == tnn.setting_value(config, FLAT_SECTION_KEYS[flat])
    want["fields"]["attention"] = dataclasses.asdict(tnn.AttentionConfig())
    want["fields"]["llama4"] = dataclasses.asdict(Llama4Options())
    assert tnn.config_to_dict(config) == want
    # An older file without the newer fields (and a preset name for precision) keeps defaults.
    short = {"class": "GPT2Config", "fields": {**SMALL, "precision": "bf16"}}
    assert tnn.config_from_dict(short) == tnn.make_config(
        tnn.GPT2Config, {**SMALL, "precision": "bf16"}
    )


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({}, "class must be one of ('TransformerConfig', 'GPT2Config'"),
        ({"class": "Precision", "fields": {}}, "got 'Precision'"),
        ({"class": "GPT2Config"}, "'fields' must be a mapping; got None"),
        ({"class": "GPT2Config", "fields": {"d_model": 16, "colour": 1}}, "no field(s) colour"),
        ({"class": "GPT2Config", "fields": {"precision": {"param_dtype": "x"}}}, "dtype names"),
        ({"class": "GPT2Config", "fields": {"precision": {"param_dtype": "float32",
                                                          "compute_dtype": "nope"}}}, "dtype"),
        ({"class": "GPT2Config", "fields": {"num_heads": 0}}, "GPT2Config.num_heads"),
        ({"class": "GPT2Config", "fields": {"moe": {"colour": 1}}}, "GPT2Config.moe has no fie"),
        ({"class": "GPT2Config", "fields": {"mla": {"kv_latent_dim": 0}}}, "MLAConfig.kv_latent"),
    ],
)  # fmt: skip
def test_bad_descriptions_raise_value_errors_naming_the_problem(data, needle):
    with pytest.raises(ValueError) as err:
        tnn.config_from_dict(data)
    assert needle in str(err.value)


def test_model_kinds_build_their_models():
    models = {"gpt2": tnn.GPT2, "llama": tnn.Llama, "bert": tnn.BERT, "vit": tnn.ViT}
    models["encdec"] = tnn.EncoderDecoder
    assert set(tnn.MODEL_KINDS) == set(models)
    for kind, cls in tnn.MODEL_KINDS.items():
        fields = {"d_model": 16, "num_layers": 1, "num_heads": 2}
        if kind == "vit":
            fields |= {"image_size": 8, "patch_size": 4}
        else:
            fields |= {"vocab_size": 40, "max_seq_len": 8}
        model = nnx.eval_shape(
            lambda cls=cls, f=fields: tnn.build_model(cls(**f), rngs=nnx.Rngs(0))
        )
        assert type(model) is models[kind]


@pytest.mark.parametrize("name", ["MLA_MOE", "DELTA"])
def test_a_model_json_of_tjx_0_28_with_flat_section_settings_loads_as_the_same_model(name):
    """tjx-nn 0.28 wrote the MoE, MLA, delta, multi-token prediction and init settings as flat
    fields: they load into their sections, each value where it was, and write back nested."""
    data = json.loads(json.dumps(getattr(written, name)))
    flat = data["fields"]
    config = tnn.config_from_dict(data)
    moved = {
        **{f"moe.{k}": k for k in ("num_experts", "router", "router_groups", "router_bias_rate")},
        "moe.layer_step": "moe_layer_step",
        "moe.first_dense": "moe_first_dense",
        "moe.beside_mlp": "moe_beside_mlp",
        "moe.router_expert_scale": "router_expert_scale",
        **{f"mla.{k}": k for k in ("kv_latent_dim", "q_lora_rank", "qk_rope_head_dim")},
        **{f"delta.{k}": f"delta_{k}" for k in ("key_heads", "value_dim", "conv_kernel", "impl")},
        **{f"gemma4.{k}": k for k in ("global_head_dim", "kv_shared_layers", "layer_scale")},
        **{"mtp.depths": "mtp_depths", "mtp.loss_weight": "mtp_loss_weight"},
        **{"init.std": "init_std", "init.scaled_residual": "scaled_residual_init"},
        **{"mlp.dim": "mlp_dim", "mlp.activation": "mlp_activation"},
        **{"norm.kind": "norm", "norm.eps": "norm_eps", "norm.position": "norm_position"},
        "norm.plus_one": "norm_plus_one",
    }
    for new, old in moved.items():
        assert tnn.setting_value(config, new) == flat[old], new
    assert config.d_model == flat["d_model"]
    again = tnn.config_to_dict(config)
    assert not (set(moved.values()) - set(tnn.SECTIONS)) & set(again["fields"])  # norm: a section
    assert tnn.config_from_dict(again) == config
    # A file holding a setting both ways is refused, naming both keys.
    both = {**data, "fields": {**flat, "moe": {"num_experts": 2}}}
    with pytest.raises(ValueError, match=r"LlamaConfig.num_experts: is LlamaConfig.moe.num_"):
        tnn.config_from_dict(both)


def test_a_gemma4_model_json_of_tjx_0_29_loads_its_flat_switches_into_their_section():
    """tjx-nn 0.29 wrote Gemma 4's switches as flat fields: a Gemma 4 model.json of then (its
    switches set) loads as the same model, and writes back with the ``gemma4`` section."""
    options = Gemma4Options(global_head_dim=16, global_kv_heads=1, global_values_from_keys=True,
                            global_rope_proportion=0.25, value_norm=True, kv_shared_layers=2,
                            kv_shared_mlp_dim=24, per_layer_input_dim=4, per_layer_vocab_size=20,
                            layer_scale=True)  # fmt: skip
    config = tnn.LlamaConfig(num_layers=4, num_heads=4, num_kv_heads=2, head_dim=8, d_model=16,
                             attention=tnn.AttentionConfig(sliding_window=3,
                                                           window_pattern=["local", "global"]),
                             gemma4=options)  # fmt: skip
    today = tnn.config_to_dict(config)
    section = today["fields"].pop("gemma4")
    assert section == dataclasses.asdict(options)
    then = json.loads(json.dumps({**today, "fields": {**today["fields"], **section}}))
    assert tnn.config_from_dict(then) == config
