"""The model and optimizer sections take their choice lists and defaults from tjx.nn / tjx.optim."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml
from flax import nnx

from tjx import kernels, metrics, nn, optim, parallel
from tjx.core.fields import setting
from tjx.metrics.loggers.wandb_logger import WANDB_MODES
from tjx.nn.families.gemma4 import Gemma4Options
from tjx.nn.families.llama4.options import Llama4Options
from tjx.optim.config import LOSS_SCALES
from trainer.config.schema import KINDS, ConfigError, choices
from trainer.config.settings import (
    apply_overrides,
    deep_merge,
    field_at,
    load_config_data,
    preset_names,
    rows,
)
from trainer.config.typed import read_config, resolve

# The trainer's optimizer defaults before #15 point 2: they applied to every optimizer.
OLD_TRAINER_DEFAULTS = {"b1": 0.9, "b2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
# The fields a trainer config may leave null for the optimizer to fill (plus those it never sets).
OWN_DEFAULTS = ("b1", "b2", "eps", "weight_decay", "momentum", "nesterov")

OWNED_LISTS = [
    ("model.attention_impl", nn.ATTENTION_IMPLS),
    ("model.remat", nn.REMAT_POLICIES),
    ("model.position.kind", nn.POSITIONS),
    ("model.norm.kind", nn.NORMS),
    ("model.precision.compute_dtype", nn.DTYPE_NAMES),
    ("optimizer.name", optim.OPTIMIZER_NAMES),
    ("optimizer.schedule.name", optim.SCHEDULE_NAMES),
    ("optimizer.loss_scale", tuple(s for s in LOSS_SCALES if s is not None)),
    ("mesh.strategy", parallel.STRATEGIES),
    ("logging.wandb_mode", WANDB_MODES),
]


def _optimizer(data: dict) -> optim.OptimizerConfig:
    """The optimizer a config's run uses (its nulls filled, as tjx.optim's chain does)."""
    return read_config(data).optimizer.resolved()


def _nest(path: tuple[str, ...], value: object) -> dict[str, object]:
    out: dict[str, object] = {path[-1]: value}
    for key in reversed(path[:-1]):
        out = {key: out}
    return out


@pytest.mark.parametrize(("key", "owned"), OWNED_LISTS)
def test_choice_lists_are_the_packages_own(key, owned):
    assert choices(field_at(key)[0]) == tuple(owned)
    path = tuple(key.split("."))
    for value in owned:  # every value the package takes passes the trainer's whole validation
        data = _nest(path, value)
        if path[-1] == "loss_scale" or value == "float16":  # what dynamic scaling is for
            data = deep_merge(data, {"model": {"precision": {"compute_dtype": "float16"}}})
            data = deep_merge(data, {"optimizer": {"loss_scale": "dynamic"}})
        if value == "linear_warmup":  # a warmup is its point
            data = deep_merge(data, {"optimizer": {"schedule": {"warmup_steps": 1}}})
        read_config(data)
    with pytest.raises(ConfigError) as err:
        read_config(_nest(path, "bogus"))
    message = str(err.value)
    assert message.startswith(key + ": 'bogus' is not allowed")
    assert all(repr(value) in message for value in owned)


def test_log_sinks_are_tjx_metrics_logger_names():
    for name in metrics.LOGGER_NAMES:
        assert read_config({"logging": {"sinks": [name]}}).logging.sinks == [name]
    with pytest.raises(ConfigError) as err:
        read_config({"logging": {"sinks": ["jsonl", "mlflow"]}})
    assert str(err.value).startswith("logging.sinks: 'mlflow' is not allowed")
    assert all(repr(name) in str(err.value) for name in metrics.LOGGER_NAMES)


@pytest.mark.parametrize("name", optim.OPTIMIZER_NAMES)
def test_an_unset_lr_is_the_optimizers_own_default_rate(name):
    got = _optimizer({"optimizer": {"name": name}})
    assert got.schedule is not None
    assert got.schedule.peak_lr == optim.DEFAULT_LEARNING_RATES[name]
    mine = _optimizer({"optimizer": {"name": name, "schedule": {"peak_lr": 0.123}}})
    assert mine.schedule is not None and mine.schedule.peak_lr == 0.123


def test_attention_impls_reach_the_kernel_dispatcher():
    assert choices(field_at("model.attention_impl")[0]) == kernels.IMPLEMENTATIONS


def test_importing_the_config_does_not_load_jax():
    """The lists are read on first use, so ``--help`` and argument errors stay fast."""
    code = "import sys, trainer.cli; sys.exit(int('jax' in sys.modules or 'tjx.nn' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(
    ("kind", "config_class", "model_class"),
    [
        ("gpt2", nn.GPT2Config, nn.GPT2),
        ("llama", nn.LlamaConfig, nn.Llama),
        ("bert", nn.BertConfig, nn.BERT),
        ("vit", nn.ViTConfig, nn.ViT),
    ],
)
def test_each_kind_is_built_by_tjx_nn_build_model(kind, config_class, model_class):
    assert set(KINDS) == set(nn.MODEL_KINDS)  # every kind the trainer trains, tjx.nn builds
    m = {"kind": kind, "d_model": 16, "num_layers": 1, "num_heads": 2, "max_seq_len": 17}
    c = resolve(read_config({"model": m, "data": {"seq_len": 16}}), 300).model
    assert type(c) is config_class
    assert type(nnx.eval_shape(lambda: nn.build_model(c, rngs=nnx.Rngs(0)))) is model_class
    # Fields a kind leaves out keep tjx.nn's own defaults (no trainer copy of them).
    assert c.norm == config_class().norm
    if kind in ("bert", "vit"):
        assert c.tie_embeddings == config_class.__dataclass_fields__["tie_embeddings"].default


@pytest.mark.parametrize("name", preset_names())
def test_presets_keep_the_optimizer_they_had(name):
    """Each preset's resolved tjx.optim config is what it was under the old trainer defaults."""
    data = load_config_data(name)
    before = _optimizer(deep_merge({"optimizer": OLD_TRAINER_DEFAULTS}, data))
    after = _optimizer(data)
    assert dataclasses.asdict(after) == dataclasses.asdict(before)  # a diff names the field


@pytest.mark.parametrize("name", optim.OPTIMIZER_NAMES)
def test_untouched_hyper_parameters_take_the_optimizers_own_defaults(name):
    got = _optimizer({"optimizer": {"name": name}})
    own = optim.OptimizerConfig(name=name).resolved()
    assert {f: getattr(got, f) for f in OWN_DEFAULTS} == {f: getattr(own, f) for f in OWN_DEFAULTS}


def test_adafactor_gets_adafactors_defaults_and_set_values_win():
    got = _optimizer({"optimizer": {"name": "adafactor"}})
    # Not the trainer's old eps 1e-8 and weight decay 0.1 (AdamW's values).
    assert (got.eps, got.weight_decay) == (1e-30, 0.0)
    assert got.clip_norm == 1.0
    mine = {"name": "adafactor", "eps": 1e-3, "weight_decay": 0.01}
    got = _optimizer({"optimizer": mine})
    assert (got.eps, got.weight_decay) == (1e-3, 0.01)


def test_null_in_yaml_means_the_optimizers_default():
    got = _optimizer({"optimizer": {"name": "lion", "b2": None}})
    assert got.b2 == optim.OptimizerConfig(name="lion").resolved().b2 == 0.99
    saved = read_config({}).to_dict()["optimizer"]
    assert saved["b2"] is None  # saved config.yaml says null, not a stale number


def _package_keys() -> list[tuple[str, str]]:
    """(kind, key) of every field of tjx-nn's model configs (each kind), tjx-optim's and
    tjx-parallel's."""

    def walk(cls: type, path: str) -> list[str]:
        out = []
        for f in dataclasses.fields(cls):
            key = f"{path}.{f.name}"
            inner = {
                "model.precision": nn.Precision,
                "model.position.rope_scaling": nn.RopeScaling,
                "model.moe": nn.MoEConfig,
                "model.mla": nn.MLAConfig,
                "model.delta": nn.DeltaConfig,
                "model.gemma4": Gemma4Options,
                "model.mtp": nn.MTPConfig,
                "model.init": nn.InitConfig,
                "model.mlp": nn.MLPConfig,
                "model.norm": nn.NormConfig,
                "model.attention": nn.AttentionConfig,
                "model.position": nn.PositionConfig,
                "model.llama4": Llama4Options,
                "optimizer.schedule": optim.ScheduleConfig,
            }.get(key)
            out += walk(inner, key) if inner is not None else [key]
        return out

    keys = [(kind, k) for kind, cls in nn.MODEL_KINDS.items() for k in walk(cls, "model")]
    keys += [("gpt2", k) for k in walk(optim.OptimizerConfig, "optimizer")]
    keys += [("gpt2", k) for k in walk(parallel.MeshConfig, "mesh")]
    return [kk for kk in keys if kk[1] != "optimizer.schedule.total_steps"]  # train.steps


def test_every_package_field_is_settable_listed_and_explained():
    listed = set()
    for kind in nn.MODEL_KINDS:
        listed |= {k for k, *_ in rows(read_config({"model": {"kind": kind}}))}
    for kind, key in _package_keys():
        field, _ = field_at(key, {"model": {"kind": kind}})
        assert field.metadata.get("help"), f"{key}: no help line in its package"
        assert key in listed, key
    # Llama 3's rope base, which the trainer's own copy of the model section could not reach
    cfg = read_config(apply_overrides({"model": {"kind": "llama"}}, ["model.rope_theta=5e5"]))
    assert cfg.model.position.rope_theta == 500000.0


def test_a_new_package_field_is_one_line_in_its_package(monkeypatch):
    """A field a tjx-nn config gains (with its ``help``) is settable, checked, listed and
    reaches the model config, with nothing changed in the trainer."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Grown(nn.GPT2Config):
        logit_softcap: float | None = setting(None, help="tanh cap of the logits")  # noqa: RUF009

    monkeypatch.setitem(nn.MODEL_KINDS, "gpt2", Grown)
    cfg = read_config(apply_overrides({}, ["model.logit_softcap=30"]))
    assert type(cfg.model) is Grown and cfg.model.logit_softcap == 30.0
    assert "model.logit_softcap" in {k for k, *_ in rows(cfg)}
    assert read_config(cfg.to_dict()).model.logit_softcap == 30.0  # config.yaml keeps it
    with pytest.raises(ConfigError, match="model.logit_softcap: cannot read 'high'"):
        apply_overrides({}, ["model.logit_softcap=high"])


@pytest.mark.parametrize(
    ("sets", "field", "value"),
    [  # what the old lists dropped without a word now reaches tjx.nn, which decides
        (
            ("model.kind=encdec", "model.attention.decode_topk=3"),
            "attention.decode_topk",
            3,
        ),  # its decoder decodes
        # Grouped-query attention is tjx.nn's in every model, not llama's alone.
        (("model.num_kv_heads=2",), "num_kv_heads", 2),
        (("model.kind=bert", "model.num_kv_heads=1"), "num_kv_heads", 1),
        (("model.kind=encdec", "model.num_kv_heads=2"), "num_kv_heads", 2),
    ],
)
def test_a_setting_the_old_lists_dropped_now_reaches_tjx_nn(sets, field, value):
    cfg = read_config(apply_overrides(load_config_data("tiny"), list(sets)))
    assert nn.setting_value(cfg.model, field) == value


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("model.kind=bert", "model.tie_embeddings=false"),
            "model.tie_embeddings: BERT's MLM head always shares the token embedding; got False, "
            "set it to True",
        ),
        (
            ("model.kind=vit", "model.attention.decode_topk=2"),
            "model.attention.decode_topk: only decoders decode (ViT does not); got 2, set it to "
            "null",
        ),
        (  # ViT has no tokens: a vocabulary set is refused, no longer silently ignored
            ("model.kind=vit", "model.vocab_size=77"),
            "model.vocab_size: ViT reads images, not tokens; set it to null",
        ),
        (
            ("model.d_model=100", "model.num_heads=3"),
            "model.d_model: 100 must be divisible by model.num_heads (3)",
        ),
        (
            ("model.kind=llama", "model.num_heads=4", "model.num_kv_heads=3"),
            "model.num_kv_heads: 3 must divide model.num_heads (4)",
        ),
        (
            ("model.kind=vit", "model.image_size=9", "model.patch_size=2"),
            "model.patch_size: 2 must divide model.image_size (9)",
        ),
        (
            ("model.param_dtype=float16",),  # the old layout's key, read as today's
            "model.precision.param_dtype=float16: float16 parameters are not",
        ),
        (
            ("model.precision.compute_dtype=float16",),
            "model.precision.compute_dtype=float16 needs optimizer.loss_scale='dynamic'",
        ),
    ],
)
def test_package_rules_reach_the_user_in_the_trainers_keys(sets, message):
    with pytest.raises(ConfigError) as err:
        read_config(apply_overrides(load_config_data("tiny"), list(sets)))
    assert str(err.value).startswith(message), str(err.value)


def test_every_package_declares_its_settings_with_tjx_cores_one_helper():
    """#53: `setting` has one definition (tjx.core.fields); the packages' config classes and the
    trainer's schema use it, so a field's metadata means the same everywhere."""
    from tjx.core import fields
    from trainer.config import schema

    assert schema.setting is fields.setting
    made = fields.setting(1, help="h", resumable=True)
    assert (made.default, dict(made.metadata)) == (1, {"help": "h", "resumable": True})
    # and the packages' classes use it: a mesh field's metadata is what `setting` stored
    assert dict(parallel.MeshConfig.__dataclass_fields__["data"].metadata)["resumable"] is True


def test_a_section_a_config_does_not_set_is_its_class_defaults_and_a_set_one_is_built():
    # No lora, preference or grpo settings: each section is its class's DEFAULTS (built once, as
    # tjx.nn loads), equal to the class built with no arguments.
    cfg = read_config(load_config_data("tiny"))
    for section, cls in (
        ("lora", nn.LoraConfig),
        ("preference", nn.PreferenceConfig),
        ("grpo", nn.GrpoConfig),
    ):
        assert getattr(cfg, section) is cls.DEFAULTS
        assert cls() == cls.DEFAULTS
    # One setting given: the section is built from it (and the others stay the defaults).
    data = apply_overrides(load_config_data("tiny"), ["lora.enabled=true", "lora.rank=4"])
    cfg = read_config(data)
    assert cfg.lora == nn.LoraConfig(rank=4) and cfg.lora is not nn.LoraConfig.DEFAULTS
    assert cfg.use_lora and cfg.preference is nn.PreferenceConfig.DEFAULTS
    # A saved config.yaml lists every key: read back, it is the same config.
    again = read_config(yaml.safe_load(read_config(load_config_data("tiny")).to_yaml()))
    assert again.lora == nn.LoraConfig() and again.grpo == nn.GrpoConfig()
