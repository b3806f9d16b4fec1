"""#15 point 5: MLA, biases, top-k decoding, SGD momentum/Nesterov and the WSD decay reach the
trainer's config, are checked with the trainer's key names and arrive in tjx.nn / tjx.optim."""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tjx import nn, optim
from tjx.nn.attention_config import ATTENTION_TYPES
from tjx.optim.schedules import WSD_DECAY_SHAPES
from trainer.cli import main
from trainer.config.schema import ConfigError, choices
from trainer.config.settings import apply_overrides, field_at, load_config_data
from trainer.config.typed import read_config, resolve, step_config
from trainer.plan.memory_fit import abstract_step

TINY = {"d_model": 16, "num_layers": 1, "num_heads": 2, "mlp": {"dim": 32}}
MLA = {"attention": {"type": "mla"}, "mla": {"kv_latent_dim": 4}}
WSD = {"name": "wsd", "warmup_steps": 0}


def _nn(model: dict[str, Any]) -> Any:
    return resolve(read_config({"model": model, "data": {"seq_len": 16}}), 300).model


def _opt(optimizer: dict[str, Any], steps: int = 100) -> Any:
    return read_config({"optimizer": optimizer, "train": {"steps": steps}}).optimizer.resolved()


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (MLA, "attention.type", "mla"),
        (MLA, "mla.kv_latent_dim", 4),
        ({"kind": "llama", "moe": {"num_experts": 4}}, "moe.num_experts", 4),
        ({"use_bias": False}, "use_bias", False),
        ({"kind": "llama", "use_bias": True}, "use_bias", True),
        ({"attention": {"decode_topk": 3}}, "attention.decode_topk", 3),
        ({"kind": "llama", "attention": {"decode_topk": 5}}, "attention.decode_topk", 5),
    ],
)
def test_model_keys_reach_the_tjx_nn_config(model, field, value):
    """(A component section's key dotted; a flat key written before the sections reads too.)"""
    assert nn.setting_value(_nn(model), field) == value


@pytest.mark.parametrize(
    ("optimizer", "get", "value"),
    [
        ({"name": "sgd", "momentum": 0.5}, lambda c: c.momentum, 0.5),
        ({"name": "sgd", "momentum": 0.0}, lambda c: c.momentum, 0.0),
        ({"name": "sgd", "nesterov": True}, lambda c: c.nesterov, True),
        ({"name": "muon", "momentum": 0.8, "nesterov": False}, lambda c: c.nesterov, False),
        ({"schedule": {**WSD, "decay_fraction": 0.5}}, lambda c: c.schedule.decay_fraction, 0.5),
        ({"schedule": {**WSD, "decay_shape": "sqrt"}}, lambda c: c.schedule.decay_shape, "sqrt"),
    ],
)
def test_optimizer_keys_reach_the_tjx_optim_config(optimizer, get, value):
    assert get(_opt(optimizer)) == value


def test_null_keeps_the_packages_own_defaults():
    assert _nn({}).use_bias is True and _nn({"kind": "llama"}).use_bias is False
    assert _nn({"kind": "bert"}).use_bias is nn.BertConfig().use_bias
    assert _nn({}).attention.type == nn.TransformerConfig().attention.type
    assert _nn({}).attention.decode_topk is None and _nn({}).mla.kv_latent_dim is None
    assert _nn({"kind": "llama"}).moe == nn.MoEConfig() and _nn({}).delta == nn.DeltaConfig()
    sgd = _opt({"name": "sgd"})
    own = optim.OptimizerConfig(name="sgd").resolved()
    assert (sgd.momentum, sgd.nesterov) == (own.momentum, own.nesterov) == (0.9, False)
    wsd = _opt({"schedule": WSD}).schedule
    theirs = optim.ScheduleConfig(name="wsd")  # tjx.optim fills a wsd schedule's own defaults
    assert (wsd.decay_fraction, wsd.decay_shape) == (theirs.decay_fraction, theirs.decay_shape)


def test_choice_lists_are_the_packages_own():
    assert choices(field_at("model.attention.type")[0]) == ATTENTION_TYPES
    assert choices(field_at("optimizer.schedule.decay_shape")[0]) == WSD_DECAY_SHAPES
    for shape in WSD_DECAY_SHAPES:
        assert _opt({"schedule": {**WSD, "decay_shape": shape}}).schedule.decay_shape == shape


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"model": {"attention": {"type": "gqa"}}}, "model.attention.type: 'gqa' is not allowed"),
        (
            {"model": {"attention": {"type": "mla"}}},
            "model.mla.kv_latent_dim: attention.type 'mla' needs",
        ),
        ({"model": {"mla": {"kv_latent_dim": 8}}}, "model.mla.kv_latent_dim: only attention.type"),
        (
            {"model": {**MLA, "mla": {"kv_latent_dim": 0}}},
            "model.mla.kv_latent_dim must be a positive int; got 0",
        ),
        (
            {"model": {"kind": "llama", "moe": {"num_experts": 2, "experts_per_token": 3}}},
            "model.moe.experts_per_token: 3 is more than the 2 experts",
        ),
        (
            {
                "model": {
                    "kind": "llama",
                    "num_layers": 2,
                    "moe": {"num_experts": 2, "first_dense": 2},
                }
            },
            "model.moe.first_dense: with first_dense=2",
        ),
        ({"model": {"kind": "bert", "moe": {"num_experts": 2}}}, "model.moe: only decoders"),
        ({"model": {"use_bias": "maybe"}}, "model.use_bias: expected true/false, got 'maybe'"),
        (
            {"model": {"attention": {"decode_topk": 0}}},
            "model.attention.decode_topk must be a positive int; got 0",
        ),
        (
            {"model": {"kind": "bert", "attention": {"decode_topk": 2}}},
            "model.attention.decode_topk: only decoders",
        ),
        ({"optimizer": {"name": "sgd", "momentum": 1.0}}, "optimizer.momentum=1.0 is out of range"),
        (
            {"optimizer": {"name": "sgd", "momentum": -0.1}},
            "optimizer.momentum=-0.1 is out of range",
        ),
        ({"optimizer": {"momentum": 0.9}}, "optimizer.momentum: only sgd, muon use it"),
        ({"optimizer": {"name": "lion", "nesterov": True}}, "optimizer.nesterov: only sgd, muon"),
        (
            {"optimizer": {"name": "sgd", "nesterov": 1}},
            "optimizer.nesterov: expected true/false or null",
        ),
        (
            {"optimizer": {"schedule": {"decay_fraction": 0.3}}},
            "optimizer.schedule.decay_fraction: only the 'wsd' schedule uses it",
        ),
        (
            {"optimizer": {"schedule": {"decay_shape": "sqrt"}}},
            "optimizer.schedule.decay_shape: only the 'wsd' schedule uses it",
        ),
        (
            {"optimizer": {"schedule": {**WSD, "decay_fraction": 0.0}}},
            "optimizer.schedule.decay_fraction=0.0 is out of range",
        ),
        (
            {"optimizer": {"schedule": {**WSD, "decay_fraction": 1.5}}},
            "optimizer.schedule.decay_fraction=1.5 is out of range",
        ),
        (
            {"optimizer": {"schedule": {**WSD, "decay_shape": "exp"}}},
            "optimizer.schedule.decay_shape: 'exp' is not allowed",
        ),
        (  # tjx.optim's rule (warmup + decay fit in the run), in the trainer's names
            {
                "train": {"steps": 100},
                "optimizer": {
                    "schedule": {"name": "wsd", "warmup_steps": 50, "decay_fraction": 0.6}
                },
            },
            "optimizer.schedule.decay_fraction=0.6 with warmup_steps=50 exceeds the run",
        ),
    ],
)
def test_bad_values_name_the_key(data, needle):
    with pytest.raises(ConfigError) as err:
        read_config(data)
    assert str(err.value).startswith(needle), str(err.value)


def _params(model: dict[str, Any]) -> dict[str, Any]:
    cfg = _nn({**TINY, **model})
    return nnx.to_pure_dict(nnx.state(nn.build_model(cfg, rngs=nnx.Rngs(0)), nnx.Param))


def _paths(tree: dict[str, Any]) -> list[str]:
    return ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in _leaves(tree)]


def _leaves(tree: dict[str, Any]) -> list[tuple[Any, Any]]:
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def test_an_mla_model_has_a_latent_projection_and_cache():
    cfg = _nn({**TINY, **MLA})
    model = nn.build_model(cfg, rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    latent = [(p, x.shape) for p, x in zip(_paths(params), jax.tree.leaves(params), strict=True)]
    assert any("kv_down" in p and shape == (16, 4) for p, shape in latent)
    assert not any("kv_down" in p for p in _paths(_params({})))
    assert set(nn.init_cache(cfg, 1, 8)) == {"latent"}  # the cache keeps the latent, not k/v
    out = nn.generate(model, np.asarray([[1, 2, 3]]), max_new_tokens=3)
    assert out.shape == (1, 6)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert", "vit"])
def test_use_bias_false_leaves_no_bias_in_the_blocks_and_norms(kind):
    def biases(use_bias: bool) -> list[str]:
        paths = _paths(_params({"kind": kind, "use_bias": use_bias}))
        # tjx.nn keeps the biases of BERT's MLM head and ViT's patch embedding and classifier.
        return [p for p in paths if p.endswith("bias") and ("norm" in p or "stack/" in p)]

    on = biases(True)
    assert any("attn/query" in p for p in on) and any("mlp/fc_out" in p for p in on)
    # LLaMA's RMSNorm has no bias to switch; the LayerNorms of the other kinds have.
    assert any("attn_norm" in p for p in on) is (kind != "llama")
    assert biases(False) == []


def _one_sgd_step(nesterov: bool) -> np.ndarray:
    opt = {
        "name": "sgd",
        "momentum": 0.5,
        "nesterov": nesterov,
        "clip_norm": None,
        "schedule": {"name": "constant", "warmup_steps": 0, "peak_lr": 0.1},
    }
    tx = optim.build_optimizer(_opt(opt), total_steps=100)  # _opt's train.steps
    params = {"w": jnp.asarray([1.0, -2.0])}
    grads = {"w": jnp.asarray([1.0, 2.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    return np.asarray(optax.apply_updates(params, updates)["w"])


def test_nesterov_changes_the_first_sgd_step():
    # Plain momentum: the first update is the gradient; Nesterov's looks ahead once more,
    # g + momentum * g (optax.trace with zero initial velocity).
    np.testing.assert_allclose(_one_sgd_step(False), [1.0 - 0.1, -2.0 - 0.2], rtol=1e-6)
    np.testing.assert_allclose(_one_sgd_step(True), [1.0 - 0.15, -2.0 - 0.3], rtol=1e-6)


def test_wsd_decay_fraction_moves_the_decay():
    def lr_at(fraction: float, step: int) -> float:
        sched = {"name": "wsd", "warmup_steps": 0, "decay_fraction": fraction, "peak_lr": 1.0}
        c = _opt({"schedule": sched}, steps=100)  # the schedule spans train.steps
        return float(optim.learning_rate_schedule(c, total_steps=100)(step))

    assert lr_at(0.2, 70) == pytest.approx(1.0)  # still stable: decay starts at step 80
    assert lr_at(0.5, 70) < 0.7  # decaying since step 50


def _signature(*sets: str) -> Any:
    small = ["model.num_layers=1", "model.d_model=16", "model.num_heads=2", "model.mlp.dim=32"]
    cfg = read_config(apply_overrides(load_config_data("tiny"), [*small, *sets]))
    leaves, treedef = jax.tree.flatten(abstract_step(step_config(resolve(cfg, 257)))[1])
    return treedef, [(leaf.shape, leaf.dtype) for leaf in leaves]


# SGD on the tiny preset, without its Adam betas and eps (which SGD would not use).
SGD = ("optimizer.name=sgd", "optimizer.b1=null", "optimizer.b2=null", "optimizer.eps=null")
WSD_SETS = ("optimizer.schedule.name=wsd",)


@pytest.mark.parametrize(
    ("base", "change", "same"),
    [  # what a resumable field may be (same state) and what must match
        (SGD, "optimizer.nesterov=true", True),
        (SGD, "optimizer.momentum=0.5", True),
        (SGD, "optimizer.momentum=0.0", False),  # momentum 0 is plain SGD: no velocity state
        (WSD_SETS, "optimizer.schedule.decay_fraction=0.5", True),
        (WSD_SETS, "optimizer.schedule.decay_shape=cosine", True),
        ((), "model.attention.decode_topk=2", True),
        ((), "model.use_bias=false", False),
        ((), "model.attention.type=mla --set model.mla.kv_latent_dim=8", False),
        ((), "model.moe.num_experts=2", False),
    ],
)
def test_which_new_keys_change_the_train_state(base, change, same):
    changed = [*base, *change.split(" --set ")]
    assert (_signature(*base) == _signature(*changed)) is same


def test_a_run_with_every_new_key_trains_and_records_them(in_tmp, capsys):
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(200)))
    sets = [
        *("model.d_model=16", "model.num_layers=1", "model.num_heads=2", "model.mlp.dim=32"),
        *("model.max_seq_len=16", "data.seq_len=16", "data.batch_size=8", "eval.batch_size=8"),
        *("model.attention.type=mla", "model.mla.kv_latent_dim=4", "model.use_bias=false"),
        *(
            "model.attention.decode_topk=2",
            *SGD,
            "optimizer.momentum=0.8",
            "optimizer.nesterov=true",
        ),
        *WSD_SETS,
        *("optimizer.schedule.warmup_steps=0", "optimizer.schedule.decay_fraction=0.5"),
        *("optimizer.schedule.decay_shape=sqrt", "train.steps=2", "train.eval_batches=1"),
        *("sampling.max_new_tokens=4", "logging.sinks=[jsonl]", "logging.progress=false"),
        f"data.cache_dir={in_tmp / 'cache'}",
    ]
    argv = ["--config", "tiny", "--run-dir", "run", "--data", str(text)]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    fields = json.loads((in_tmp / "run" / "model.json").read_text())["fields"]
    assert (fields["attention"]["type"], fields["mla"]["kv_latent_dim"]) == ("mla", 4)
    assert (fields["use_bias"], fields["attention"]["decode_topk"]) == (False, 2)
    assert json.loads((in_tmp / "run" / "final.json").read_text())["step"] == 2
