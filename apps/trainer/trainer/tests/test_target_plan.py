"""``--plan TARGET`` without a GPU or TPU package: bad input, the memory fit's decisions, and the
whole report over this machine's CPU devices (the deviceless compiles themselves are
tests-integration's test_plan_deviceless.py, in a scratch environment with the plugins)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from tjx import nn
from tjx.metrics import (
    GIB,
    Compiled,
    Target,
    accelerator,
    deviceless,
    fit_compiled,
    peak_bytes,
    program_cost,
)
from tjx.nn.utils import count_params
from trainer.cli import main
from trainer.config.schema import ConfigError
from trainer.config.settings import apply_overrides, load_config_data
from trainer.config.typed import read_config, resolve, step_config
from trainer.plan import target_plan
from trainer.plan.memory_fit import lighter
from trainer.plan.plan_report import does_not_fit
from trainer.plan.run_plan import output_file
from trainer.step.state import abstract_state

TINY = ["data.batch_size=8", "data.seq_len=32", "model.max_seq_len=32", "model.num_layers=1"]


def run_of(*sets: str, preset: str = "tiny"):
    return resolve(read_config(apply_overrides(load_config_data(preset), [*TINY, *sets])), 257)


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_unknown_target_is_one_line_listing_the_known_ones(capsys, in_tmp):
    assert main(["--config", "tiny", "--plan", "h800"]) == 2
    line = error_line(capsys)
    assert line.startswith("trainer: error: --plan: unknown target 'h800'; known: h100, h200")
    assert "v5e" in line and not list(in_tmp.iterdir())  # nothing written


@pytest.mark.parametrize("text", ["3xh100", "8 x h100"])
def test_a_malformed_count_is_one_line(text: str, capsys, in_tmp):
    assert main(["--config", "tiny", "--plan", text]) == 2
    assert "--plan" in error_line(capsys)


@pytest.mark.parametrize(
    "target,words",
    [
        ("h100", ["jax-cuda12-plugin==", "jax-cuda12-pjrt==", "nvidia-cudnn-cu12"]),
        ("v5e", ["jax[tpu]=="]),
    ],
)
def test_a_missing_package_says_what_to_install(target, words, capsys, in_tmp, monkeypatch):
    monkeypatch.setattr(deviceless, "_find", lambda module: False)
    assert main(["--config", "tiny", "--plan", target]) == 2
    line = error_line(capsys)
    assert "pip install" in line and all(w + jax.__version__ in line or w in line for w in words)


def test_a_plan_is_of_a_fresh_run(capsys, in_tmp):
    assert main(["--config", "tiny", "--plan", "h100", "--resume"]) == 2
    assert "drop --resume" in error_line(capsys)


def fake_compiles(monkeypatch, peaks: dict[tuple[str, int], int | None]) -> list[str]:
    """``compile_train`` answering from ``peaks`` by (remat, accumulation steps); None: refused
    by the compiler for memory, as a TPU's is."""
    seen: list[str] = []

    def compile_train(run, target, label, train=True):
        seen.append(label)
        peak = peaks[(run.model.remat, run.optimizer.accumulation_steps)]
        if peak is None:
            error = "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for "
            error += "HLO temporaries (27.98G) exceeds available HBM (15.75G)"
            return Compiled(label, 1.0, error=error)
        return Compiled(label, 1.0, compiled=object(), peak=peak)

    monkeypatch.setattr(target_plan, "compile_train", compile_train)
    return seen


def target(key: str = "v5e", count: int = 1) -> Target:
    return Target(accelerator(key), count, jax.devices()[:count])


def tries(run):
    """The plan's memory fit's lighter steps of ``run`` on one device (as `plan_report` makes
    them), each compiled by `target_plan.compile_train` when tried."""
    return (
        (r, lambda r=r, c=change: target_plan.compile_train(r, target(), c))
        for r, change in lighter(run, 1)
    )


def test_the_fit_takes_full_remat_when_the_step_is_refused_for_memory(monkeypatch):
    seen = fake_compiles(monkeypatch, {("none", 1): None, ("full", 1): 4 * GIB})
    lines: list[str] = []
    run = step_config(run_of())
    first = target_plan.compile_train(run, target(), "as configured")
    fitted, step, record = fit_compiled(first, tries(run), target().device, lines.append)
    assert fitted.model.remat == "full" and step.peak == 4 * GIB and record["fits"]
    assert seen == ["as configured", "model.remat=full"]
    assert "27.98G of temporaries alone" in lines[0] and lines[0].endswith("does not fit")
    assert lines[1].startswith("memory: with model.remat=full: 4.00 GiB") and "fits" in lines[1]


def test_when_remat_is_not_enough_the_batch_is_split_into_micro_batches(monkeypatch):
    big = 20 * GIB
    peaks = {("none", 1): big, ("full", 1): big, ("full", 2): big, ("full", 4): 10 * GIB}
    seen = fake_compiles(monkeypatch, peaks)
    run = step_config(run_of())
    first = target_plan.compile_train(run, target(), "as configured")
    fitted, _, record = fit_compiled(first, tries(run), target().device, lambda line: None)
    assert record["fits"] and fitted.optimizer.accumulation_steps == 4
    assert fitted.optimizer.accumulation_steps == 4
    assert seen[-1] == "optimizer.accumulation_steps=4"


def test_a_step_that_never_fits_is_an_error_saying_by_how_much(monkeypatch):
    peaks = {("none", m): 40 * GIB for m in (1, 2, 4, 8)}
    peaks |= {("full", m): (20 + m) * GIB for m in (1, 2, 4, 8)}
    fake_compiles(monkeypatch, peaks)
    run = step_config(run_of())
    first = target_plan.compile_train(run, target(), "as configured")
    fitted, step, record = fit_compiled(first, tries(run), target().device, lambda line: None)
    assert not record["fits"] and fitted is None and step is first  # goes on as configured
    message = does_not_fit("v5e", target(), record)
    over = (21 * GIB - accelerator("v5e").memory_bytes) / GIB
    assert f"does not fit by {over:.2f} GiB per device" in message
    assert "--plan 4xv5e --set mesh.strategy=fsdp" in message


def test_a_train_state_past_all_the_targets_devices_ends_the_plan_in_one_line_uncompiled(
    monkeypatch,
):
    """A release's real size on too few devices (DeepSeek-V3's ~8 TB of state on 8 H100s): the
    plan ends before any compile with how many devices the state alone would take."""
    run = run_of()
    model = nnx.eval_shape(lambda: nn.build_model(run.model, rngs=nnx.Rngs(0)))
    param_bytes = 4 * count_params(model)  # float32 parameters
    small = dataclasses.replace(accelerator("v5e"), memory_bytes=param_bytes)  # a TPU: all of it
    tgt = Target(small, 2, jax.devices()[:2])
    monkeypatch.setattr(target_plan, "compile_train", lambda *a, **k: pytest.fail("compiled"))
    result = target_plan.plan(run, tgt, "2xv5e", lambda line: None)
    state = result.data["state_bytes"]
    assert state >= 3 * param_bytes  # the parameters and AdamW's two float32 moments
    need = -(-state // param_bytes)
    assert result.data["devices_needed"] == need > 2
    assert result.error is not None and result.error.startswith("--plan 2xv5e: the train state")
    assert f"it needs at least {need} v5e devices" in result.error
    assert f"--plan {1 << (need - 1).bit_length()}xv5e --set mesh.strategy=fsdp" in result.error
    # A state that fits them all split evenly goes on to the compile (none here: its floor).
    assert target_plan.state_floor(step_config(run), target(), "v5e", run.name) is None


def test_the_vocabulary_is_the_tokenizers_without_preparing_data():
    assert target_plan.plan_vocab(run_of()).model.vocab_size == 257  # byte-level
    gpt2 = read_config(load_config_data("gpt2_small"))
    assert target_plan.plan_vocab(gpt2).model.vocab_size == 50304  # the preset sets it


def test_the_whole_report_on_this_machines_devices(capsys, tmp_path, monkeypatch):
    """The plan's path end to end, compiled by XLA:CPU for 2 devices and estimated against a
    TPU v5e's table (the deviceless part is the integration test's)."""
    lines: list[str] = []
    result = target_plan.plan(run_of(), target("v5e", 2), "2xv5e", say=lines.append)
    assert result.error is None, result.error
    assert lines[0].startswith("plan: tiny on 2 × TPU v5e")
    assert lines[1].startswith("attention: xla (auto: fused kernels are CUDA-only in tjx")
    assert lines[2].startswith("train step: compiles")
    assert any(line.startswith("memory: as configured:") and "fits" in line for line in lines)
    assert any(line.startswith("estimate:") and "an estimate" in line for line in lines)
    assert any("collectives" in line and "all-reduce over 2" in line for line in lines)
    assert lines[-1].startswith("eval step: compiles")
    data = json.loads(json.dumps(result.data, default=str))
    est = data["estimate"]
    assert est["mfu_palm"] > est["mfu"] > 0  # causal attention at half: fewer model FLOPs
    assert est["model_flops"] < est["model_flops_palm"]
    assert data["train"]["remat"] == "none" and data["memory"]["fits"]


def on_this_machine(monkeypatch, key: str = "v5e") -> None:
    """``--plan`` opens this machine's first CPU device as if it were ``key``'s."""
    opened = lambda text, devices, flag="--plan", **_: target(key)
    monkeypatch.setattr(target_plan, "open_target", opened)


def test_the_cli_prints_the_plan_and_writes_its_json(capsys, in_tmp, monkeypatch):
    on_this_machine(monkeypatch)
    sets = [x for s in TINY for x in ("--set", s)]
    out = in_tmp / "plan.json"
    assert main(["--config", "tiny", *sets, "--plan", "v5e", "--plan-json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("plan: tiny on 1 × TPU v5e")
    assert any("launch overhead" in line for line in lines)  # a tiny step: launch-bound
    data = json.loads(out.read_text())
    assert data["train"]["compiles"] and data["estimate"]["launches"] > 0
    assert sorted(p.name for p in in_tmp.iterdir()) == ["plan.json"]  # no run directory


@pytest.mark.parametrize(
    "where,words",
    [
        ("no/such/plan.json", "--plan-json: the folder 'no/such' of 'no/such/plan.json' does not "
         "exist; create it or choose another path"),
        ("out", "--plan-json: 'out' names a folder; name a file in it, e.g. 'out/plan.json'"),
        ("out/", "--plan-json: 'out/' names a folder; name a file in it, e.g. 'out/plan.json'"),
        ("f/plan.json", "--plan-json: the folder 'f' of 'f/plan.json' is a file, not a folder; "
         "create it or choose another path"),
    ],
)  # fmt: skip
def test_a_plan_json_that_cannot_be_written_is_refused_before_the_plan(
    where, words, capsys, in_tmp, monkeypatch
):
    """It was a traceback after the whole plan (#71): now one line before anything compiles,
    and nothing created."""
    on_this_machine(monkeypatch)
    planned = []
    monkeypatch.setattr(target_plan, "plan", lambda *a: planned.append(a))
    (in_tmp / "out").mkdir()
    (in_tmp / "f").write_text("a file")
    assert main(["--config", "tiny", "--plan", "v5e", "--plan-json", where]) == 2
    assert error_line(capsys) == f"trainer: error: {words}"
    assert planned == [] and sorted(p.name for p in in_tmp.iterdir()) == ["f", "out"]
    assert not list((in_tmp / "out").iterdir())


def test_an_existing_report_file_is_checked_without_being_touched(in_tmp):
    old = in_tmp / "plan.json"
    old.write_text("{}\n")
    stamp = old.stat().st_mtime_ns
    assert output_file("plan.json", "--plan-json", "plan.json") == Path("plan.json")
    assert old.read_text() == "{}\n" and old.stat().st_mtime_ns == stamp
    assert output_file("new.json", "--plan-json", "plan.json") == Path("new.json")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["plan.json"]  # nothing made early


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--plan-json", "p.json"], "--plan-json: writes the figures of --plan TARGET, which this "
         "command does not ask for; add --plan TARGET or drop --plan-json"),
        (["--plan", "v5e", "--search-out", "b.yaml"], "--search-out: applies to --plan TARGET "
         "--search, which this command does not ask for; add --search or drop --search-out"),
        (["--search-budget", "3"], "--search-budget: applies to --plan TARGET --search"),
    ],
)  # fmt: skip
def test_a_plan_flag_without_its_plan_is_refused_not_ignored(flags, words, capsys, in_tmp):
    """Without --plan (or --search) the command would train, and write no such file."""
    assert main(["--config", "tiny", "--run-dir", "r", *flags]) == 2
    assert error_line(capsys).startswith(f"trainer: error: {words}")
    assert not list(in_tmp.iterdir())


def test_a_plan_of_an_init_from_start_compiles_the_checkpoints_architecture(
    capsys, in_tmp, monkeypatch
):
    """``--plan --init-from FOLDER``: the model is the checkpoint's (here a Qwen3 of another
    width, depth, vocabulary and q/k norms than the preset's), how it trains the config's."""
    folder = in_tmp / "qwen3"
    shape = dict(vocab_size=40, d_model=24, num_layers=3, num_heads=2, num_kv_heads=1, head_dim=12)
    nn.save_hf(
        nn.build_model(
            nn.LlamaConfig(
                **shape, mlp=nn.MLPConfig(dim=32), attention=nn.AttentionConfig(qk_norm=True)
            ),
            rngs=nnx.Rngs(0),
        ),
        folder,
    )
    on_this_machine(monkeypatch)
    planned = []
    plan = target_plan.plan
    monkeypatch.setattr(
        target_plan, "plan", lambda run, *a: planned.append(run.model) or plan(run, *a)
    )
    sets = [x for s in TINY for x in ("--set", s)]
    argv = ["--config", "tiny", "--set", "model.kind=llama", *sets, "--set", "model.remat=full"]
    assert main([*argv, "--plan", "v5e", "--init-from", str(folder)]) == 0
    assert "train step: compiles" in capsys.readouterr().out
    (model,) = planned
    assert {k: getattr(model, k) for k in shape} == shape and model.attention.qk_norm
    assert model.remat == "full"  # how it trains: the config's
    # A family other than model.kind is refused as a run refuses it, in one line.
    assert main(["--config", "tiny", *sets, "--plan", "v5e", "--init-from", str(folder)]) == 2
    assert "model.kind must be 'llama'" in error_line(capsys)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["qwen3"]  # no run directory


def test_a_named_kernel_the_target_cannot_run_is_one_line(capsys, in_tmp, monkeypatch):
    on_this_machine(monkeypatch)
    sets = [x for s in TINY for x in ("--set", s)]
    argv = ["--config", "tiny", *sets, "--set", "model.attention_impl=pallas", "--plan", "v5e"]
    assert main(argv) == 2
    line = error_line(capsys)
    assert line.startswith("trainer: error: --plan: attention: pallas failed") and "TPU" in line


def test_plan_here_estimates_this_machines_devices_against_a_named_entry():
    found = target_plan.plan_here(run_of(), device="v5e")
    assert found["error"] is None and found["device"] == "v5e" and found["estimate"]["seconds"]
    with pytest.raises(ConfigError, match="no entry for"):
        target_plan.plan_here(run_of())  # a CPU is in no device table


def test_a_split_plan_holds_each_devices_share_of_the_activations():
    """Under mesh.context=4 the plan's peak per device grows with the sequence by about a quarter
    of what one unsplit device's grows (the state is the same at both lengths), its attention
    line names the block kernel, and the ring's collective-permutes are priced.

    Weights replicated (strategy dp): with ZeRO weights XLA:CPU's partitioner gathers some
    activations of these tiny shapes (plain FSDP too); the H100 compile of ``llama_32k`` keeps
    them split (README, "Long context")."""

    def growth(ways: int) -> tuple[int, list[str]]:
        peaks, lines = [], []
        for seq in (128, 256):
            run = run_of(
                *(f"data.seq_len={seq}", f"model.max_seq_len={seq}", "model.d_model=64"),
                *("mesh.data=1", "mesh.strategy=dp", f"mesh.context={ways}"),
            )
            lines = []
            result = target_plan.plan(run, target("v5e", ways), f"{ways}xv5e", say=lines.append)
            assert result.error is None, result.error
            peaks.append(result.data["train"]["peak_bytes"])
        return peaks[1] - peaks[0], lines

    whole, _ = growth(1)
    split, lines = growth(4)
    assert 0 < split <= 0.35 * whole, (split, whole)
    assert lines[1] == (
        "attention: xla blocks, ring across mesh.context=4 (model.attention_impl=auto; cuDNN "
        "has no split forward and backward)"
    )
    assert any("collective-permute over 4" in line for line in lines), lines


def test_fp8_is_refused_in_one_line_where_the_device_has_no_float8_units():
    fp8 = run_of("model.precision.matmul=fp8").model
    for key in ("a100-40gb", "v5e"):
        with pytest.raises(ConfigError, match=f"fp8: {key} has no float8 matrix units"):
            target_plan.check_fp8(fp8.precision, accelerator(key))
    target_plan.check_fp8(fp8.precision, accelerator("h100"))  # Hopper has them
    target_plan.check_fp8(fp8.precision, jax.devices()[0])  # a CPU emulates them (tests)
    target_plan.check_fp8(run_of().model.precision, accelerator("a100-40gb"))  # bf16 runs anywhere


GRPO_SMALL = ["model.d_model=32", "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1",
              "model.mlp.dim=64", "data.batch_size=8", "grpo.group_size=4",
              "grpo.max_new_tokens=4", "grpo.iterations=2", "grpo.beta=0.1"]  # fmt: skip


def test_a_grpo_plan_compiles_its_update_and_its_rollout_programs():
    """GRPO's update is planned on the rollout batch the loop makes (with π_old's and the
    reference's log-probabilities: μ = 2, β > 0), and the rollout's prefill and decode step are
    compiled in place of an eval step, each with its memory."""
    run = resolve(read_config(apply_overrides(load_config_data("grpo_tiny"), GRPO_SMALL)), 300)
    lines: list[str] = []
    result = target_plan.plan(run, target("v5e", 2), "2xv5e", say=lines.append)
    assert result.error is None, result.error
    assert any(line.startswith("train step: compiles") for line in lines)
    assert not any(line.startswith("eval step") for line in lines)
    prefill, decode, scored = lines[-6:-3]  # then the rollout's estimate (three lines)
    assert scored.startswith("rollout log-probabilities (8 × 35 tokens): compiles in "), scored
    assert lines[-1].startswith("rl step (estimate): ")
    assert prefill.startswith("rollout prefill (8 × 32 prompt tokens): compiles in "), prefill
    assert decode.startswith("rollout decode step (8 rows, a cache of 36): compiles in "), decode
    programs = result.data["programs"]
    assert len(programs) == 3 and all(
        p["compiles"] and p["peak_bytes"] > 0 for p in programs.values()
    )


def test_the_rollout_estimate_is_the_prefill_plus_each_decode_step_and_grows_with_new_tokens(
    monkeypatch,
):
    """#72: an RL plan's rollout is its prefill plus ``max_new_tokens - 1`` decode steps (the
    prefill samples the first token) plus its log-probability passes (π_old's, the
    reference's), each priced by tjx-metrics from the same compiled programs (here by hand),
    beside μ updates; a longer completion budget is a longer rollout
    (more steps, each over a longer cache)."""
    from tjx.metrics import program_cost
    from tjx.metrics.accelerators import accelerator as device_entry

    kept: list = []
    compile_rollout = target_plan.compile_rollout
    monkeypatch.setattr(
        target_plan, "compile_rollout", lambda *a: kept.append(compile_rollout(*a)) or kept[-1]
    )
    found = {}
    for new in (2, 6):
        sets = [*GRPO_SMALL, f"grpo.max_new_tokens={new}"]
        run = resolve(read_config(apply_overrides(load_config_data("grpo_tiny"), sets)), 300)
        lines: list[str] = []
        result = target_plan.plan(run, target("v5e", 2), "2xv5e", say=lines.append)
        assert result.error is None, result.error
        rollout = result.data["rollout"]
        (_, prefill), (_, decode), (scored_label, scored) = kept[-1]
        assert scored_label == f"rollout log-probabilities (8 × {32 + new - 1} tokens)"
        v5e = device_entry("v5e")
        cost = target_plan.roofline_inputs(run.model, 32, 8, 1, v5e)["custom_call_cost"]
        by_hand = [program_cost(c.compiled.as_text(), v5e, custom_call_cost=cost)
                   for c in (prefill, decode, scored)]  # fmt: skip
        # μ = 2 and β > 0: π_old's and the reference's log-probabilities, a pass each
        expected = by_hand[0].seconds + (new - 1) * by_hand[1].seconds + 2 * by_hand[2].seconds
        assert rollout["logps_passes"] == 2
        assert rollout["seconds"] == pytest.approx(expected, rel=1e-12)
        assert rollout["decode_steps"] == new - 1 and rollout["cache"] == 32 + new
        update = result.data["estimate"]["seconds"]
        assert rollout["step_s"] == pytest.approx(expected + 2 * update, rel=1e-12)  # μ = 2
        assert rollout["samples_per_s"] == pytest.approx(8 / (expected + 2 * update))
        assert 0 < rollout["rollout_share"] < 1
        said = [line for line in lines if line.startswith(("rollout (", "rl step ("))]
        assert said[0].startswith(
            "rollout (estimate): 8 completions (2 prompts × group 4) of 32 prompt tokens: "
            f"prefill {by_hand[0].seconds * 1e3:,.2f} ms + {new - 1} decode steps × "
        ), said
        assert said[1].startswith("rl step (estimate): the rollout ") and "samples/s" in said[1]
        found[new] = (rollout["seconds"], by_hand[1].seconds)
    assert found[6][0] > found[2][0]
    assert found[6][1] >= found[2][1]  # a decode step over a longer cache costs no less


def test_an_overlapped_plan_is_the_longer_side_plus_the_copy_and_each_side_holds_its_own(
    monkeypatch,
):
    """#72 point 4: ``grpo.overlap: 1`` on 1 of 2 devices. The rollout's programs are compiled
    for the sampler's device (the policy replicated, the whole batch: 8 rows), the prefill and
    decode step those that score each sampled token (π_old from the decode, ``grpo.old_logps:
    auto``: no π_old pass); the step is, by hand from the same programs' costs, max(rollout,
    update) + the other μ - 1 updates + the reference's pass (β > 0) + the policy's bytes over
    one link. Memory:
    the sequential rollout's devices keep the optimizer state (Adam's two moments: at least
    twice the policy on top of the program), the sampler's hold the policy only."""
    kept: list = []
    compile_rollout = target_plan.compile_rollout
    monkeypatch.setattr(
        target_plan, "compile_rollout", lambda *a: kept.append(compile_rollout(*a)) or kept[-1]
    )
    peaks = {}
    for overlap in (0, 1):
        sets = [*GRPO_SMALL, f"grpo.overlap={overlap}", f"grpo.sampler_devices={overlap}"]
        run = resolve(read_config(apply_overrides(load_config_data("grpo_tiny"), sets)), 300)
        lines: list[str] = []
        result = target_plan.plan(run, target("v5e", 2), "2xv5e", say=lines.append)
        assert result.error is None, result.error
        params = abstract_state(step_config(run)).state.params
        policy = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
        (_, prefill), (_, decode), (_, scored) = kept[-1]
        # Above the program's own peak (XLA's memory analysis): what its devices keep besides
        peaks[overlap] = (prefill.peak - peak_bytes(prefill.compiled)["peak"], policy)
        if not overlap:
            assert "optimizer state the devices keep" in (prefill.note or "")
            continue
        r = result.data["rollout"]
        v5e = accelerator("v5e")
        cost = target_plan.roofline_inputs(run.model, 32, 8, 1, v5e)["custom_call_cost"]
        p, d, s = (program_cost(c.compiled.as_text(), v5e, custom_call_cost=cost).seconds
                   for c in (prefill, decode, scored))  # fmt: skip
        rollout = p + 3 * d  # π_old from the decode: no pass of its own
        update = result.data["estimate"]["seconds"]
        copy = policy / v5e.link_bandwidth
        assert r["policy_bytes"] == policy and r["copy_s"] == pytest.approx(copy, rel=1e-12)
        assert (r["sampler_devices"], r["logps_passes"], r["trainer_passes"]) == (1, 0, 1)
        assert r["old_logps_from_decode"]
        # The programs priced return each row's token and its float32 log-probability
        for program in (prefill, decode):
            out = jax.tree.leaves(program.compiled.out_info)[-2:]
            assert [(x.shape, x.dtype) for x in out] == [((8,), jnp.int32), ((8,), jnp.float32)]
        assert r["seconds"] == pytest.approx(rollout, rel=1e-12)
        by_hand = max(rollout, update) + update + s + copy  # μ = 2, β > 0
        assert r["step_s"] == pytest.approx(by_hand, rel=1e-12)
        assert r["sequential_s"] == pytest.approx(rollout + 2 * update, rel=1e-12)
        assert lines[-1].startswith("rl step (estimate), overlapped: the rollout on 1 sampler "
                                    "devices, the update on the others: max(rollout ")  # fmt: skip
        placed = jax.tree.leaves(prefill.compiled.input_shardings)
        assert {d for x in placed for d in x.device_set} == {jax.devices()[1]}  # the last
    kept_beside, policy = peaks[0]
    assert kept_beside >= 2 * policy  # Adam's two moments, per device (replicated: data=2)
    assert peaks[1][0] == 0  # the sampler: the policy (the program's argument), nothing else


def test_an_overlapped_plan_splits_the_rollouts_rows_over_the_sampler_devices():
    """#72: ``grpo.sampler_devices: 2`` of 4 devices: the rollout's programs are compiled as the
    run's sampler runs them (trainer.step.grpo's `Rollouts.on_sampler`): the policy replicated
    on the last 2 devices, the 8 rows of the prompts, the KV cache (its axis 1, after the
    layers) and the scored batch (the reference's pass, β > 0, priced as the sampler's) split
    over them (4 each), so each program is priced for its share of the rows."""
    sets = [*GRPO_SMALL, "grpo.overlap=1", "grpo.sampler_devices=2"]
    run = resolve(read_config(apply_overrides(load_config_data("grpo_tiny"), sets)), 300)
    programs = target_plan.compile_rollout(step_config(run), target("v5e", 4))
    assert [label.split(" (")[0] for label, _ in programs] == [
        "rollout prefill", "rollout decode step", "rollout log-probabilities"]  # fmt: skip
    sampler = set(jax.devices()[2:4])
    for label, one in programs:
        assert one.compiled is not None, (label, one.error)
        args = jax.tree.leaves(one.compiled.input_shardings[0])
        assert {d for x in args for d in x.device_set} == sampler, label
        split = [x for x in args if x.spec and x.spec[0] == "sampler"]
        assert split, label  # the rows of the prompts (the tokens), the batch
        assert all(x.shard_shape((8, 36))[0] == 4 for x in split), label
        cache = [x for x in args if len(x.spec) > 1 and x.spec[1] == "sampler"]
        assert bool(cache) == (label != programs[2][0]), label  # [layers, rows, ...]
        assert all(x.shard_shape((1, 8, 36))[1] == 4 for x in cache), label
        replicated = [x for x in args if x.is_fully_replicated]
        assert len(replicated) > len(split), label  # the policy's weights, each whole


def test_a_grpo_plans_memory_fit_splits_the_update_into_micro_batches(monkeypatch):
    """#72: GRPO's update accumulates exactly, so the fit of a step that does not fit tries
    full remat, then 2 and 4 micro-batches (8 rows over the 2 devices' batch ways: 8 would
    leave one row for two); with the entropy mask (the whole batch's quantile, which the
    trainer refuses to split) full remat only."""
    peaks = {("none", 1): None, ("full", 1): None, ("full", 2): None, ("full", 4): None}
    seen = fake_compiles(monkeypatch, peaks)
    monkeypatch.setattr(target_plan, "compile_rollout", lambda run, tgt, cache=None: [])
    run = resolve(read_config(apply_overrides(load_config_data("grpo_tiny"), GRPO_SMALL)), 300)
    result = target_plan.plan(run, target("v5e", 2), "2xv5e", say=lambda line: None)
    assert seen[-3:] == ["model.remat=full", "optimizer.accumulation_steps=2",
                         "optimizer.accumulation_steps=4"], seen  # fmt: skip
    assert result.error is not None and "optimizer.accumulation_steps=4" in result.error
    seen.clear()
    masked = apply_overrides(load_config_data("grpo_tiny"),
                             [*GRPO_SMALL, "grpo.top_entropy_quantile=0.2"])  # fmt: skip
    result = target_plan.plan(resolve(read_config(masked), 300), target("v5e", 2), "2xv5e",
                              say=lambda line: None)  # fmt: skip
    assert seen[-1] == "model.remat=full" and not any("accumulation" in s for s in seen), seen
    assert result.error is not None and "the train step does not fit" in result.error


def test_grpo_micro_batches_with_the_entropy_mask_are_one_line():
    """The entropy mask's quantile is the whole rollout batch's: with micro-batches, refused
    naming both settings (without the mask, micro-batches load)."""
    sets = [*GRPO_SMALL, "optimizer.accumulation_steps=2"]
    data = apply_overrides(load_config_data("grpo_tiny"), sets)
    assert resolve(read_config(data), 300).optimizer.accumulation_steps == 2
    masked = apply_overrides(
        load_config_data("grpo_tiny"), [*sets, "grpo.top_entropy_quantile=0.2"]
    )
    with pytest.raises(ConfigError) as err:
        resolve(read_config(masked), 300)
    assert str(err.value) == (
        "optimizer.accumulation_steps: 2 micro-batches cannot take grpo.top_entropy_quantile=0.2's "
        "entropy quantile of the whole rollout batch; set optimizer.accumulation_steps=1 or "
        "grpo.top_entropy_quantile=1"
    )


def test_a_rollout_program_past_the_devices_memory_is_the_plans_error():
    from trainer.plan.plan_report import PlanResult, _programs

    result, lines = PlanResult("v5e", "grpo_tiny"), []
    huge = Compiled("rollout decode step", 1.0, compiled=object(), peak=1000 * GIB)
    _programs(result, [("rollout decode step", huge)], target("v5e"), "v5e", "--plan", lines.append)
    assert result.error is not None and result.error.startswith(
        "--plan v5e: the rollout decode step needs 1000.00 GiB per device, more than the "
    )
    assert result.error.endswith("lower data.batch_size or grpo.max_new_tokens")
