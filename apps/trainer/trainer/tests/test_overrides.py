"""``--set`` overrides: typed parsing by the target field; errors name the key."""

from __future__ import annotations

import pytest

from trainer.config.schema import ConfigError
from trainer.config.settings import apply_overrides, field_at, load_config_data, parse_override
from trainer.config.typed import read_config


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        # the old layout's key, read as today's
        ("optimizer.lr=3e-4", "optimizer.schedule.peak_lr", 3e-4),
        ("optimizer.schedule.peak_lr=1", "optimizer.schedule.peak_lr", 1.0),
        ("model.rope_theta=500000", "model.position.rope_theta", 500000.0),
        ("model.position.rope_scaling.factor=8", "model.position.rope_scaling.factor", 8.0),
        ("model.position.rope_scaling.type=llama3", "model.position.rope_scaling.type", "llama3"),
        ("model.precision.compute_dtype=bfloat16", "model.precision.compute_dtype", "bfloat16"),
        ("mesh.strategy=fsdp", "mesh.strategy", "fsdp"),
        ("train.steps=1_000", "train.steps", 1000),
        ("model.scan_layers=true", "model.scan_layers", True),
        ("model.scan_layers=off", "model.scan_layers", False),
        ("data.source=./x/y.txt", "data.source", "./x/y.txt"),
        ("logging.sinks=console,jsonl", "logging.sinks", ["console", "jsonl"]),
        ("logging.sinks=[jsonl]", "logging.sinks", ["jsonl"]),
        ("eval.top_k=[1, 3]", "eval.top_k", [1, 3]),
        ("optimizer.clip_norm=null", "optimizer.clip_norm", None),
        ("optimizer.clip_norm=0.5", "optimizer.clip_norm", 0.5),
        ("sampling.top_k=none", "sampling.top_k", None),
        ("model.position=none", "model.position.kind", "none"),  # a choice: no position encoding
        ("model.position=null", "model.position.kind", None),  # the family's own
        ("optimizer.loss_scale=none", "optimizer.loss_scale", None),  # no such choice: null
        ("data.cache_dir=none", "data.cache_dir", None),
        ("sampling.prompts=a=b", "sampling.prompts", ["a=b"]),
        ("optimizer.schedule.warmup_steps=7", "optimizer.schedule.warmup_steps", 7),
    ],
)
def test_parse_override_is_typed(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("optimizer.lr", "expected KEY=VALUE"),
        ("=3", "empty key"),
        ("optimizer.lrr=3", "optimizer.lrr: unknown key; allowed keys here: name, learning_rate"),
        ("model.precision=bf16", "model.precision: is a section; set one of its keys"),
        ("optimizer.schedule.total_steps=9", "optimizer.schedule.total_steps: the trainer sets"),
        ("nope.x=1", "nope: unknown key"),
        ("train.steps=ten", "train.steps: expected an integer, got 'ten'"),
        ("train.steps=1.5", "train.steps: expected an integer"),
        ("model.scan_layers=maybe", "model.scan_layers: cannot read 'maybe' as true/false"),
        ("optimizer=3", "optimizer: is a section; set one of its keys"),
        ("optimizer.lr.x=3", "optimizer.schedule.peak_lr: is a value, not a section"),
        ("eval.top_k=[1,", "eval.top_k: cannot read"),
        ("optimizer.clip_norm=big", "optimizer.clip_norm: cannot read 'big'"),
    ],
)
def test_bad_overrides(text, needle):
    with pytest.raises(ConfigError) as err:
        parse_override(text)
    assert needle in str(err.value)


def test_apply_overrides_then_validate():
    data = load_config_data("tiny")
    out = apply_overrides(data, ["optimizer.lr=0.01", "train.steps=200", "mesh.data=2"])
    cfg = read_config(out)
    assert cfg.optimizer.schedule.peak_lr == 0.01
    assert cfg.train.steps == 200 and cfg.mesh.data == 2
    assert data["optimizer"]["schedule"]["peak_lr"] != 0.01  # the input is not modified
    # A range error surfaces at validation, named by its key.
    with pytest.raises(ConfigError, match="train.steps: 0 is too small"):
        read_config(apply_overrides(data, ["train.steps=0"]))


def test_field_at_walks_sections():
    field, tp = field_at("optimizer.schedule.min_lr_ratio")
    assert field.name == "min_lr_ratio" and tp == float | None  # null: tjx.optim's default
    assert field_at("logging.sinks")[1] == list[str]


def test_llama3s_four_numbers_in_an_old_file_read_as_the_rope_scaling_section():
    """tjx-nn 0.11 held ``model.rope_scaling`` as ``[factor, low, high, original]``; a preset,
    user file or saved ``config.yaml`` in that form reads as the section of named keys."""
    from trainer.config.settings import migrate

    old = {"model": {"kind": "llama", "rope_scaling": [8, 1, 4, 8192]}}
    section = migrate(old)["model"]["position"]["rope_scaling"]
    assert section["type"] == "llama3" and section["factor"] == 8
    assert section["original_max_position_embeddings"] == 8192
    scaling = read_config(migrate(old)).model.position.rope_scaling
    assert (scaling.low_freq_factor, scaling.high_freq_factor) == (1.0, 4.0)
    assert old["model"]["rope_scaling"] == [8, 1, 4, 8192]  # the input is not modified
    with pytest.raises(ConfigError, match="model.rope_scaling"):
        migrate({"model": {"rope_scaling": [8, 4, 1, 16]}})
