"""The model and optimizer sections take their choice lists and defaults from tjx.nn / tjx.optim."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from flax import nnx

from tjx import kernels, metrics, nn, optim, parallel
from tjx.metrics.loggers.wandb_logger import WANDB_MODES
from tjx.optim.config import LOSS_SCALES
from trainer.config import (
    KINDS,
    Config,
    LoggingConfig,
    MeshConfig,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    build_config,
)
from trainer.overrides import apply_overrides
from trainer.presets import load_config_data, preset_names
from trainer.resolved import model_config, optimizer_config
from trainer.schema import ConfigError, choices, deep_merge, field_map

# The trainer's optimizer defaults before #15 point 2: they applied to every optimizer.
OLD_TRAINER_DEFAULTS = {"b1": 0.9, "b2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
# The fields a trainer config may leave null for the optimizer to fill (plus those it never sets).
OWN_DEFAULTS = ("b1", "b2", "eps", "weight_decay", "momentum", "nesterov")

OWNED_LISTS = [
    (ModelConfig, "attention_impl", nn.ATTENTION_IMPLS),
    (ModelConfig, "remat", nn.REMAT_POLICIES),
    (ModelConfig, "position", nn.POSITIONS),
    (OptimizerConfig, "name", optim.OPTIMIZER_NAMES),
    (ScheduleConfig, "name", optim.SCHEDULE_NAMES),
    (OptimizerConfig, "loss_scale", tuple(s for s in LOSS_SCALES if s is not None)),
    (MeshConfig, "strategy", parallel.STRATEGIES),
    (LoggingConfig, "wandb_mode", WANDB_MODES),
]
SECTIONS = {ModelConfig: ("model",), OptimizerConfig: ("optimizer",), MeshConfig: ("mesh",)}
SECTIONS[LoggingConfig] = ("logging",)
SECTIONS[ScheduleConfig] = ("optimizer", "schedule")


def _nest(path: tuple[str, ...], value: object) -> dict[str, object]:
    out: dict[str, object] = {path[-1]: value}
    for key in reversed(path[:-1]):
        out = {key: out}
    return out


@pytest.mark.parametrize(("cls", "field", "owned"), OWNED_LISTS)
def test_choice_lists_are_the_packages_own(cls, field, owned):
    assert choices(field_map(cls)[field]) == tuple(owned)
    for value in owned:  # every value the package takes passes the trainer's whole validation
        data = _nest((*SECTIONS[cls], field), value)
        if field == "loss_scale":  # float16 compute is what dynamic scaling is for
            data["model"] = {"compute_dtype": "float16"}
        build_config(data)
    with pytest.raises(ConfigError) as err:
        build_config(_nest((*SECTIONS[cls], field), "bogus"))
    message = str(err.value)
    assert message.startswith(".".join((*SECTIONS[cls], field)) + ": 'bogus' is not allowed")
    assert all(repr(value) in message for value in owned)


def test_log_sinks_are_tjx_metrics_logger_names():
    for name in metrics.LOGGER_NAMES:
        assert build_config({"logging": {"sinks": [name]}}).logging.sinks == [name]
    with pytest.raises(ConfigError) as err:
        build_config({"logging": {"sinks": ["jsonl", "mlflow"]}})
    assert str(err.value).startswith("logging.sinks: 'mlflow' is not allowed")
    assert all(repr(name) in str(err.value) for name in metrics.LOGGER_NAMES)


@pytest.mark.parametrize("name", optim.OPTIMIZER_NAMES)
def test_an_unset_lr_is_the_optimizers_own_default_rate(name):
    got = optimizer_config(build_config({"optimizer": {"name": name}}))
    assert got.schedule is not None
    assert got.schedule.peak_lr == optim.DEFAULT_LEARNING_RATES[name]
    mine = optimizer_config(build_config({"optimizer": {"name": name, "lr": 0.123}}))
    assert mine.schedule is not None and mine.schedule.peak_lr == 0.123


def test_attention_impls_reach_the_kernel_dispatcher():
    assert choices(field_map(ModelConfig)["attention_impl"]) == kernels.IMPLEMENTATIONS


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
    m = ModelConfig(kind=kind, d_model=16, num_layers=1, num_heads=2, max_seq_len=17)
    c = model_config(m, 300)
    assert type(c) is config_class
    assert type(nnx.eval_shape(lambda: nn.build_model(c, rngs=nnx.Rngs(0)))) is model_class
    # Fields a kind leaves out keep tjx.nn's own defaults (no trainer copy of them).
    assert c.norm == config_class.__dataclass_fields__["norm"].default
    if kind in ("bert", "vit"):
        assert c.tie_embeddings == config_class.__dataclass_fields__["tie_embeddings"].default


@pytest.mark.parametrize("name", preset_names())
def test_presets_keep_the_optimizer_they_had(name):
    """Each preset's resolved tjx.optim config is what it was under the old trainer defaults."""
    data = load_config_data(name)
    before = optimizer_config(build_config(deep_merge({"optimizer": OLD_TRAINER_DEFAULTS}, data)))
    after = optimizer_config(build_config(data))
    assert dataclasses.asdict(after) == dataclasses.asdict(before)  # a diff names the field


@pytest.mark.parametrize("name", optim.OPTIMIZER_NAMES)
def test_untouched_hyper_parameters_take_the_optimizers_own_defaults(name):
    got = optimizer_config(build_config({"optimizer": {"name": name}}))
    own = optim.OptimizerConfig(name=name).resolved()
    assert {f: getattr(got, f) for f in OWN_DEFAULTS} == {f: getattr(own, f) for f in OWN_DEFAULTS}


def test_adafactor_gets_adafactors_defaults_and_set_values_win():
    got = optimizer_config(build_config({"optimizer": {"name": "adafactor"}}))
    # Not the trainer's old eps 1e-8 and weight decay 0.1 (AdamW's values).
    assert (got.eps, got.weight_decay) == (1e-30, 0.0)
    assert got.clip_norm == 1.0
    mine = {"name": "adafactor", "eps": 1e-3, "weight_decay": 0.01}
    got = optimizer_config(build_config({"optimizer": mine}))
    assert (got.eps, got.weight_decay) == (1e-3, 0.01)


def test_null_in_yaml_means_the_optimizers_default():
    got = optimizer_config(build_config({"optimizer": {"name": "lion", "b2": None}}))
    assert got.b2 == optim.OptimizerConfig(name="lion").resolved().b2 == 0.99
    assert Config().optimizer.b2 is None  # saved config.yaml says null, not a stale number


def test_defaults_the_trainer_shares_with_tjx_optim_are_tjx_optims():
    """Where a trainer default stands for tjx.optim's (not a choice of the trainer's own), it is
    the same value. The trainer's lr and warmup_steps are its recipe and may differ."""
    ours, theirs = OptimizerConfig(), optim.OptimizerConfig()
    for field in ("clip_norm", "skip_nonfinite", "loss_scale", "accumulation_steps"):
        assert getattr(ours, field) == getattr(theirs, field), field
    ours_s, theirs_s = ScheduleConfig(), optim.ScheduleConfig()
    assert (ours_s.name, ours_s.min_lr_ratio) == (theirs_s.name, theirs_s.min_lr_ratio)


# The reference: model_build's hand-written field lists before #15 (tjx.nn's classes decide now).
_OLD_SHARED = (
    *("d_model", "num_layers", "num_heads", "mlp_dim", "dropout", "attention_impl"),
    *("scan_layers", "remat", "relative_buckets", "relative_max_distance", "attention_type"),
    "kv_latent_dim",
)
_OLD_KIND = {
    "gpt2": ("max_seq_len", "tie_embeddings", "decode_topk"),
    "llama": ("max_seq_len", "num_kv_heads", "tie_embeddings", "decode_topk"),
    "bert": ("max_seq_len",),
    "vit": ("image_size", "patch_size", "num_classes"),
    "encdec": ("max_seq_len", "tie_embeddings"),
}


def _old_nn_config(m: ModelConfig, vocab_size: int) -> nn.TransformerConfig:
    fields = {f: getattr(m, f) for f in (*_OLD_SHARED, *_OLD_KIND[m.kind])}
    fields["precision"] = nn.Precision(m.param_dtype, m.compute_dtype)
    for key in ("position", "use_bias", "norm_position", "init_std"):
        if getattr(m, key) is not None:
            fields[key] = getattr(m, key)
    if m.kind == "vit":
        fields["num_channels"] = 1
    else:
        fields["vocab_size"] = m.vocab_size or vocab_size
    return nn.MODEL_KINDS[m.kind](**fields)


_OVERRIDES = [
    ("model.kind=llama", "model.num_kv_heads=2"),
    ("model.kind=llama", "model.tie_embeddings=false", "model.use_bias=true"),
    ("model.kind=bert",),
    ("model.kind=bert", "model.norm_position=pre", "model.init_std=0.01"),
    ("model.kind=vit", "model.max_seq_len=999", "model.tie_embeddings=false"),
    ("model.kind=encdec", "model.position=t5", "model.relative_buckets=16"),
    ("model.kind=encdec", "model.tie_embeddings=false"),
    ("model.num_kv_heads=4", "model.decode_topk=3", "model.vocab_size=1000"),
    ("model.attention_type=mla", "model.kv_latent_dim=8", "model.mlp_dim=64"),
    ("model.compute_dtype=bfloat16", "model.remat=full", "model.scan_layers=true"),
]


@pytest.mark.parametrize(
    ("name", "sets"), [*((n, ()) for n in preset_names()), *(("tiny", s) for s in _OVERRIDES)]
)
def test_each_kind_builds_the_tjx_nn_config_it_built_before(name, sets):
    """tjx.nn's dataclass fields (less each kind's ``unused_fields`` at the trainer's defaults)
    choose what passes on: the same config as the old hand-written lists, for every shipped
    preset and the tiny one with overrides of each kind."""
    cfg = build_config(apply_overrides(load_config_data(name), list(sets)))
    assert model_config(cfg.model, 300) == _old_nn_config(cfg.model, 300)


@pytest.mark.parametrize(
    ("sets", "field", "value"),
    [  # what the old lists dropped without a word now reaches tjx.nn, which decides
        (("model.kind=encdec", "model.decode_topk=3"), "decode_topk", 3),  # its decoder decodes
        # Grouped-query attention is tjx.nn's in every model, not llama's alone.
        (("model.num_kv_heads=2",), "num_kv_heads", 2),
        (("model.kind=bert", "model.num_kv_heads=1"), "num_kv_heads", 1),
        (("model.kind=encdec", "model.num_kv_heads=2"), "num_kv_heads", 2),
    ],
)
def test_a_setting_the_old_lists_dropped_now_reaches_tjx_nn(sets, field, value):
    cfg = build_config(apply_overrides(load_config_data("tiny"), list(sets)))
    assert getattr(model_config(cfg.model, 300), field) == value


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("model.kind=bert", "model.tie_embeddings=false"),
            "model.tie_embeddings: BERT's MLM head always shares the token embedding; got False, "
            "set it to True",
        ),
        (
            ("model.kind=vit", "model.decode_topk=2"),
            "model.decode_topk: only decoders decode (ViT does not); got 2, set it to null",
        ),
        (  # ViT has no tokens: a vocabulary set is refused, no longer silently ignored
            ("model.kind=vit", "model.vocab_size=77"),
            "model.vocab_size: ViT reads images, not tokens; got 77, set it to null",
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
        (("model.param_dtype=float16",), "model.param_dtype=float16: float16 parameters are not"),
        (
            ("model.compute_dtype=float16",),
            "model.compute_dtype=float16 needs optimizer.loss_scale='dynamic'",
        ),
    ],
)
def test_package_rules_reach_the_user_in_the_trainers_keys(sets, message):
    with pytest.raises(ConfigError) as err:
        build_config(apply_overrides(load_config_data("tiny"), list(sets)))
    assert str(err.value).startswith(message), str(err.value)
