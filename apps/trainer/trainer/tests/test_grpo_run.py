"""GRPO in the trainer (issue #55): ``data.format: prompts`` runs the loop's rollouts and logs
TRL's names, resumes bit for bit from a checkpoint at a rollout boundary, and its update is
tjx.nn's GRPO loss of the rollout the loop made."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx import nn
from trainer.cli import main, plan_argv
from trainer.config.typed import resolve, step_config

SMALL = [
    "model.d_model=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.mlp.dim=64",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
    "data.batch_size=8",
    "grpo.group_size=4",
    "grpo.iterations=2",
    "grpo.beta=0.1",
    "grpo.max_new_tokens=4",
    "train.log_every=1",
    "train.eval_every=0",
    "train.eval_batches=1",
    "eval.batch_size=8",
    "sampling.max_new_tokens=2",
    "optimizer.schedule.warmup_steps=1",
]


def _argv(tmp, cache, run, *sets):
    """The command line of a run in ``tmp`` (``cache``: the session's data cache)."""
    argv = ["--config", "grpo_tiny", "--run-dir", str(tmp / run)]
    for item in [*SMALL, f"data.cache_dir={cache}", *sets]:
        argv += ["--set", item]
    return argv


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_grpo_run_logs_trl_names_and_resumes_bit_for_bit(in_tmp, data_cache, capsys):
    from trainer.start.startup import RL_FROM_SCRATCH

    sets = ("train.steps=4", "train.checkpoint_every=2")
    assert main(_argv(in_tmp, data_cache, "whole", *sets)) == 0
    # Started fresh without --init-from: one warning line saying so (issue #72).
    warned = [x for x in capsys.readouterr().err.splitlines() if "warning" in x]
    assert warned == [f"trainer: warning: {RL_FROM_SCRATCH}"]
    assert "--init-from RUN" in RL_FROM_SCRATCH and "~0 reward" in RL_FROM_SCRATCH
    lines = [x for x in _metrics(in_tmp / "whole") if "loss" in x]
    names = {"loss", "kl", "entropy", "reward", "reward_std", "clip_ratio/region_mean"}
    names |= {"rewards/exact_answer/mean", "completions/mean_length", "rollout_tokens_per_s"}
    assert names <= set(lines[0]), sorted(lines[0])
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    # μ = 2: steps 1-2 share a rollout (its reward and lengths), steps 3-4 the next one.
    assert lines[0]["completions/mean_length"] == lines[1]["completions/mean_length"]
    assert lines[0]["num_tokens"] == 4 * 2 * lines[0]["completions/mean_length"]  # 8 rows
    assert lines[0]["kl"] == 0.0  # step 1: the policy is its reference (the frozen start)
    val = [x for x in _metrics(in_tmp / "whole") if "val_reward" in x]
    assert val and val[-1]["val_prompts"] >= 1
    # Stopped at the rollout boundary, resumed: the same rollouts (keys, prompts), the same end.
    assert main(_argv(in_tmp, data_cache, "parts", *sets, "train.stop_at=2")) == 0
    capsys.readouterr()
    assert main([*_argv(in_tmp, data_cache, "parts", *sets), "--resume"]) == 0
    assert "warning" not in capsys.readouterr().err  # a resume continues a run: no warning
    done = [json.loads((in_tmp / r / "final.json").read_text()) for r in ("whole", "parts")]
    assert done[0]["params_sha256"] == done[1]["params_sha256"]
    again = [x for x in _metrics(in_tmp / "parts") if "loss" in x and x["step"] > 2]
    for a, b in zip(lines[2:], again, strict=True):
        assert (a["loss"], a["reward"], a["kl"]) == (b["loss"], b["reward"], b["kl"])


#: GSPO with the entropy mask and bonus: the trainer hands the section's loss settings through.
GSPO = (
    "grpo.loss_type=grpo",
    "grpo.importance_sampling_level=sequence",
    "grpo.epsilon=3e-4",
    "grpo.epsilon_high=4e-4",
    "grpo.top_entropy_quantile=0.5",
    "grpo.entropy_coef=0.01",
)


def test_the_trainer_update_is_the_library_loss_of_the_loop_rollout(in_tmp, data_cache):
    import dataclasses

    import trainer.step.data_setup as data_setup
    import trainer.step.state as state
    from trainer.step.grpo import Rollouts
    from trainer.step.grpo import batch_shapes as grpo_batch_shapes
    from trainer.step.train_step import make_loss_fn

    cfg = plan_argv(_argv(in_tmp, data_cache, "run", "train.steps=2", *GSPO)).config
    assert cfg.grpo.importance_sampling_level == "sequence" and cfg.grpo.entropy_coef == 0.01
    bundle = data_setup.prepare(cfg)
    cfg = resolve(cfg, bundle.vocab_size)
    setup = state.build(step_config(cfg))
    loader = data_setup.train_loader(bundle, cfg)
    rollouts = Rollouts(cfg, setup, loader, bundle)
    batch, stats = rollouts.batch(0, setup.state)
    assert batch["inputs"].shape[0] == 8  # data.batch_size completions: 2 prompts × G = 4
    # What --plan compiles the update for is the batch the loop makes.
    planned = grpo_batch_shapes(setup.step_config)
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == {
        k: (shape, jnp.dtype(dtype)) for k, (shape, dtype) in planned.items()
    }
    assert {"reward", "reward_std", "completions/mean_length"} <= set(stats)
    params = setup.state.param_tree()
    policy = nnx.merge(setup.graphdef, params, setup.rest)
    logps = nn.token_logprobs(policy, batch, temperature=cfg.rollout.temperature)
    # β > 0 without LoRA: the reference is the frozen start, here the policy itself.
    np.testing.assert_allclose(batch["ref_logps"], logps, atol=1e-6)
    np.testing.assert_allclose(batch["old_logps"], logps, atol=1e-6)  # μ = 2: π_old
    perturbed = jax.tree.map(lambda x: x * 1.01, params)
    moved, entropies = nn.token_logprobs_and_entropies(
        nnx.merge(setup.graphdef, perturbed, setup.rest), batch, temperature=1.0
    )
    want = nn.grpo_loss(
        moved,
        batch["old_logps"],
        batch["advantages"],
        batch["mask"],
        config=cfg.grpo,
        ref_logps=batch["ref_logps"],
        entropies=entropies,
        max_completion_length=cfg.rollout.max_new_tokens,
    )
    loss_fn = make_loss_fn(setup.graphdef, setup.rest, setup.step_config)
    got, aux = jax.jit(loss_fn)(perturbed, batch, jnp.asarray(0))
    np.testing.assert_allclose(got, want.loss, rtol=1e-6, atol=1e-7)
    assert set(aux["grpo"]) == set(want.metrics())  # GSPO's bonus: policy_loss, entropy_coef
    for name, value in want.metrics().items():
        np.testing.assert_allclose(aux["grpo"][name], value, rtol=1e-6, atol=1e-7, err_msg=name)
    assert float(aux["num_tokens"]) == float(np.asarray(batch["mask"]).sum())
    # grpo.mask_truncated_completions: the same rollout (its key and prompts), the completions
    # that never reached the end-of-turn token out of the loss.
    cut = dataclasses.replace(cfg.rollout, mask_truncated_completions=True)
    again = Rollouts(dataclasses.replace(cfg, rollout=cut), setup,
                     data_setup.train_loader(bundle, cfg), bundle)  # fmt: skip
    masked, _ = again.batch(0, setup.state)
    np.testing.assert_array_equal(masked["targets"], batch["targets"])
    ended = (np.asarray(batch["targets"]) == rollouts.eos_id).any(axis=1)
    want_mask = np.asarray(batch["mask"]) * ended[:, None]
    np.testing.assert_array_equal(np.asarray(masked["mask"]), want_mask)


def test_an_update_in_micro_batches_is_the_whole_batchs_for_each_loss_type(in_tmp, data_cache):
    """#72: ``optimizer.accumulation_steps`` k ∈ {2, 4} gives the loss, TRL's metrics and every
    parameter's gradient of the unaccumulated step within 1e-6, on a rollout of the loop with
    random advantages and a π_old off the policy (so the clips bite), for bnpo (a token mean
    over each micro-batch's own tokens moved it by ~4e-2; tjx.nn's tests hold every loss type's
    micro-batches to the whole batch's)."""
    import dataclasses

    import trainer.step.data_setup as data_setup
    import trainer.step.state as state
    from trainer.step.grpo import Rollouts
    from trainer.step.train_step import PROBED, make_train_step

    cfg = plan_argv(
        _argv(in_tmp, data_cache, "run", "train.steps=2", "grpo.entropy_coef=0.01")
    ).config
    bundle = data_setup.prepare(cfg)
    cfg = resolve(cfg, bundle.vocab_size)
    setup = state.build(step_config(cfg))
    batch, _ = Rollouts(cfg, setup, data_setup.train_loader(bundle, cfg), bundle).batch(
        0, setup.state
    )
    rng = np.random.default_rng()
    rows, width = batch["mask"].shape
    batch["advantages"] = jnp.asarray(rng.normal(size=rows), jnp.float32)
    noise = jnp.asarray(rng.normal(0, 0.3, (rows, width)), jnp.float32)
    batch["old_logps"] = batch["old_logps"] + noise
    flat = lambda tree: jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])
    probe = lambda params, grads, updates: {"grads": flat(grads)}
    base = setup.step_config

    def step(loss_type: str, level: str, k: int) -> dict:
        grpo = dataclasses.replace(base.grpo, loss_type=loss_type, importance_sampling_level=level)
        optimizer = dataclasses.replace(base.optimizer, accumulation_steps=k)
        sc = dataclasses.replace(base, grpo=grpo, optimizer=optimizer)
        fn = make_train_step(setup.graphdef, setup.rest, setup.tx, sc, probe=probe)
        return jax.jit(fn)(setup.state, batch)[1]

    for loss_type, level, parts in (("bnpo", "token", (2, 4)),):
        whole = step(loss_type, level, 1)
        assert np.any(np.asarray(whole[PROBED + "grads"]) != 0)
        for k in parts:
            got = step(loss_type, level, k)
            assert set(got) == set(whole), (loss_type, k)
            for name in ("loss", "num_tokens", "kl", "entropy", "clip_ratio/region_mean",
                         "clip_ratio/low_min", "clip_ratio/high_max", "policy_loss"):  # fmt: skip
                np.testing.assert_allclose(got[name], whole[name], rtol=1e-6, atol=1e-6,
                                           err_msg=f"{loss_type} k={k} {name}")  # fmt: skip
            np.testing.assert_allclose(got[PROBED + "grads"], whole[PROBED + "grads"], rtol=1e-6,
                                       atol=1e-6, err_msg=f"{loss_type} k={k}")  # fmt: skip


def test_a_grpo_run_in_micro_batches_resumes_bit_for_bit(in_tmp, data_cache, capsys):
    """#72: with ``optimizer.accumulation_steps: 2`` a run stopped at a rollout boundary and
    resumed ends with the uninterrupted run's weights and losses."""
    # 16 completions: 2 micro-batches of 8, one row a device.
    sets = ("train.steps=4", "train.checkpoint_every=2", "optimizer.accumulation_steps=2",
            "data.batch_size=16")  # fmt: skip
    assert main(_argv(in_tmp, data_cache, "whole", *sets)) == 0
    assert main(_argv(in_tmp, data_cache, "parts", *sets, "train.stop_at=2")) == 0
    assert main([*_argv(in_tmp, data_cache, "parts", *sets), "--resume"]) == 0
    capsys.readouterr()
    done = [json.loads((in_tmp / r / "final.json").read_text()) for r in ("whole", "parts")]
    assert done[0]["params_sha256"] == done[1]["params_sha256"]
    lines = [x for x in _metrics(in_tmp / "whole") if "loss" in x]
    again = [x for x in _metrics(in_tmp / "parts") if "loss" in x and x["step"] > 2]
    assert [x["step"] for x in again] == [3, 4]
    for a, b in zip(lines[2:], again, strict=True):
        assert (a["loss"], a["kl"], a["num_tokens"]) == (b["loss"], b["kl"], b["num_tokens"])


def test_group_advantages_of_the_loop_are_group_normalised_rewards():
    from trainer.config.grpo_settings import GrpoRollout
    from trainer.step.grpo import score

    rng = np.random.default_rng()
    answers = [str(int(x)) for x in rng.integers(0, 9, 8)]
    texts = [a if rng.random() < 0.5 else "x" for a in answers]
    examples = [{"answer": a} for a in answers]
    rollout = GrpoRollout(rewards=["exact_answer", "format"], reward_weights=[1.0, 0.5])
    total, each = score(rollout, texts, examples)
    want = np.array(
        [float(t == a) + 0.5 * float(t != "x") for t, a in zip(texts, answers, strict=True)]
    )
    np.testing.assert_allclose(total, want)
    assert set(each) == {"exact_answer", "format"}
    adv = np.asarray(nn.group_advantages(jnp.asarray(total), 4))
    g = want.reshape(2, 4)
    ref = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-4)
    np.testing.assert_allclose(adv, ref.reshape(-1), rtol=1e-5, atol=1e-6)


def test_a_reward_that_fails_on_a_completion_ends_the_run_in_one_line(
    in_tmp, data_cache, capsys, monkeypatch
):
    from tjx import data

    def picky(completion, example):  # passes the probe (the answer itself), fails on the rest
        if completion != example["answer"]:
            raise ValueError("cannot read this completion")
        return 1.0

    monkeypatch.setitem(data.REWARDS, "picky", picky)
    argv = _argv(
        in_tmp,
        data_cache,
        "run",
        "train.steps=2",
        "train.checkpoint_every=2",
        "grpo.rewards=[picky]",
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [x for x in err if not x.startswith("trainer: warning: GRPO (data.format=prompts)")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("trainer: error: grpo.rewards: at step 1: reward 'picky' raised "), err
    assert not (in_tmp / "run" / "checkpoints" / "1").exists()


def test_init_from_run_at_step_starts_from_that_checkpoint_and_a_missing_step_is_one_line(
    in_tmp, data_cache, capsys
):
    from tjx import ckpt
    from trainer.step.init_from import load_run

    # The start: an SFT run of the same model on the same task (so the same ChatML BPE).
    sft = ["--config", "sft_tiny", "--run-dir", str(in_tmp / "start")]
    for item in [*SMALL[:7], "data.source=reverse", f"data.cache_dir={data_cache}",
                 "train.steps=4", "train.checkpoint_every=2", "train.eval_every=0",
                 "optimizer.schedule.warmup_steps=1", "sampling.max_new_tokens=2"]:  # fmt: skip
        sft += ["--set", item]
    assert main(sft) == 0
    start = in_tmp / "start"
    argv = [*_argv(in_tmp, data_cache, "bad", "train.steps=1"), "--init-from", f"{start}@3"]
    assert main(argv) == 2
    line = capsys.readouterr().err.strip().splitlines()
    assert line == [
        f"trainer: error: --init-from: the run {str(start)!r} has no checkpoint of step 3; its "
        "checkpoints are of steps 2, 4"
    ]
    assert not (in_tmp / "bad").exists()  # refused before anything is written
    model_cfg = nn.config_from_dict(json.loads((start / "model.json").read_text()))
    model, step = load_run(0, model_cfg, f"{start}@2")
    got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    steps = {}
    for at in (2, 4):
        steps[at] = ckpt.restore_params_and_step(start / "checkpoints", target=got, step=at)[1]
    assert step == 2
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), got, steps[2])
    moved = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), got, steps[4])
    assert all(jax.tree.leaves(same)) and not all(jax.tree.leaves(moved))
    # The run records where it started: the run's folder and the step, not "RUN@2".
    assert (
        main([*_argv(in_tmp, data_cache, "from2", "train.steps=1"), "--init-from", f"{start}@2"])
        == 0
    )
    init = json.loads((in_tmp / "from2" / "init.json").read_text())
    assert init == {"init_from": str(start.resolve()), "kind": "tjx-run", "step": 2}
