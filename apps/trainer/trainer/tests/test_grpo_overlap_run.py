"""GRPO's rollouts overlapped with the update (``grpo.overlap``, issue #72): without it a run is
today's bit for bit; with it the rollout of step t+1 is sampled with step t's weights on the
sampler's devices (``grpo.sampler_devices``) while step t's update runs on the others, and the
run's losses are those of a reference that applies the same one-step lag sequentially on one
mesh; a resume at a checkpoint continues as the uninterrupted run does."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trainer.cli import main, plan_argv
from trainer.config.schema import ConfigError
from trainer.config.typed import resolve
from trainer.step import init_from
from trainer.tests.test_grpo_run import SMALL

#: Rewards that differ inside a group from random weights (the ``length`` reward of 16 new BPE
#: tokens: some exceed its 16 characters), so advantages and losses are not all 0; μ = 1: every
#: step's rollout after the first may lag.
VARIED = ("grpo.iterations=1", "grpo.rewards=[length]", "grpo.max_new_tokens=16")
#: Sampler on the last 4 of the 8 simulated devices, the trainer's mesh on the first 4.
OVERLAP = ("grpo.overlap=1", "grpo.sampler_devices=4")


def _argv(tmp, cache, run, *sets):
    """The command line of a run in ``tmp`` (``cache``: the session's data cache)."""
    argv = ["--config", "grpo_tiny", "--run-dir", str(tmp / run)]
    for item in [*SMALL, f"data.cache_dir={cache}", *VARIED, *sets]:
        argv += ["--set", item]
    return argv


def _lines(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [x for x in rows if "loss" in x]


def _sha(run):
    return json.loads((run / "final.json").read_text())["params_sha256"]


#: The loss and reward curve of this 3-step run, recorded on the code before grpo.overlap existed
#: (commit 11a4b1d, jax 0.10.2, 8 simulated devices): overlap 0 must keep it bit for bit. XLA
#: compiles for the host CPU's features, so the same code's final parameters differ in their last
#: bits between CI machines (the losses do not): they are held to `TODAY_PROJECTIONS`, eight fixed
#: random projections of every parameter (float64, `_projections`) of 11a4b1d's run, recorded on
#: an AMD EPYC with AVX-512 (2026-12-01). Measured there: the same code compiled for another
#: instruction set (``--xla_cpu_max_isa=AVX``, other parameter hashes, the same losses) moves them
#: by 3e-8 at most; ``optimizer.schedule.peak_lr`` 1 % higher moves them by 2.4e-4. ATOL sits
#: between (the hashes of the CPUs CI had run on were each CPU's own: c7d80102…, 2e143eb6…,
#: ff548afa…).
TODAY = [
    (1, 0.007250192575156689, 0.625),
    (2, 4.0978193283081055e-08, 0.7734375),
    (3, 2.9802322387695312e-08, 0.6484375),
]
TODAY_PROJECTIONS = [
    2.17319970383452,
    -14.409714953891646,
    -5.659232150856565,
    9.132727771887303,
    -2.415056665928044,
    0.05620385971617026,
    -9.316179862651259,
    2.053460486469146,
]
ATOL = 1e-6


def _projections(run, argv):
    """Eight projections of the final parameters of ``run`` (planned by ``argv``) on fixed
    Gaussian directions (seed 0): every leaf, in path order, as one float64 vector."""
    vocab = json.loads((run / "data.json").read_text())["vocab_size"]
    cfg = resolve(plan_argv(argv).config, vocab)
    params, _ = init_from.load_run(cfg.train.seed, cfg.model, str(run))
    leaves = sorted(
        jax.tree_util.tree_leaves_with_path(params), key=lambda t: jax.tree_util.keystr(t[0])
    )
    flat = np.concatenate([np.asarray(x, np.float64).ravel() for _, x in leaves])
    return np.random.default_rng(0).standard_normal((8, flat.size)) @ flat


def test_without_overlap_a_run_is_todays_bit_for_bit(in_tmp, data_cache):
    sets = ("train.steps=3", "train.checkpoint_every=1000", "grpo.overlap=0")
    assert main(_argv(in_tmp, data_cache, "run", *sets)) == 0
    got = [(x["step"], x["loss"], x["reward"]) for x in _lines(in_tmp / "run")]
    assert got == TODAY
    planned = _argv(in_tmp, data_cache, "plan", *sets)  # the run's settings, another folder
    np.testing.assert_allclose(
        _projections(in_tmp / "run", planned), TODAY_PROJECTIONS, rtol=0, atol=ATOL
    )


def _lagged_reference(monkeypatch, every):
    """Sequential rollouts on the trainer's mesh (the overlap run's first 4 devices, the sampler
    unused), each sampled with a copy of the weights of the step before, kept there, its
    ``old_logps`` taken as the run takes them (``grpo.old_logps: auto``, overlapped: the
    decode's, as it sampled); fresh at the run's first step and at each multiple of ``every``
    (train.checkpoint_every): the lag grpo.overlap=1 applies, with nothing running at once."""
    from trainer.step.grpo import Rollouts

    kept = {}

    def batch(self, step, state):
        self.sampler = None  # sample where the update runs, with the trainer-mesh programs
        params = state.param_tree()
        before = kept.pop(step - 1, None)
        kept[step] = jax.tree.map(jnp.copy, params)  # the update donates the state's buffers
        weights = params if before is None or step % every == 0 else before
        out, stats = self._sample(step, weights)
        assert out["old_logps"] is not None  # the decode's (`Rollouts._sample`)
        out["ref_logps"] = self._ref_logps(state, out)  # SMALL's β = 0.1
        return out, stats

    monkeypatch.setattr(Rollouts, "batch", batch)


def _spy_on_the_sampler(monkeypatch):
    """Record the shardings of the rows the rollout's programs read: the prompts of each
    prefill, the tokens and the cache of each decode step (tjx.nn's generation) and π_old's
    batch (trainer.step.grpo's `_logps_fn`)."""
    from tjx.nn import generation
    from trainer.step import grpo

    seen = []  # (program, its rows' and its cache's (shape, sharding)): the cache is donated

    def laid(arrays):
        return [(x.shape, x.sharding) for x in arrays]

    prefill, decode, logps_fn = generation._prefill, generation._decode, grpo._logps_fn

    def spy_prefill(graphdef, state, prompts, lengths, cache, *rest, **kw):
        seen.append(("prefill", laid([prompts, lengths]), laid(jax.tree.leaves(cache))))
        return prefill(graphdef, state, prompts, lengths, cache, *rest, **kw)

    def spy_decode(graphdef, state, tokens, pos, cache, *rest, **kw):
        seen.append(("decode", laid([tokens, pos]), laid(jax.tree.leaves(cache))))
        return decode(graphdef, state, tokens, pos, cache, *rest, **kw)

    def spy_logps_fn(*args):
        fn = logps_fn(*args)

        def scored(params, batch, adapters_off):
            seen.append(("logps", laid(jax.tree.leaves(batch)), []))
            return fn(params, batch, adapters_off)

        return scored

    monkeypatch.setattr(generation, "_prefill", spy_prefill)
    monkeypatch.setattr(generation, "_decode", spy_decode)
    monkeypatch.setattr(grpo, "_logps_fn", spy_logps_fn)
    return seen


def test_overlap_trains_as_the_sequential_lag_and_resumes_bit_for_bit(
    in_tmp, data_cache, monkeypatch, capsys
):
    # A large step size: one step moves the policy enough that the lag shows (clipped ratios).
    sets = ("train.steps=4", "train.checkpoint_every=2", "optimizer.schedule.peak_lr=0.01")
    with monkeypatch.context() as spied:
        seen = _spy_on_the_sampler(spied)
        assert main(_argv(in_tmp, data_cache, "whole", *sets, *OVERLAP)) == 0
    # The sampler's 4 devices split the rollout's rows (data.batch_size = 8: 2 per device):
    # every program of the rollout reads its rows sharded over all 4 (none idles). π_old's
    # log-probabilities are the decode's (grpo.old_logps: auto): no pass of its own there (the
    # reference's, β > 0, is scored on the trainer's 4 devices).
    sampler = set(jax.devices()[4:])
    on_sampler = [call for call in seen if call[1][0][1].device_set & sampler]
    assert {call[0] for call in on_sampler} == {"prefill", "decode"}, seen
    assert {call[0] for call in seen} - {call[0] for call in on_sampler} <= {"logps"}
    for kind, rows, cache in on_sampler:
        # the prompts and lengths, each step's tokens and positions, π_old's batch: axis 0;
        # the KV cache's leaves ([layers, rows, ...]): axis 1
        assert all(shape[0] == 8 for shape, _ in rows) and all(sh[1] == 8 for sh, _ in cache)
        for axis, arrays in ((0, rows), (1, cache)):
            for shape, sharding in arrays:
                assert sharding.device_set == sampler, (kind, shape)
                assert sharding.shard_shape(shape)[axis] == 2, (kind, shape, sharding)
        assert cache, kind
    out = capsys.readouterr().out
    # The trainer's mesh: the first 4 devices; the sampler: the other 4.
    assert "× data 4 ×" in out and ", rollouts on the other 4 (dp, 8 devices)" in out, out
    lines = _lines(in_tmp / "whole")
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert all(np.isfinite(x["loss"]) for x in lines)
    assert all("reward" in x and "rewards/length/mean" in x for x in lines)
    # Step 4 samples with step 3's weights: its ratios are not 1, and some are clipped.
    assert lines[3]["clip_ratio/region_mean"] > 0
    # Stopped at the checkpoint of step 2 and resumed: the rollout of step 2 is resampled from
    # the saved weights, as the uninterrupted run sampled it (a checkpoint's step never lags).
    assert main(_argv(in_tmp, data_cache, "parts", *sets, *OVERLAP, "train.stop_at=2")) == 0
    assert main([*_argv(in_tmp, data_cache, "parts", *sets, *OVERLAP), "--resume"]) == 0
    assert _sha(in_tmp / "whole") == _sha(in_tmp / "parts")
    again = [x for x in _lines(in_tmp / "parts") if x["step"] > 2]
    assert [(x["loss"], x["reward"]) for x in again] == [
        (x["loss"], x["reward"]) for x in lines[2:]
    ]
    # --replay samples the rollouts again with the same lag (step 4's with step 3's weights).
    capsys.readouterr()
    assert main(["--replay", str(in_tmp / "whole"), "--steps", "3:4"]) == 0
    assert "faithful: 2 logged losses replayed bit for bit" in capsys.readouterr().out
    # The reference: the same lag (steps 2 and 4 sample with the weights of steps 1 and 3),
    # sequential, on the trainer's 4 devices, π_old from its decode; the same keys and prompts,
    # so the same tokens: the same rewards and clipped fractions. The losses are not
    # bit-identical: the sampler's programs (its own mesh, the weights copied there) and the
    # trainer mesh's are other compiled programs and may score the log-probabilities in other
    # orders, and a loss of ~1e-4 is a sum of ratio × advantage terms near 1, so float32's
    # rounding of those (~1e-7 each) shows: atol 1e-6 (measured up to 5e-8 with the whole
    # batch on each sampler device; without the lag, step 4's loss is 8e-4 against 8e-5).
    _lagged_reference(monkeypatch, every=2)
    assert main(_argv(in_tmp, data_cache, "reference", *sets, *OVERLAP)) == 0
    want = _lines(in_tmp / "reference")
    for key in ("reward", "clip_ratio/region_mean"):
        assert [x[key] for x in lines] == [x[key] for x in want], key
    got, ref = [x["loss"] for x in lines], [x["loss"] for x in want]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_overlap_needs_a_trainer_and_a_sampler_device():
    from trainer.step.state import trainer_devices

    devices = jax.devices()
    with pytest.raises(ConfigError, match=r"grpo.overlap: 1 samples and trains on devices of "):
        trainer_devices(1, devices[:1])
    with pytest.raises(ConfigError, match=r"grpo.sampler_devices: 8 of the run's 8 devices"):
        trainer_devices(8, devices)
    assert trainer_devices(3, devices) == devices[:5]


def test_the_overlap_estimate_is_the_longer_side_plus_the_copy():
    from trainer.step.grpo import overlap_estimate

    rng = np.random.default_rng()
    rollout, update, copy = rng.uniform(0.01, 1.0, 3)
    est = overlap_estimate(rollout, update, copy)
    assert est.sequential_s == pytest.approx(rollout + update, rel=1e-12)
    assert est.overlapped_s == pytest.approx(max(rollout, update) + copy, rel=1e-12)
    assert est.speedup == pytest.approx((rollout + update) / (max(rollout, update) + copy))


def test_a_split_into_3_sampler_and_5_trainer_devices_trains(
    in_tmp, data_cache, monkeypatch, capsys
):
    """Neither side a power of two: the trainer's mesh is data parallel over the first 5
    devices, the sampler splits the rollout's rows over the other 3 (15 completions: 5 prompts
    × 3, 3 rows each on the trainer's devices, 5 on the sampler's; the held-out batch 5 rows,
    which 5 trainers split); two steps, the second sampled with the first's weights while its
    update runs. ``grpo.old_logps: recompute``: π_old's pass runs on the sampler, its rows
    split as the decode's."""
    sets = ("train.steps=2", "train.checkpoint_every=1000", "data.batch_size=15",
            "eval.batch_size=5", "grpo.group_size=3", "grpo.overlap=1",
            "grpo.sampler_devices=3", "grpo.old_logps=recompute")  # fmt: skip
    with monkeypatch.context() as spied:
        seen = _spy_on_the_sampler(spied)
        assert main(_argv(in_tmp, data_cache, "run", *sets)) == 0
    out = capsys.readouterr().out
    assert "× data 5 ×" in out and ", rollouts on the other 3 (dp, 8 devices)" in out, out
    sampler = set(jax.devices()[5:])
    # Both rollouts' decode steps (up to 15 each: 16 new tokens) on the sampler, 5 rows a device
    decodes = [rows for kind, rows, _ in seen if kind == "decode" and rows[0][1].device_set
               & sampler]  # fmt: skip
    assert 2 <= len(decodes) <= 2 * 15
    assert all(sh.device_set == sampler and sh.shard_shape(shape)[0] == 5
               for rows in decodes for shape, sh in rows)  # fmt: skip
    passes = [rows for kind, rows, _ in seen if kind == "logps" and rows[0][1].device_set
              & sampler]  # fmt: skip
    assert len(passes) == 2 and all(sh.shard_shape(shape)[0] == 5 for rows in passes
                                    for shape, sh in rows)  # fmt: skip
    lines = _lines(in_tmp / "run")
    assert [x["step"] for x in lines] == [1, 2]
    assert all(np.isfinite(x["loss"]) for x in lines)
