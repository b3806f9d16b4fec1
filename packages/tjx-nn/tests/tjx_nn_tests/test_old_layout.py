"""A model section in an older layout reads as today's: renamed keys moved, Llama 3's four numbers
a RoPE scaling section, the flat defaults a kind never read dropped."""

from __future__ import annotations

import pytest

from tjx import nn as tnn

#: The keys an old saved section listed for every kind, at the values they then held.
FLAT = {"image_size": 8, "patch_size": 2, "num_classes": 10, "tie_embeddings": True}


def test_the_old_precision_keys_move_to_the_precision_section():
    old = {"kind": "gpt2", "param_dtype": "float32", "compute_dtype": "bfloat16"}
    got = tnn.migrate_model_section(old)
    assert got == {
        "kind": "gpt2",
        "precision": {"param_dtype": "float32", "compute_dtype": "bfloat16"},
    }
    assert "param_dtype" in old  # the input is not modified
    with pytest.raises(ValueError) as err:
        tnn.migrate_model_section({"param_dtype": "float32", "precision": {"param_dtype": "x"}})
    new = "model.precision.param_dtype"
    assert str(err.value) == f"model.param_dtype: is {new} now, which is set too; keep only {new}"


@pytest.mark.parametrize(
    ("kind", "kept"),
    [
        ("gpt2", {"tie_embeddings"}),
        ("bert", set()),
        ("vit", {"image_size", "patch_size", "num_classes"}),
    ],
)
def test_a_flat_default_stays_only_where_the_kind_reads_it(kind, kept):
    got = tnn.migrate_model_section({"kind": kind, **FLAT})
    assert set(got) - {"kind", "num_channels"} == kept
    changed = tnn.migrate_model_section({"kind": "bert", "image_size": 32})
    assert changed["image_size"] == 32  # not the old default: the user's, left to the class


def test_an_old_vit_read_grey_images():
    assert (
        tnn.migrate_model_section({"kind": "vit", "compute_dtype": "float32"})["num_channels"] == 1
    )
    assert tnn.migrate_model_section({"kind": "vit"}, old_layout=True)["num_channels"] == 1
    assert "num_channels" not in tnn.migrate_model_section({"kind": "vit"})
    assert (
        tnn.migrate_model_section({"kind": "vit", "num_channels": 3}, old_layout=True)[
            "num_channels"
        ]
        == 3
    )


def test_llama3s_four_numbers_read_as_the_rope_scaling_section():
    got = tnn.migrate_model_section({"kind": "llama", "rope_scaling": [8, 1, 4, 8192]})
    scaling = got["position"]["rope_scaling"]
    assert scaling["type"] == "llama3" and scaling["factor"] == 8
    with pytest.raises(ValueError, match="^m.rope_scaling"):
        tnn.migrate_model_section({"rope_scaling": [8, 4, 1, 16]}, key="m")
    assert "model.param_dtype" in {f"model.{k}" for k in tnn.RENAMED_MODEL_KEYS}


def test_the_flat_moe_mla_and_delta_keys_move_into_their_sections():
    """A section written before the ``moe``/``mla``/``delta`` sections (a saved config lists
    every key, defaults too) reads as them: each key in its section, renamed where the section
    says it (``moe_layer_step`` → ``moe.layer_step``, ``delta_impl`` → ``delta.impl``)."""
    old = {
        "kind": "llama",
        "d_model": 64,
        "num_experts": 4,
        "experts_per_token": 2,
        "moe_layer_step": 2,
        "moe_first_dense": 1,
        "router": "sigmoid",
        "capacity_factor": None,
        "attention_type": "mha",
        "kv_latent_dim": None,
        "delta_key_heads": None,
        "delta_impl": "auto",
    }
    got = tnn.migrate_model_section(old)
    assert got == {
        "kind": "llama",
        "d_model": 64,
        "attention": {"type": "mha"},
        "moe": {
            "num_experts": 4,
            "experts_per_token": 2,
            "layer_step": 2,
            "first_dense": 1,
            "router": "sigmoid",
            "capacity_factor": None,
        },
        "mla": {"kv_latent_dim": None},
        "delta": {"key_heads": None, "impl": "auto"},
    }
    assert tnn.RENAMED_MODEL_KEYS["moe_layer_step"] == "moe.layer_step"
    assert tnn.RENAMED_MODEL_KEYS["delta_conv_kernel"] == "delta.conv_kernel"
    assert tnn.RENAMED_MODEL_KEYS["moe_beside_mlp"] == "moe.beside_mlp"  # Gemma 4's
    with pytest.raises(ValueError) as err:
        tnn.migrate_model_section({"num_experts": 4, "moe": {"num_experts": 8}})
    new = "model.moe.num_experts"
    assert str(err.value) == f"model.num_experts: is {new} now, which is set too; keep only {new}"
    # A ViT saved with these flat keys is of today's layout, not the old grey-image one.
    assert "num_channels" not in tnn.migrate_model_section({"kind": "vit", "num_experts": 0})


def test_gemma4s_flat_switches_move_into_its_option_section():
    """A section written before the ``gemma4`` section (its switches flat keys) reads as it,
    each under its own name; a switch given both ways is refused naming both keys."""
    old = {"kind": "llama", "d_model": 64, "kv_shared_layers": 2, "value_norm": True,
           "global_rope_proportion": 0.25, "layer_scale": False}  # fmt: skip
    assert tnn.migrate_model_section(old) == {
        "kind": "llama",
        "d_model": 64,
        "gemma4": {
            "kv_shared_layers": 2,
            "value_norm": True,
            "global_rope_proportion": 0.25,
            "layer_scale": False,
        },
    }
    assert tnn.RENAMED_MODEL_KEYS["per_layer_input_dim"] == "gemma4.per_layer_input_dim"
    with pytest.raises(ValueError, match=r"^model.value_norm: is model.gemma4.value_norm now"):
        tnn.migrate_model_section({"value_norm": True, "gemma4": {"value_norm": False}})


def test_the_flat_mtp_init_and_mlp_keys_move_into_their_sections():
    """A section written before the ``mtp``, ``init`` and ``mlp`` sections reads as them,
    renamed where the section says it (``scaled_residual_init`` → ``init.scaled_residual``); a
    model.json reads them alike."""
    old = {"kind": "llama", "mtp_depths": 1, "mtp_loss_weight": 0.1, "init_std": 0.01}
    old |= {"mlp_dim": 64, "mlp_activation": "geglu", "norm": "rmsnorm", "norm_eps": 1e-6}
    got = tnn.migrate_model_section({**old, "scaled_residual_init": False})
    assert got == {
        "kind": "llama",
        "mtp": {"depths": 1, "loss_weight": 0.1},
        "init": {"std": 0.01, "scaled_residual": False},
        "mlp": {"dim": 64, "activation": "geglu"},
        "norm": {"kind": "rmsnorm", "eps": 1e-6},
    }
    # norm, a name then, is a section now: a mapping there is today's layout, kept as it is.
    today = {"norm": {"kind": "rmsnorm", "eps": 1e-6}}
    assert tnn.migrate_model_section(today) == today
    with pytest.raises(ValueError, match=r"^model.norm_eps: is model.norm.eps now"):
        tnn.migrate_model_section({"norm_eps": 1e-6, "norm": {"eps": 1e-5}})
    assert tnn.RENAMED_MODEL_KEYS["scaled_residual_init"] == "init.scaled_residual"
    with pytest.raises(ValueError, match=r"^model.init_std: is model.init.std now"):
        tnn.migrate_model_section({"init_std": 0.01, "init": {"std": 0.02}})
    # Only the keys a file holds change: the rest is the family's own.
    fields = {"vocab_size": 40, "d_model": 16, "num_heads": 2, "num_layers": 1, "init_std": 0.01}
    config = tnn.config_from_dict({"class": "LlamaConfig", "fields": {**fields, "mlp_dim": 32}})
    assert config.init == tnn.InitConfig(std=0.01, scaled_residual=False)
    assert config.mlp == tnn.MLPConfig(dim=32, activation="swiglu")


def test_the_flat_position_keys_move_into_the_position_section():
    """A section written before the ``position`` section reads as it: ``position``, a name then,
    is ``position.kind``, a mapping there is today's; a model.json reads them alike."""
    old = {"kind": "llama", "position": "alibi", "rope_theta": 5e5, "rope_fraction": 1.0}
    old |= {"rope_local_theta": None, "relative_buckets": 16, "relative_max_distance": 64}
    got = tnn.migrate_model_section(old)
    assert got == {
        "kind": "llama",
        "position": {
            "kind": "alibi",
            "rope_theta": 5e5,
            "rope_fraction": 1.0,
            "rope_local_theta": None,
            "relative_buckets": 16,
            "relative_max_distance": 64,
        },
    }
    today = {"position": {"kind": "rope", "rope_theta": 5e5}}
    assert tnn.migrate_model_section(today) == today
    assert tnn.RENAMED_MODEL_KEYS["position"] == "position.kind"
    with pytest.raises(ValueError, match=r"^model.rope_theta: is model.position.rope_theta now"):
        tnn.migrate_model_section({"rope_theta": 5e5, "position": {"rope_theta": 1e4}})
    fields = {"vocab_size": 40, "d_model": 16, "num_heads": 2, "num_layers": 1}
    fields |= {"position": "t5", "relative_buckets": 8, "relative_max_distance": 16}
    config = tnn.config_from_dict({"class": "LlamaConfig", "fields": fields})
    assert config.position == tnn.PositionConfig(
        kind="t5", relative_buckets=8, relative_max_distance=16
    )
    # A model.json of today's version reads back the same config.
    again = tnn.config_from_dict(tnn.config_to_dict(config))
    assert again == config


def test_a_runs_start_checks_and_step_plan_went_to_the_trainer() -> None:
    """0.21 moved them to the trainer app, which tjx.nn cannot import: one ImportError line
    naming the new import."""
    with pytest.raises(ImportError, match="tjx-nn 0.21: .*`from trainer.step.init_checks import"):
        from tjx.nn import hf_start_config  # noqa: F401
    with pytest.raises(ImportError, match="`from trainer import roofline_inputs`"):
        tnn.roofline_inputs  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'batch_shape'"):
        tnn.batch_shape  # noqa: B018  (a typo stays an AttributeError)


def test_the_flat_attention_and_llama4_keys_move_into_their_sections():
    """A section or model.json written before the ``attention`` and ``llama4`` sections reads
    as them: each key in its section, renamed where the section says it
    (``attn_logit_softcap`` → ``attention.logit_softcap``); a key beside its new one is
    refused."""
    old = {
        "kind": "llama",
        "attention_type": "mha",
        "attention_dropout": 0.1,
        "sliding_window": 8,
        "window_pattern": ["local", "global"],
        "attn_logit_softcap": 30.0,
        "qk_norm": True,
        "decode_topk": None,
        "global_nope": False,
    }
    got = tnn.migrate_model_section(old)
    assert got == {
        "kind": "llama",
        "attention": {
            "type": "mha",
            "dropout": 0.1,
            "sliding_window": 8,
            "window_pattern": ["local", "global"],
            "logit_softcap": 30.0,
            "qk_norm": True,
            "decode_topk": None,
        },
        "llama4": {"global_nope": False},
    }
    assert tnn.RENAMED_MODEL_KEYS["attention_chunk"] == "attention.chunk"
    assert tnn.RENAMED_MODEL_KEYS["nope_temperature_floor"] == "llama4.nope_temperature_floor"
    fields = {k: v for k, v in old.items() if k != "kind"}
    config = tnn.config_from_dict({"class": "LlamaConfig", "fields": {**fields, "num_layers": 2}})
    assert config.layer_windows() == (8, None) and config.attention.logit_softcap == 30.0
    # Llama 4's flat NoPE switches (a model.json of tjx-nn 0.29) read into its section.
    llama4 = {"attention_chunk": 4, "window_pattern": ["local", "global"], "global_nope": True,
              "nope_temperature_floor": 8.0, "nope_temperature_scale": 0.2}  # fmt: skip
    config = tnn.config_from_dict({"class": "LlamaConfig", "fields": llama4})
    assert (config.attention.chunk, config.llama4.temperature()) == (4, (8.0, 0.2))
    assert tnn.config_from_dict(tnn.config_to_dict(config)) == config
    with pytest.raises(ValueError, match="model.sliding_window: is model.attention.sliding_window"):
        tnn.migrate_model_section({"sliding_window": 4, "attention": {"sliding_window": 8}})
