"""Config schema: presets load, types and ranges are checked, errors name the key path."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx

from trainer.config.schema import KINDS, ConfigError
from trainer.config.settings import apply_overrides, load_config_data, migrate, preset_names
from trainer.config.typed import read_config, resolve

PRESETS = [
    "tiny",
    "gpt2_small",
    "gpt2_medium",
    "gpt2_large",
    "llama_small",
    "moe_tiny",
    "mixtral_small",
    "llama_32k",
    "bert_tiny",
    "vit_digits",
    "sft_tiny",
    "sft_llama",
    "dpo_tiny",
    "llama3_8b",
    "grpo_tiny",
]


def test_all_presets_are_shipped():
    assert sorted(PRESETS) == preset_names()


@pytest.mark.parametrize("name", PRESETS)
def test_presets_validate_and_round_trip(name):
    cfg = read_config(load_config_data(name))
    assert cfg.name == name
    # The saved YAML reads back into the same config: the same package objects.
    again = read_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict() and again == cfg


def test_gpt2_presets_have_the_published_shapes():
    shapes = {
        "gpt2_small": (768, 12, 12),
        "gpt2_medium": (1024, 24, 16),
        "gpt2_large": (1280, 36, 20),
    }
    for name, (d, layers, heads) in shapes.items():
        m = read_config(load_config_data(name)).model
        assert (m.d_model, m.num_layers, m.num_heads) == (d, layers, heads)
        assert m.precision.compute_dtype == "bfloat16" and m.max_seq_len == 1024


def test_base_inheritance_keeps_parent_keys():
    medium = read_config(load_config_data("gpt2_medium"))
    small = read_config(load_config_data("gpt2_small"))
    assert medium.data.tokenizer == small.data.tokenizer == "gpt2"
    shape = lambda cfg: dataclasses.replace(cfg.optimizer.schedule, peak_lr=None)
    assert shape(medium) == shape(small) and medium.optimizer.schedule.peak_lr == 3e-4


#: A delayed float8 model precision (tjx.nn.fp8).
_DELAYED = {"compute_dtype": "bfloat16", "matmul": "fp8", "fp8_recipe": "delayed"}
#: A float8 LM head (current scaling, #54).
_HEAD = {"compute_dtype": "bfloat16", "matmul": "fp8", "fp8_lm_head": True}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"model": {"nope": 1}}, "model.nope: unknown key; allowed keys here:"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"model": {"d_model": "big"}}, "model.d_model: expected an integer"),
        ({"model": {"d_model": 1.5}}, "model.d_model: expected an integer"),
        ({"model": {"d_model": True}}, "model.d_model: expected an integer"),
        ({"model": {"d_model": 0}}, "model.d_model must be a positive int; got 0"),
        ({"model": {"kind": "rnn"}}, "model.kind: 'rnn' is not allowed; choose one of"),
        (migrate({"optimizer": {"lr": -1.0}}), "optimizer.schedule.peak_lr=-1.0 is out of range"),
        ({"optimizer": {"b1": 1.0}}, "optimizer.b1=1.0 is out of range; allowed values: [0, 1)"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"logging": {"sinks": ["console", "slack"]}}, "logging.sinks: 'slack' is not allowed"),
        ({"logging": {"sinks": "console"}}, "logging.sinks: expected a list of a string"),
        ({"eval": {"top_k": [1, 0]}}, "eval.top_k: 0 is too small"),
        ({"model": 3}, "model: expected a mapping"),
        ({"model": {"d_model": 100, "num_heads": 3}}, "model.d_model: 100 must be divisible"),
        ({"data": {"seq_len": 2048}}, "data.seq_len: 2048 exceeds model.max_seq_len (1024)"),
        (
            {"optimizer": {"accumulation_steps": 3}, "data": {"batch_size": 16}},
            "optimizer.accumulation_steps: 3 must divide data.batch_size",
        ),
        (  # tjx.optim's rule and wording, in the trainer's keys
            {"train": {"steps": 10}, "optimizer": {"schedule": {"warmup_steps": 100}}},
            "optimizer.schedule.warmup_steps=100 is longer than the run; allowed values: 0 <= "
            "warmup_steps <= train.steps=10",
        ),
        (migrate({"model": {"compute_dtype": "float16"}}), "optimizer.loss_scale"),
        (
            {"mesh": {"data": -1, "fsdp": -1}},
            "mesh: at most one of pipeline, data, fsdp, expert, context, tensor may be -1",
        ),
        ({"optimizer": {"schedule": {"total_steps": 5}}}, "optimizer.schedule.total_steps: the "),
        ({"mesh": {"strategy": "nope"}}, "mesh.strategy: 'nope' is not allowed"),
        (  # delayed float8 scaling: one amax per tensor and step (#54)
            {"model": {"precision": _DELAYED}, "optimizer": {"accumulation_steps": 2}},
            "model.precision.fp8_recipe=delayed: one step records one amax per tensor, and "
            "optimizer.accumulation_steps (2) would average",
        ),
        (
            {"model": {"precision": _DELAYED, "num_layers": 2}, "mesh": {"pipeline": 2}},
            "model.precision.fp8_recipe=delayed: a pipelined step (mesh.pipeline=2)",
        ),
        (
            {"model": {"precision": {**_DELAYED, "fp8_scaling": "rowwise"}}},
            "fp8_recipe='delayed' scales tensorwise only",
        ),
        (  # the float8 LM head (#54): current scaling, an untied head, the chunked XLA loss
            {"model": {"precision": {"fp8_lm_head": True}}},
            "fp8_lm_head=True needs matmul='fp8'",
        ),
        (
            {"model": {"precision": {**_DELAYED, "fp8_lm_head": True}}},
            "fp8_lm_head=True scales with current scaling only",
        ),
        (
            {"model": {"precision": _HEAD, "tie_embeddings": True}},
            "fp8_lm_head=True: the head is the token embedding table (tie_embeddings=True)",
        ),
        (
            {
                "model": {
                    "precision": _HEAD,
                    "tie_embeddings": False,
                    "cross_entropy_impl": "pallas",
                }
            },
            "fp8_lm_head=True: the fused (pallas) cross-entropy has no float8 path",
        ),
        (
            {
                "model": {"precision": _HEAD, "tie_embeddings": False},
                "train": {"chunked_ce": False},
            },
            "model.precision.fp8_lm_head=true: the float8 head is the chunked loss's",
        ),
    ],
)
def test_bad_values_name_the_key(data, needle):
    with pytest.raises(ConfigError) as err:
        read_config(data)
    assert needle in str(err.value)


@pytest.mark.parametrize(("preset", "step"), [("dpo_tiny", "DPO"), ("grpo_tiny", "GRPO")])
def test_delayed_fp8_is_refused_where_the_step_does_not_carry_its_state(preset, step):
    sets = [f"model.precision.{k}={v}" for k, v in _DELAYED.items()]
    with pytest.raises(ConfigError) as err:
        read_config(apply_overrides(load_config_data(preset), sets))
    assert f"fp8_recipe=delayed: the {step} step does not carry the float8 state" in str(err.value)


@pytest.mark.parametrize(("preset", "loss"), [("dpo_tiny", "DPO"), ("grpo_tiny", "GRPO")])
def test_the_fp8_lm_head_is_refused_where_the_loss_scores_through_its_own_logits(
    preset: str, loss: str
) -> None:
    sets = [f"model.precision.{k}={v}" for k, v in _HEAD.items()] + ["model.tie_embeddings=false"]
    with pytest.raises(ConfigError) as err:
        read_config(apply_overrides(load_config_data(preset), sets))
    assert f"fp8_lm_head=true: the {loss} loss scores its tokens" in str(err.value)


def test_float_fields_accept_ints_and_yaml_exponent_strings():
    cfg = read_config({"optimizer": {"schedule": {"peak_lr": 1}, "eps": "1e-6"}})
    peak = cfg.optimizer.schedule.peak_lr
    assert peak == 1.0 and isinstance(peak, float)
    assert cfg.optimizer.eps == pytest.approx(1e-6)


def test_optional_fields_accept_null():
    cfg = read_config({"optimizer": {"clip_norm": None}, "model": {"vocab_size": None}})
    assert cfg.optimizer.clip_norm is None and cfg.vocab_size is None
    # a field that takes no null: null is the class's own default (the kind's)
    assert read_config({"model": {"kind": "llama", "position": None}}).model.position.kind == "rope"


def test_to_dict_is_plain_data_that_reads_back():
    data = read_config({}).to_dict()
    assert isinstance(data["model"], dict) and data["logging"]["sinks"] == ["console", "jsonl"]
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert read_config(data) == read_config({})


def test_a_derived_setting_is_written_null_while_it_follows_the_others():
    """``mlp.dim`` 4 × d_model, ``num_kv_heads`` = num_heads, ``peak_lr`` the optimizer's own:
    written null while the object holds that value, so the file read back derives it again."""
    rng = np.random.default_rng()
    d, heads = 32 * int(rng.integers(1, 5)), 2 ** int(rng.integers(0, 3))
    model = {"d_model": d, "num_heads": heads, "mlp": {"dim": 4 * d}, "num_kv_heads": heads}
    cfg = read_config({"model": model, "optimizer": {"schedule": {"peak_lr": 3e-4}}})
    assert (cfg.model.mlp.dim, cfg.model.num_kv_heads, cfg.model.head_dim) == (
        4 * d,
        heads,
        d // heads,
    )
    data = cfg.to_dict()
    m = data["model"]
    assert [m["mlp"]["dim"], m["num_kv_heads"], m["head_dim"]] == [None] * 3
    assert data["optimizer"]["schedule"]["peak_lr"] is None  # adamw's own 3e-4
    data["model"]["d_model"] = 2 * d  # another width: the derived sizes follow it
    assert read_config(data).model.mlp.dim == 8 * d
    other = read_config({"model": {**model, "mlp": {"dim": 3 * d}}}).to_dict()["model"]
    assert other["mlp"]["dim"] == 3 * d  # a value of its own is written as such


def test_task_follows_model_kind():
    assert read_config({"model": {"kind": "llama"}}).task == "lm"
    assert read_config({"model": {"kind": "bert"}}).task == "mlm"
    assert read_config({"model": {"kind": "vit"}}).task == "classify"
    assert read_config({"model": {"kind": "encdec"}}).task == "seq2seq"


def test_every_kind_is_a_tjx_nn_model_kind_with_its_objective():
    from tjx import nn

    assert set(KINDS) == set(nn.MODEL_KINDS)
    for kind in KINDS:
        want = nn.objective_of(nn.MODEL_KINDS[kind]).name
        assert read_config({"model": {"kind": kind}}).task == want


def test_a_lm_needs_a_prompt_and_the_others_none():
    with pytest.raises(ConfigError, match="sampling.prompts: give at least one prompt"):
        read_config({"sampling": {"prompts": []}})
    assert read_config({"model": {"kind": "bert"}, "sampling": {"prompts": []}}).task == "mlm"


def test_config_file_path_and_errors(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("base: tiny\ntrain: {steps: 77}\n")
    data = load_config_data(str(good))
    cfg = read_config(data)
    assert cfg.name == "mine" and cfg.train.steps == 77 and cfg.model.d_model == 128
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_data(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config_data(str(scalar))
    with pytest.raises(ConfigError, match="no such file"):
        load_config_data(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config_data("nope")
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: 5\n")
    with pytest.raises(ConfigError, match="base: expected a preset name"):
        load_config_data(str(loop))


@pytest.mark.parametrize("name", PRESETS)
def test_flops_per_unit_of_every_preset(name):
    """MFU's numerator: per token for LMs, per image (all its positions) for the classifier."""
    from tjx import nn

    cfg = read_config(load_config_data(name))
    c = resolve(cfg, 512).model
    got = nn.flops_per_unit(c, cfg.data.seq_len)
    if cfg.task == "classify":
        positions = c.max_seq_len
        assert positions > 1
        assert got == pytest.approx(nn.flops_per_token(c, positions) * positions)
        # At least the weight matmuls of every position (forward + backward = 6 per weight).
        assert got > 6 * nn.matmul_param_count(c) * (positions - 1)
    else:
        assert got == pytest.approx(nn.flops_per_token(c, cfg.data.seq_len))
        assert got > 6 * nn.matmul_param_count(c)


def test_position_reaches_the_model_and_is_checked_per_kind():
    from tjx import nn

    base = load_config_data("tiny")
    cfg = read_config(apply_overrides(base, ["model.position=t5", "model.relative_buckets=16"]))
    c = resolve(cfg, 300).model
    assert (c.position.kind, c.position.relative_buckets, c.position.relative_max_distance) == (
        "t5",
        16,
        128,
    )
    model = nn.build_model(c, rngs=nnx.Rngs(0))
    assert model(jnp.zeros((1, 8), jnp.int32)).shape == (1, 8, 300)
    # null keeps each family's default
    assert resolve(read_config(base), 300).model.position == nn.GPT2Config().position
    bad = [
        # tjx.nn's own rules, reported at config time with the model section named
        (["model.kind=bert", "model.position=t5"], r"^model\.position\.kind must be one of"),
        (["model.kind=vit", "model.position=rope"], r"^model\.position\.kind must be one of"),
        (
            ["model.position=t5", "model.relative_buckets=7"],
            r"^model\.position\.relative_buckets must be",
        ),
        (["model.position=spiral"], "model.position"),
    ]
    for sets, message in bad:
        with pytest.raises(ConfigError, match=message):
            read_config(apply_overrides(base, sets))


def test_config_files_that_would_mislead_are_refused(tmp_path):
    """Empty, duplicate keys, not UTF-8, a folder, an absurd step count: each one line."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no settings.*base: tiny"):
        load_config_data(str(empty))
    twice = tmp_path / "twice.yaml"
    twice.write_text("base: tiny\noptimizer:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: key 'lr' is given twice \(line 4\)"):
        load_config_data(str(twice))
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("base: tiny\nname: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text.*save the config as UTF-8"):
        load_config_data(str(latin1))
    folder = tmp_path / "configs.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a directory; pass a .yaml file"):
        load_config_data(str(folder))
    with pytest.raises(ConfigError, match=r"train.steps.*10\*\*9|train.steps.*1000000000"):
        read_config({"train": {"steps": 10**25}})


def test_base_may_be_a_file_relative_to_its_includer_and_cycles_are_named(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "common.yaml").write_text("base: tiny\ntrain: {steps: 333}\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: shared/common.yaml\noptimizer: {lr: 0.002}\n")
    cfg = read_config(load_config_data(str(mine)))
    got = (cfg.train.steps, cfg.optimizer.schedule.peak_lr, cfg.model.d_model)
    assert got == (333, 0.002, 128)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("base: ./b.yaml\n")
    b.write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"base: a cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_config_data(str(a))
    missing = tmp_path / "m.yaml"
    missing.write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"m.yaml.base: no such file .*nowhere.yaml"):
        load_config_data(str(missing))


def test_optimizer_rules_of_tjx_optim_name_the_trainers_keys():
    with pytest.raises(ConfigError, match=r"^optimizer.skip_nonfinite=False with loss_scale"):
        read_config({"optimizer": {"skip_nonfinite": False, "loss_scale": "dynamic"}})
    with pytest.raises(
        ConfigError,
        match=r"^optimizer.schedule.decay_fraction=.*train.steps|"
        r"^optimizer.schedule.decay_fraction",
    ):
        read_config(
            {
                "train": {"steps": 600},
                "optimizer": {"schedule": {"name": "wsd", "warmup_steps": 600}},
            }
        )


@pytest.mark.parametrize(
    ("sets", "splits_model"),
    [
        ([], False),
        (["mesh.data=-1", "mesh.context=2"], True),
        (["mesh.data=2", "mesh.context=-1"], True),
        (["mesh.data=-1", "mesh.pipeline=2"], True),
    ],
)
def test_mesh_needs_name_each_size_by_its_keys_and_hold_the_model_only_for_a_split(
    sets, splits_model
):
    batch, steps, eval_batch = 12, 3, 10
    cfg = read_config(
        apply_overrides(
            load_config_data("tiny"),
            [
                *sets,
                f"data.batch_size={batch}",
                f"optimizer.accumulation_steps={steps}",
                f"eval.batch_size={eval_batch}",
            ],
        )
    )
    needs = cfg.mesh_needs()
    per_step = f"data.batch_size / optimizer.accumulation_steps ({batch} / {steps})"
    assert dict(needs.batches) == {per_step: batch // steps, "eval.batch_size": eval_batch}
    assert needs.step_batch == batch // steps and needs.seq_len == cfg.data.seq_len
    assert needs.num_experts == cfg.model.moe.num_experts
    assert (needs.model is cfg.model) if splits_model else needs.model is None
