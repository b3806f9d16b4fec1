"""DPO in the trainer: ``data.format: preference`` trains tjx.nn's preference loss against a frozen
reference (the starting params, or the LoRA base), starts from an SFT run (``--init-from
RUN_DIR``), raises held-out preference accuracy, resumes bit for bit, and refuses what cannot
apply in one line."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from tjx import ckpt, nn
from trainer.cli import main, plan_argv
from trainer.config.schema import ConfigError
from trainer.config.typed import read_config, resolve, step_config

SMALL = [
    "model.d_model=32",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.mlp.dim=64",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
    "train.checkpoint_every=0",
]


def _argv(tmp, preset, run, *sets, cache=None):
    """The command line of a run in ``tmp``; ``cache``: the data cache (default ``tmp/cache``)."""
    argv = ["--config", preset, "--run-dir", str(tmp / run)]
    for item in [*SMALL, f"data.cache_dir={cache or tmp / 'cache'}", *sets]:
        argv += ["--set", item]
    return argv


def _style_task(tmp, rows=400, seed=0):
    """A preference a tiny model can learn from few pairs, against what SFT taught it: the SFT
    answers end with " ok" nine times in ten; the pairs prefer the bare answer."""
    rng = np.random.default_rng(seed)
    sft, pairs = tmp / "sft.jsonl", tmp / "pairs.jsonl"
    with open(sft, "w") as s, open(pairs, "w") as p:
        for _ in range(rows):
            a, b = (int(x) for x in rng.integers(0, 50, 2))
            user = [{"role": "user", "content": f"What is {a} + {b}?"}]
            bare, suffixed = str(a + b), f"{a + b} ok"
            said = suffixed if rng.random() < 0.9 else bare
            s.write(
                json.dumps({"messages": [*user, {"role": "assistant", "content": said}]}) + "\n"
            )
            row = {"prompt": user, "chosen": [{"role": "assistant", "content": bare}],
                   "rejected": [{"role": "assistant", "content": suffixed}]}  # fmt: skip
            p.write(json.dumps(row) + "\n")
    return sft, pairs


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _heldout(argv, init):
    """The held-out preference metrics of the run ``argv`` would start from ``init``."""
    import trainer.loop.evaluation as evaluation
    import trainer.step.data_setup as data_setup
    import trainer.step.state as state

    cfg = plan_argv(argv).config
    bundle = data_setup.prepare(cfg)
    cfg = resolve(cfg, bundle.vocab_size)
    setup = state.build(step_config(cfg), init)
    params = setup.state.param_tree()
    return evaluation.evaluate(setup, params, bundle, cfg, setup.state.reference)


def test_dpo_from_an_sft_run_raises_held_out_preference_accuracy_and_resumes_exactly(in_tmp):
    sft_data, pairs = _style_task(in_tmp)
    sft = ["train.steps=150", "train.eval_every=0", f"data.source={sft_data}"]
    assert main(_argv(in_tmp, "sft_tiny", "sft", *sft, "data.batch_size=8")) == 0
    tokenizer = json.loads((in_tmp / "sft" / "data.json").read_text())["tokenizer"]
    dpo = [f"data.source={pairs}", f"data.tokenizer={tokenizer}", "train.steps=40",
           "train.eval_every=40", "train.log_every=10", "optimizer.schedule.peak_lr=2e-3",
           "data.batch_size=8", "eval.batch_size=8"]  # fmt: skip
    sft_model = _heldout(_argv(in_tmp, "dpo_tiny", "unused", *dpo), str(in_tmp / "sft"))
    # At the start the policy is its reference: no reward, the DPO loss is log 2.
    assert sft_model["rewards/accuracies"] == 0.0 and sft_model["loss"] == pytest.approx(np.log(2))
    argv = [*_argv(in_tmp, "dpo_tiny", "dpo", *dpo), "--init-from", str(in_tmp / "sft")]
    assert main(argv) == 0
    lines = _metrics(in_tmp / "dpo")
    val = [x for x in lines if "val_loss" in x][-1]
    # Held-out preference accuracy (the policy's own ranking of chosen over rejected) rises
    # well above the SFT model's, and so do the rewards' accuracy and margins (vs the reference).
    assert sft_model["logps/accuracies"] < 0.5, sft_model  # SFT prefers the " ok" answers
    assert val["val_logps/accuracies"] >= sft_model["logps/accuracies"] + 0.4, (val, sft_model)
    assert val["val_rewards/accuracies"] > 0.8 and val["val_rewards/margins"] > 0, val
    assert val["val_loss"] < 0.6 * np.log(2), val
    train = [x for x in lines if "rewards/margins" in x]
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "pairs"} <= set(train[0])
    assert "num_tokens" not in train[0] and train[0]["pairs"] == 8.0
    init = json.loads((in_tmp / "dpo" / "init.json").read_text())
    assert init == {"init_from": str(in_tmp / "sft"), "kind": "tjx-run", "step": 150}
    # Stopped half-way and resumed without --init-from: the reference comes back from the
    # checkpoint, and the run ends on the uninterrupted run's parameters, bit for bit.
    again = _argv(in_tmp, "dpo_tiny", "dpo2", *dpo)
    assert main([*again, "--init-from", str(in_tmp / "sft"), "--set", "train.stop_at=20"]) == 0
    assert main([*again, "--resume"]) == 0
    done = [json.loads((in_tmp / r / "final.json").read_text()) for r in ("dpo", "dpo2")]
    assert done[0]["params_sha256"] == done[1]["params_sha256"]
    assert json.loads((in_tmp / "dpo2" / "init.json").read_text())["step"] == 150


def _setup(tmp, cache, *sets):
    """A built DPO step of dpo_tiny's arithmetic pairs (``cache``: prepared once a session)."""
    import trainer.step.data_setup as data_setup
    import trainer.step.state as state

    argv = _argv(tmp, "dpo_tiny", "run", "data.batch_size=4", *sets, cache=cache)
    cfg = plan_argv(argv).config
    bundle = data_setup.prepare(cfg)
    cfg = resolve(cfg, bundle.vocab_size)
    return cfg, state.build(step_config(cfg)), next(data_setup.train_loader(bundle, cfg))


def test_without_lora_the_reference_is_a_frozen_copy_outside_the_optimizer(in_tmp, data_cache):
    from trainer.step.train_step import jit_train_step

    cfg, setup, batch = _setup(in_tmp, data_cache)
    st = setup.state
    params = jax.device_get(st.param_tree())
    assert ckpt.params_sha256(st.reference) == ckpt.params_sha256(params)
    # Adam's moments mirror the params once each: the reference holds no optimizer state.
    n = sum(x.size for x in jax.tree.leaves(params))
    assert sum(x.size for x in jax.tree.leaves(st.opt_state) if x.ndim) == 2 * n
    step = jit_train_step(setup)
    new, metrics = step(st, batch)
    assert float(metrics["loss"]) == pytest.approx(np.log(2), rel=1e-6)  # policy == reference
    new, metrics = step(new, batch)  # the first step's rate is 0 (warmup): one more
    assert ckpt.params_sha256(new.reference) == ckpt.params_sha256(params)
    assert ckpt.params_sha256(new.param_tree()) != ckpt.params_sha256(params)
    assert float(metrics["pairs"]) == 4.0 and 0.0 <= float(metrics["rewards/accuracies"]) <= 1.0


def test_accumulated_micro_batches_weigh_by_their_pairs(in_tmp, data_cache):
    import dataclasses

    from trainer.step.train_step import make_train_step

    # One build: the micro-batches are the step's own (make_train_step reads
    # optimizer.accumulation_steps of its StepConfig; the optimizer and state do not).
    cfg, setup, batch = _setup(in_tmp, data_cache, "data.batch_size=8")
    batch = {k: np.array(v) for k, v in batch.items()}
    # Pairs 0-4 real, 5-7 padding: the interleaved micro-batches (pairs 0, 2, 4, 6 and
    # 1, 3, 5, 7; each pair's two rows together) hold 3 and 2 real pairs.
    batch["targets"][10:] = -100
    base = setup.step_config
    norms = []
    for micro in (1, 2):
        optimizer = dataclasses.replace(base.optimizer, accumulation_steps=micro)
        sc = dataclasses.replace(base, optimizer=optimizer)
        step = make_train_step(setup.graphdef, setup.rest, setup.tx, sc, setup.split, setup.experts)
        _, metrics = jax.jit(step)(setup.state, batch)
        assert float(metrics["pairs"]) == 5.0
        norms.append(float(metrics["grad_norm"]))
    # Equal micro-batch weights would give each pair of the second micro-batch 3/2 the share of
    # one of the first.
    assert norms[1] == pytest.approx(norms[0], rel=1e-4)


def _without_adapters(tree):
    if not isinstance(tree, dict):
        return tree
    return {k: _without_adapters(v) for k, v in tree.items() if k != "lora"}


def test_with_lora_the_reference_is_the_base_with_the_adapters_off(in_tmp, data_cache):
    from flax import nnx

    from trainer.step.train_step import make_loss_fn

    cfg, setup, batch = _setup(in_tmp, data_cache, "lora.enabled=true", "lora.rank=2")
    assert setup.state.reference is None  # no second copy of the weights
    params = jax.tree.map(np.array, setup.state.param_tree())
    rng = np.random.default_rng()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if "lora_b" in jax.tree_util.keystr(path):  # adapters that change the model
            leaf[...] = rng.normal(0, 0.5, leaf.shape)
    loss, aux = make_loss_fn(setup.graphdef, setup.rest, setup.step_config)(
        params, batch, jax.numpy.int32(0)
    )
    # The reference, built apart: the model without adapters, holding the frozen base weights.
    base = nn.build_model(setup.nn_config, rngs=nnx.Rngs(0))
    state = nnx.state(base, nnx.Param)
    nnx.replace_by_pure_dict(state, _without_adapters(params))
    nnx.update(base, state)
    policy = nnx.merge(setup.graphdef, params, setup.rest)
    expected = nn.preference_loss(policy, batch, beta=cfg.preference.beta, reference=base)
    assert float(loss) == pytest.approx(float(expected.loss), rel=1e-5)
    # The adapters moved the policy off the reference: each pair's chosen reward (beta × the
    # log-prob difference) is non-zero. (The loss itself may still land near log 2 when the
    # chosen and rejected rewards move alike, so it is not what this checks.)
    real = np.asarray(expected.valid).astype(bool)
    assert real.sum() == 4 and np.abs(np.asarray(expected.chosen_rewards)[real]).min() > 1e-6
    assert float(aux["num_tokens"]) == 4.0


def test_the_dpo_step_compiles_for_a_plan(in_tmp):
    from trainer.plan import target_plan

    cfg = plan_argv(_argv(in_tmp, "dpo_tiny", "run")).config
    run = target_plan.build(step_config(resolve(cfg, 400)), jax.devices()[:1])
    assert run.batch["inputs"].shape == (2 * cfg.data.batch_size, cfg.data.seq_len)
    assert run.state.reference is not None
    run.train_step.lower(run.state, run.batch).compile()
    run.eval_step.lower(run.state.param_tree(), run.eval_batch, run.state.reference).compile()


def _preset(name):
    from trainer.config.settings import load_config_data

    return load_config_data(name)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": {"kind": "bert"}, "data": {"format": "preference"}},
         r"^data\.format: preference data trains a decoder"),
        ({"preference": {"beta": 0.5}}, r"^preference\.beta: applies to preference pairs only"),
        ({"data": {"format": "preference"}, "mesh": {"pipeline": 2},
          "model": {"scan_layers": True}},
         r"^mesh\.pipeline: cannot apply with data\.format=preference"),
        ({"data": {"format": "preference"}, "model": {"moe": {"num_experts": 4}}},
         r"^model\.moe\.num_experts: cannot apply with data\.format=preference"),
        ({"data": {"format": "preference"}, "train": {"z_loss": 1e-4}},
         r"^train\.z_loss: cannot apply with data\.format=preference"),
        ({"data": {"format": "preference"}, "preference": {"beta": 0}},
         r"^preference\.beta: 0\.0 is too small; allowed: > 0"),
        ({"data": {"format": "preference"}, "preference": {"loss_type": "hinge"}},
         r"^preference\.loss_type: 'hinge' is not allowed"),
    ],
)  # fmt: skip
def test_a_setting_dpo_cannot_apply_is_one_config_error(data, message):
    with pytest.raises(ConfigError, match=message):
        read_config(data)


def test_bad_dpo_inputs_are_one_line_exit_2_and_write_nothing(in_tmp, capsys):
    bad = in_tmp / "bad.jsonl"
    good = {"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}
    bad.write_text("\n".join(json.dumps(r) for r in [good] * 12 + [{**good, "chosen": ""}]))
    argv = _argv(in_tmp, "dpo_tiny", "run", f"data.source={bad}")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty" in err[0] and "data.source" in err[0], err
    assert not (in_tmp / "run").exists()
    # --init-from a run of another model: one line before any data is prepared.
    (in_tmp / "sft").mkdir()
    other = read_config(_preset("sft_tiny"))
    (in_tmp / "sft" / "model.json").write_text(
        json.dumps(nn.config_to_dict(resolve(other, 400).model))
    )
    (in_tmp / "sft" / "config.yaml").write_text("name: sft\n")
    (in_tmp / "sft" / "checkpoints" / "10").mkdir(parents=True)
    assert main([*_argv(in_tmp, "dpo_tiny", "run"), "--init-from", str(in_tmp / "sft")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained another model: model.d_model 32 (the run's: 128)" in err[0]
    assert not (in_tmp / "run").exists()
    # ... and of the same model read through another tokenizer: its ids would mean other tokens.
    ours = plan_argv(_argv(in_tmp, "dpo_tiny", "run")).config
    (in_tmp / "sft" / "model.json").write_text(json.dumps(nn.config_to_dict(ours.model)))
    (in_tmp / "sft" / "data.json").write_text(json.dumps({"tokenizer": "/elsewhere"}))
    assert main([*_argv(in_tmp, "dpo_tiny", "run"), "--init-from", str(in_tmp / "sft")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read another tokenizer (/elsewhere)" in err[0], err
    assert "set data.tokenizer=/elsewhere" in err[0] and not (in_tmp / "run").exists()


def test_a_lora_sft_run_starts_dpo_with_its_adapters_merged_into_the_weights(in_tmp, data_cache):
    from flax import nnx

    from trainer.step import init_from

    sft = ["train.steps=3", "lora.enabled=true", "lora.rank=2", "lora.targets=[q,v]"]
    argv = _argv(in_tmp, "sft_tiny", "sft", *sft, "data.batch_size=8", cache=data_cache)
    assert main(argv) == 0
    vocab = json.loads((in_tmp / "sft" / "data.json").read_text())["vocab_size"]
    cfg = resolve(plan_argv(_argv(in_tmp, "dpo_tiny", "run")).config, vocab)
    loaded, step = init_from.load_run(cfg.train.seed, cfg.model, str(in_tmp / "sft"))
    # The params of the config's model: no adapter left (a model without them takes them all).
    merged = nn.build_model(cfg.model, rngs=nnx.Rngs(0))
    nnx.update(merged, loaded)
    assert step == 3 and not nn.has_lora(merged)
    assert jax.tree.structure(loaded) == jax.tree.structure(nnx.state(merged, nnx.Param))
    # The SFT model as it trained: the base with its adapters, from the same checkpoint.
    adapted = nn.build_model(cfg.model, rngs=nnx.Rngs(1))
    nn.add_lora(adapted, nn.LoraConfig(rank=2, targets=("q", "v")), rngs=nnx.Rngs(2))
    params = nnx.state(adapted, nnx.Param)
    saved = ckpt.restore_params(in_tmp / "sft" / "checkpoints", target=nnx.to_pure_dict(params))
    nnx.replace_by_pure_dict(params, saved)
    nnx.update(adapted, params)
    tokens = np.random.default_rng().integers(0, vocab, (2, 16))
    want = np.asarray(adapted(tokens))
    assert np.abs(want - np.asarray(nn.adapters_off(adapted)(tokens))).max() > 1e-4  # trained
    np.testing.assert_allclose(np.asarray(merged(tokens)), want, rtol=1e-4, atol=1e-5)
