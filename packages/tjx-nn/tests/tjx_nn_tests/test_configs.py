import ast
import dataclasses
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn import config_keys, configs, cross_checks
from tjx.nn.families.gemma4 import Gemma4Options
from tjx.nn.families.llama4 import options as llama4_options
from tjx.nn.families.llama4.options import Llama4Options
from tjx.nn.family_config import DECODER_ONLY
from tjx.nn.moe.config import NO_MOE
from tjx.nn.norm_config import filled
from tjx.nn.norms import make_norm

HF_COUNTS = {
    "small": 124_439_808,
    "medium": 354_823_168,
    "large": 774_030_080,
    "xl": 1_557_611_200,
}


@pytest.mark.parametrize("name", list(HF_COUNTS))
def test_gpt2_presets_match_hf_param_counts(name):
    cfg = tnn.gpt2_config(name, scan_layers=True)
    abstract = nnx.eval_shape(lambda: tnn.build_model(cfg, rngs=nnx.Rngs(0)))
    assert tnn.count_params(abstract) == HF_COUNTS[name]
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # nothing materialised


def test_gpt2_config_overrides_and_unknown_preset():
    cfg = tnn.gpt2_config("small", max_seq_len=256, dropout=0.1)
    assert cfg.max_seq_len == 256 and cfg.dropout == 0.1 and cfg.d_model == 768
    with pytest.raises(ValueError, match=r"small.*medium.*large.*xl"):
        tnn.gpt2_config("huge")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(d_model=30, num_heads=4), "d_model"),
        (dict(num_heads=4, num_kv_heads=3), "num_kv_heads"),
        (dict(num_layers=-1), "num_layers"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(dropout=1.5), "dropout"),
        (dict(remat="everything"), "remat"),
        (dict(attention_impl="triton"), "attention_impl"),
        (dict(precision="fp8"), "precision"),
        (dict(**{"attention.type": "mla"}), "kv_latent_dim"),
        (dict(position=tnn.PositionConfig(kind="rope"), d_model=36, num_heads=4), "head_dim"),
        (dict(**{"attention.decode_topk": 0}), "decode_topk"),
    ],
)
def test_bad_configs_raise_naming_the_field(kwargs, field):
    base = dict(vocab_size=64, max_seq_len=16, d_model=32, num_layers=2, num_heads=4)
    with pytest.raises(ValueError, match=re.escape(field)):
        tnn.make_config(tnn.GPT2Config, {**base, **kwargs})


def test_bad_config_messages_list_allowed_values():
    with pytest.raises(ValueError, match="swiglu"):
        tnn.LlamaConfig(mlp=tnn.MLPConfig(activation="tanh"))
    with pytest.raises(ValueError, match="alibi"):
        tnn.LlamaConfig(position=tnn.PositionConfig(kind="xpos"))
    with pytest.raises(ValueError, match="patch_size"):
        tnn.ViTConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="type_vocab_size"):
        tnn.BertConfig(type_vocab_size=0)
    with pytest.raises(ValueError, match="num_decoder_layers"):
        tnn.EncoderDecoderConfig(num_decoder_layers=0)


def test_defaults_and_precision_presets():
    cfg = tnn.LlamaConfig(d_model=64, num_heads=4, num_kv_heads=1, precision="bf16")
    assert cfg.head_dim == 16 and cfg.num_kv_heads == 1 and cfg.gated
    assert cfg.mlp.dim == 192  # 8/3·64 rounded up to 64
    assert cfg.precision == tnn.Precision(jnp.float32, jnp.bfloat16)
    assert tnn.Precision.pure_bf16().param_dtype == jnp.bfloat16
    assert tnn.Precision.fp16().compute_dtype == jnp.float16
    with pytest.raises(ValueError, match="param_dtype"):
        tnn.Precision(param_dtype=jnp.int32)
    assert cfg.replace(num_layers=3).num_layers == 3


def test_build_model_dispatch_and_wrong_config():
    cfg = tnn.TransformerConfig(vocab_size=64, max_seq_len=8, d_model=16, num_layers=1, num_heads=2)
    assert type(nnx.eval_shape(lambda: tnn.build_model(cfg, rngs=nnx.Rngs(0)))) is tnn.DecoderLM
    with pytest.raises(ValueError, match="GPT2Config"):
        cfg = tnn.LlamaConfig(vocab_size=64, d_model=16, num_heads=2, num_layers=1)
        nnx.eval_shape(lambda: tnn.GPT2(cfg, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="config must be one of"):
        tnn.build_model(object(), rngs=nnx.Rngs(0))  # type: ignore[arg-type]


def test_precision_helpers_and_more_bad_fields():
    p = tnn.Precision.bf16()
    assert p.cast(jnp.ones(2, jnp.float32)).dtype == jnp.bfloat16
    assert p.cast(jnp.ones(2, jnp.int32)).dtype == jnp.int32
    assert tnn.Precision.from_name("fp32") == tnn.Precision()
    with pytest.raises(ValueError, match="fp32"):
        tnn.Precision.from_name("fp64")
    with pytest.raises(ValueError, match="precision"):
        tnn.GPT2Config(precision=3)
    assert tnn.GPT2Config(precision=None).precision == tnn.Precision()
    with pytest.raises(ValueError, match="rope_theta"):
        tnn.LlamaConfig(position=tnn.PositionConfig(rope_theta=0.0))
    with pytest.raises(ValueError, match="NormConfig.eps"):
        tnn.GPT2Config(norm=tnn.NormConfig(eps=0.0))
    with pytest.raises(ValueError, match="InitConfig.std"):
        tnn.GPT2Config(init=tnn.InitConfig(std=-1.0))
    with pytest.raises(ValueError, match="num_labels"):
        tnn.BertConfig(num_labels=0)
    with pytest.raises(ValueError, match="position"):
        tnn.ViTConfig(image_size=8, patch_size=4, position=tnn.PositionConfig(kind="rope"))


def test_attention_impls_are_the_kernel_dispatchers_own():
    """A config accepts exactly what ``tjx.kernels.attention`` runs (one list, no copy)."""
    from tjx import kernels

    assert tnn.ATTENTION_IMPLS == kernels.IMPLEMENTATIONS
    for impl in kernels.IMPLEMENTATIONS:
        assert tnn.GPT2Config(attention_impl=impl).attention_impl == impl
    with pytest.raises(ValueError, match="attention_impl.*cudnn"):
        tnn.GPT2Config(attention_impl="flash")


BASE = dict(vocab_size=64, max_seq_len=16, d_model=32, num_layers=2, num_heads=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(d_model=30), "GPT2Config.d_model: 30 must be divisible by GPT2Config.num_heads (4)"),
        (dict(num_kv_heads=3), "GPT2Config.num_kv_heads: 3 must divide GPT2Config.num_heads (4)"),
        (
            dict(**{"attention.type": "mla"}),
            "GPT2Config.mla.kv_latent_dim: attention.type 'mla' needs",
        ),
        (
            dict(mla=tnn.MLAConfig(kv_latent_dim=8)),
            "GPT2Config.mla.kv_latent_dim: only attention.type 'mla' uses it (got attention.type "
            "'mha'); set it to None",
        ),
    ],
)
def test_cross_field_rules_name_both_fields(kwargs, message):
    """Each message starts with the field to fix and names the others by class and field."""
    with pytest.raises(ValueError) as err:
        tnn.make_config(tnn.GPT2Config, {**BASE, **kwargs})
    assert str(err.value).startswith(message), str(err.value)


def test_vit_patch_size_must_divide_the_image():
    with pytest.raises(
        ValueError, match=r"^ViTConfig.patch_size: 8 must divide ViTConfig.image_size"
    ):
        tnn.ViTConfig(image_size=30, patch_size=8)


@pytest.mark.parametrize(
    ("config_class", "field", "value"),
    [
        (tnn.BertConfig, "tie_embeddings", False),
        (tnn.BertConfig, "attention.decode_topk", 2),
        (tnn.ViTConfig, "tie_embeddings", True),
        (tnn.ViTConfig, "attention.decode_topk", 2),
        (tnn.ViTConfig, "vocab_size", 100),
        (tnn.ViTConfig, "norm.plus_one", True),
        (tnn.BertConfig, "final_logit_softcap", 30.0),
        (tnn.EncoderDecoderConfig, "scale_embeddings", True),
    ],
)
def test_a_field_the_model_never_reads_keeps_its_default(config_class, field, value):
    base = dict(d_model=16, num_layers=1, num_heads=2)
    if config_class is tnn.ViTConfig:
        base |= dict(image_size=8, patch_size=4)
    assert field in config_class.unused_fields
    default = tnn.setting_value(config_class(**base), field)  # a dotted field: a section's
    if "." not in field:
        assert default == config_class.__dataclass_fields__[field].default
    again = tnn.make_config(config_class, {**base, field: default})  # e.g. replace()
    assert tnn.setting_value(again, field) == default
    with pytest.raises(ValueError) as err:
        tnn.make_config(config_class, {**base, field: value})
    why = config_class.unused_fields[field]
    assert str(err.value) == (
        f"{config_class.__name__}.{field}: {why}; got {value!r}, set it to {default!r}"
    )


def test_decoders_read_every_shared_field():
    """GPT-2, LLaMA and the plain decoder use all of them; the encoder-decoder all but the
    decoder-only switches of the Gemma family and the MoE layers (decode_topk included: its
    decoder decodes too)."""
    for config_class in (tnn.GPT2Config, tnn.LlamaConfig, tnn.EncoderDecoderConfig):
        unused = set(config_class.unused_fields)
        decoder = config_class is not tnn.EncoderDecoderConfig
        assert unused == (set() if decoder else set(DECODER_ONLY) | set(NO_MOE))
        assert config_class(attention=tnn.AttentionConfig(decode_topk=2)).attention.decode_topk == 2
    assert dict(tnn.TransformerConfig.unused_fields) == {}
    assert tnn.EncoderDecoderConfig(tie_embeddings=False).tie_embeddings is False


def test_the_component_sections_check_themselves_and_the_model_what_they_need_of_it():
    """`MoEConfig`, `MLAConfig` and `DeltaConfig` refuse their own bad values when built (named
    by their class); what a section needs of the stack is the model config's check, named by
    the section's path in it."""
    with pytest.raises(ValueError) as dense:
        tnn.MoEConfig(router_z_loss=0.1)
    assert str(dense.value).startswith("MoEConfig.router_z_loss: only MoE models use it")
    with pytest.raises(ValueError, match=r"^MoEConfig.experts_per_token: 5 is more than the 4"):
        tnn.MoEConfig(num_experts=4, experts_per_token=5)
    with pytest.raises(ValueError, match=r"^MLAConfig.v_head_dim: only DeepSeek's MLA"):
        tnn.MLAConfig(kv_latent_dim=8, v_head_dim=4)
    with pytest.raises(ValueError, match=r"^DeltaConfig.value_heads \(3\) must be a multiple"):
        tnn.DeltaConfig(key_heads=2, value_heads=3)
    moe = tnn.MoEConfig(num_experts=4, first_dense=2)
    with pytest.raises(ValueError, match=r"^LlamaConfig.moe.first_dense: with first_dense=2"):
        tnn.LlamaConfig(num_layers=2, moe=moe)
    assert tnn.LlamaConfig(num_layers=3, moe=moe).moe is moe
    with pytest.raises(ValueError, match=r"^LlamaConfig.delta.key_heads: only delta layers"):
        tnn.LlamaConfig(delta=tnn.DeltaConfig(key_heads=2))
    # The attention section and Llama 4's options likewise; a window's needs of the model (its
    # position encoding, a kernel that applies it) are the model config's.
    with pytest.raises(ValueError, match=r"^AttentionConfig.qk_norm_scope: only qk_norm uses it"):
        tnn.AttentionConfig(qk_norm_scope="projection")
    with pytest.raises(ValueError, match=r"^AttentionConfig.chunk: a local layer has a chunk or"):
        tnn.AttentionConfig(sliding_window=4, chunk=4)
    with pytest.raises(ValueError, match=r"^Llama4Options.nope_temperature_floor/scale: only NoPE"):
        Llama4Options(nope_temperature_floor=8.0)
    window = tnn.AttentionConfig(sliding_window=4, window_pattern=["local", "global"])
    assert window.window_pattern == ("local", "global") and hash(window)  # a jit's static arg
    with pytest.raises(ValueError, match=r"^LlamaConfig.attention.sliding_window: position 't5'"):
        tnn.LlamaConfig(position=tnn.PositionConfig(kind="t5"), attention=window)
    with pytest.raises(ValueError, match=r"^LlamaConfig.llama4.global_nope: needs position"):
        tnn.LlamaConfig(
            position=tnn.PositionConfig(kind="learned"), llama4=Llama4Options(global_nope=True)
        )


def test_a_section_refuses_a_bad_value_by_its_own_name_and_fills_the_familys():
    """A section checks its values when built; a setting left None is the family's."""
    with pytest.raises(ValueError, match=r"^MLPConfig.activation must be one of"):
        tnn.MLPConfig(activation="tanh")
    with pytest.raises(ValueError, match=r"^MLPConfig.dim must be a positive int"):
        tnn.MLPConfig(dim=0)
    with pytest.raises(ValueError, match=r"^InitConfig.std must be > 0"):
        tnn.InitConfig(std=0.0)
    with pytest.raises(ValueError, match=r"^NormConfig.kind must be one of"):
        tnn.NormConfig(kind="batchnorm")
    with pytest.raises(ValueError, match=r"^NormConfig.position must be one of"):
        tnn.NormConfig(position="peri")
    with pytest.raises(ValueError, match=r"^PositionConfig.kind must be one of"):
        tnn.PositionConfig(kind="relative")
    assert tnn.EncoderDecoderConfig().position.kind == "sinusoidal"
    assert tnn.LlamaConfig(position=tnn.PositionConfig(rope_theta=5e5)).position.kind == "rope"
    llama_norm = tnn.LlamaConfig(norm=tnn.NormConfig(plus_one=True)).norm
    assert llama_norm == tnn.NormConfig(kind="rmsnorm", eps=1e-6, position="pre", plus_one=True)
    bert_norm = tnn.BertConfig().norm
    assert (bert_norm.kind, bert_norm.eps, bert_norm.position) == ("layernorm", 1e-12, "post")
    # A section used without its model config has its None: a layer refuses it by name.
    with pytest.raises(ValueError, match=r"^norm.eps is None: a model config fills it"):
        filled(tnn.NormConfig().eps, "norm.eps")
    with pytest.raises(ValueError, match=r"^make_norm: eps is None"):
        make_norm("rmsnorm", 4, rngs=nnx.Rngs(0), eps=None)
    mlp = tnn.MLPConfig(dim=64)
    assert tnn.LlamaConfig(mlp=mlp).mlp == tnn.MLPConfig(dim=64, activation="swiglu")
    assert tnn.GPT2Config(mlp=mlp).mlp == tnn.MLPConfig(dim=64, activation="gelu")
    assert tnn.BertConfig(mlp=mlp).mlp.activation == "gelu_exact"
    assert tnn.LlamaConfig(d_model=96).mlp.dim == 256  # LLaMA's 8/3 d_model, to 64
    assert tnn.ViTConfig(init=tnn.InitConfig(std=0.1)).init.scaled_residual is False
    built = tnn.make_config(tnn.LlamaConfig, {"mlp": mlp, "mlp.activation": "geglu"})
    assert built.mlp == tnn.MLPConfig(dim=64, activation="geglu")
    with pytest.raises(ValueError, match="LlamaConfig has no section 'norms'"):
        tnn.make_config(tnn.LlamaConfig, {"norms.eps": 1e-5})


def test_the_model_config_holds_its_components_as_sections():
    """Attention, MoE, MLA, Gated DeltaNet, multi-token prediction, init, MLP, norms and Llama
    4's options are one field each, no flat settings of theirs beside (a family's own value of a
    setting: ``part_defaults``)."""
    fields = {f.name: f for f in dataclasses.fields(tnn.LlamaConfig)}
    sections = {
        "attention": tnn.AttentionConfig,
        "moe": tnn.MoEConfig,
        "mla": tnn.MLAConfig,
        "delta": tnn.DeltaConfig,
        "llama4": Llama4Options,
    }
    sections |= {"mtp": tnn.MTPConfig, "init": tnn.InitConfig, "mlp": tnn.MLPConfig}
    sections |= {"norm": tnn.NormConfig, "position": tnn.PositionConfig}
    defaults = tnn.LlamaConfig()
    for name, cls in sections.items():
        assert type(getattr(defaults, name)) is cls
        assert not {f"{name}_{f.name}" for f in dataclasses.fields(cls)} & set(fields)
    gone = {"num_experts", "router", "kv_latent_dim", "delta_impl", "scaled_residual_init"}
    gone |= {"mlp_dim", "mlp_activation", "norm_eps", "norm_position", "norm_plus_one"}
    gone |= {"sliding_window", "attention_type", "qk_norm", "global_nope"}
    gone |= {"rope_theta", "rope_scaling", "rope_fraction", "relative_buckets"}
    assert not gone & set(fields)
    assert not defaults.init.scaled_residual and tnn.GPT2Config().init.scaled_residual
    assert set(sections) | {"gemma4"} == set(tnn.SECTIONS)  # gemma4: its family's, tested there
    config = tnn.LlamaConfig(mixer_pattern=["delta", "attention"],
                             delta=tnn.DeltaConfig(key_heads=2, value_heads=4, key_dim=8,
                                                   value_dim=8))  # fmt: skip
    changed = config.replace(**{"delta.impl": "xla", "num_layers": 4})
    assert (changed.delta.impl, changed.delta.key_heads, changed.num_layers) == ("xla", 2, 4)
    assert tnn.setting_value(changed, "delta.impl") == "xla"


def test_a_section_left_out_is_its_classs_one_default_not_built_again(monkeypatch):
    """A config that leaves a section out shares the section class's default instance (frozen):
    a GPT-2 builds and checks no MLA, MoE, MTP ... section of its own; one it sets is its own."""
    built = []
    for cls in (tnn.MLAConfig, tnn.MoEConfig, tnn.MTPConfig, tnn.DeltaConfig, Llama4Options):
        check = cls.__post_init__  # counted, then run
        monkeypatch.setattr(cls, "__post_init__", lambda s, c=check: built.append(s) or c(s))
    first, second = tnn.GPT2Config(num_layers=2), tnn.GPT2Config(num_layers=3, d_model=96)
    assert built == []
    fields = {f.name: f for f in dataclasses.fields(tnn.GPT2Config)}
    for name in ("mla", "moe", "mtp", "delta", "llama4", "gemma4", "attention"):
        assert getattr(first, name) is getattr(second, name) is fields[name].default, name
    own = first.replace(**{"moe.num_experts": 4})
    assert own.moe is not first.moe and first.moe.num_experts == 0 and own.moe.num_experts == 4


def test_gemma4s_switches_are_its_familys_option_section():
    """Gemma 4's ten switches are one field, ``gemma4`` (`Gemma4Options`, from its family's
    folder): none flat beside it; dotted keys change and read them; the section checks its own
    values, the model config what the section needs of it."""
    fields = {f.name: f for f in dataclasses.fields(tnn.LlamaConfig)}
    assert type(fields["gemma4"].default) is Gemma4Options
    assert not {f.name for f in dataclasses.fields(Gemma4Options)} & set(fields)
    assert "gemma4" in tnn.SECTIONS
    window = tnn.AttentionConfig(sliding_window=4, window_pattern=["local", "global"])
    config = tnn.LlamaConfig(num_layers=4, attention=window)
    changed = config.replace(**{"gemma4.kv_shared_layers": 2, "gemma4.value_norm": True})
    assert (changed.gemma4.kv_shared_layers, changed.gemma4.value_norm) == (2, True)
    assert tnn.setting_value(changed, "gemma4.kv_shared_layers") == 2
    assert Gemma4Options(global_rope_proportion=1).global_rope_proportion == 1.0
    with pytest.raises(ValueError, match=r"^Gemma4Options.per_layer_input_dim must be an int >= 0"):
        Gemma4Options(per_layer_input_dim=-1)
    with pytest.raises(ValueError, match=r"^LlamaConfig.gemma4.kv_shared_layers \(4\) must be"):
        config.replace(**{"gemma4.kv_shared_layers": 4})
    with pytest.raises(ValueError, match=r"^LlamaConfig.scan_layers True .* gemma4.per_layer_"):
        config.replace(scan_layers=True, **{"gemma4.per_layer_input_dim": 2})
    with pytest.raises(ValueError, match=r"^BertConfig.gemma4: only decoders"):
        tnn.BertConfig(gemma4=Gemma4Options(layer_scale=True))


def test_the_configs_their_checks_and_their_keys_are_modules_of_their_own():
    """`tjx.nn.configs` holds the classes and builds them of dotted keys; the checks across a
    config's sections are `tjx.nn.cross_checks`' (Llama 4's its folder's, as Gemma 4's), reading
    a setting by its key `tjx.nn.config_keys`', which imports no tjx.nn module (so the modules
    below the classes may use it). The names importers take from `tjx.nn.configs` stay there."""
    kept = ["TransformerConfig", "GPT2Config", "LlamaConfig", "ATTENTION_IMPLS", "CE_IMPLS"]
    kept += ["REMAT_POLICIES", "SECTIONS", "FLAT_SECTION_KEYS", "make_config", "rotated_dims"]
    assert all(hasattr(configs, name) for name in kept)
    assert configs.setting_value is config_keys.setting_value is tnn.setting_value
    assert configs.make_config is tnn.make_config and configs.SECTIONS is tnn.SECTIONS
    assert configs.check_family is cross_checks.check_family
    assert configs.check_llama4 is llama4_options.check_model
    tree = ast.parse(Path(config_keys.__file__).read_text(encoding="utf-8"))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported and not [m for m in imported if m.startswith("tjx.nn")], imported
    with pytest.raises(ValueError, match=r"^LlamaConfig.qk_l2_norm: only rotated"):
        tnn.LlamaConfig(position=tnn.PositionConfig(kind="learned"), qk_l2_norm=True)


@pytest.mark.parametrize("section", tnn.SECTIONS)
@pytest.mark.parametrize("config_class", [tnn.LlamaConfig, tnn.GPT2Config, tnn.BertConfig])
def test_a_section_given_as_something_else_is_refused_naming_it_and_the_fix(config_class, section):
    """A section given in Python as a value of one of its settings, a dict, None or a number is
    refused when the config is built: one line naming the field, what it got and its class."""
    kind = type(getattr(config_class(), section)).__name__
    for value in ("rmsnorm", {"kind": "rmsnorm"}, None, 3):
        with pytest.raises(ValueError) as raised:
            config_class(**{section: value})
        message = str(raised.value)
        got = f"(got the {type(value).__name__} {value!r}); write {section}={kind}("
        assert message.startswith(f"{config_class.__name__}.{section} must be an instance of ")
        assert f" {kind} {got}" in message and "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"norm": "rmsnorm"}, {"norm.kind": "rmsnorm"}),
        ({"position": "rope"}, {"position.kind": "rope"}),
        ({"mlp": "gelu"}, {"mlp.activation": "gelu"}),
        (
            {"norm": {"kind": "layernorm", "eps": 1e-3}},
            {"norm.kind": "layernorm", "norm.eps": 1e-3},
        ),
    ],
)
def test_a_section_given_as_a_setting_s_value_says_how_to_write_it(kwargs, fix):
    (name, value), (key, setting) = next(iter(kwargs.items())), next(iter(fix.items()))
    with pytest.raises(ValueError) as raised:
        tnn.LlamaConfig(**kwargs)
    kind = type(getattr(tnn.LlamaConfig(), name)).__name__
    args = ", ".join(f"{k.split('.')[1]}={v!r}" for k, v in fix.items())
    assert str(raised.value) == (
        f"LlamaConfig.{name} must be an instance of {kind} (got the {type(value).__name__} "
        f"{value!r}); write {name}={kind}({args}) or make_config(LlamaConfig, {fix!r})"
    )
    # Both fixes it names build the config it meant.
    made = tnn.make_config(tnn.LlamaConfig, fix)
    assert tnn.setting_value(made, key) == setting
    section = type(getattr(made, name))(**{k.split(".")[1]: v for k, v in fix.items()})
    assert tnn.LlamaConfig(**{name: section}) == made
