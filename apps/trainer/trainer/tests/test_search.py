"""``--plan TARGET --search`` (#57): the candidates, what is pruned before compiling, the climb to
the fastest that fits, the winner's file and the command line's bad input.

One case compiles (XLA:CPU over 2 of this machine's devices, estimated against a TPU v5e's table
shrunk so that only a sharded state fits): it plans one candidate and then the written YAML. The
others plan with a stand-in for `engine.evaluate` whose peaks and step times are given, so that
the best answer is known and the search must find it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import jax
import pytest

from tjx.metrics import GIB, CompileFindings, Target, accelerator
from trainer.cli import main
from trainer.config.settings import apply_overrides, load_config, load_config_data
from trainer.config.typed import read_config, resolve
from trainer.plan import search as search_cli
from trainer.plan import target_plan
from trainer.plan.search import candidates, engine, rl, table, write_winner
from trainer.plan.search.candidates import Candidate, MeshChoice, Space, apply, describe
from trainer.plan.search.engine import Outcome, search
from trainer.step.state import make_mesh

TINY = ["data.batch_size=8", "data.seq_len=32", "model.max_seq_len=32", "model.num_layers=1"]


def run_of(*sets: str):
    return resolve(read_config(apply_overrides(load_config_data("tiny"), [*TINY, *sets])), 257)


def target(count: int = 1, memory: int | None = None) -> Target:
    """``count`` of this machine's devices as TPU v5e chips (``memory`` bytes each if given)."""
    device = accelerator("v5e")
    if memory is not None:
        device = dataclasses.replace(device, memory_bytes=memory)
    return Target(device, count, jax.devices()[:count])


def fake_plans(monkeypatch, answer) -> list[Candidate]:
    """`engine.evaluate` answering ``answer(config) -> (peak_bytes, seconds)`` against the
    target's memory; the candidates planned, in order."""
    planned: list[Candidate] = []

    def evaluate(run, tgt, text):
        c = candidates.candidate_of(run, tgt.count)
        planned.append(c)
        peak, seconds = answer(run)
        fits = peak <= tgt.device.memory_bytes
        fitted = {
            "remat": c.remat,
            "accumulation": c.accumulation,
            "attention": "xla",
            "loss": "xla",
        }  # what auto resolves to on a TPU
        return Outcome(None if fits else "does not fit", fitted, peak, seconds, 1e6 / seconds,
                       0.5, "estimate")  # fmt: skip

    monkeypatch.setattr(engine, "evaluate", evaluate)
    return planned


def test_only_the_splits_that_shard_the_state_are_compiled_and_the_yaml_plans_the_same(
    tmp_path, monkeypatch, capsys
):
    """A model whose parameters and Adam state do not fit one device's memory but do fit half
    of it: the data-parallel split is pruned by the analytic bound (never compiled), the FSDP
    split is the one planned and the winner; its YAML loads, plans to the same estimate and
    trains here (two steps; its FSDP split as written, the data axis and the batch over the rest
    of this machine's 8 CPU devices)."""
    run = run_of("data.batch_size=4", "data.seq_len=16", "model.d_model=256", "model.mlp.dim=1024",
                 "eval.batch_size=2")  # fmt: skip
    state = candidates.state_bytes(run)
    tgt = target(2, memory=int(0.9 * state))
    space = Space.of(run, tgt, axes=("data", "fsdp"), remats=("none",), accumulations=(1,),
                     attentions=("xla",), losses=("xla",), matmuls=("default",))  # fmt: skip
    assert [m.describe() for m in space.meshes] == ["fsdp=2"]
    assert space.pruned.counts == {
        f"params + optimizer state alone exceed the {0.9 * state / GIB:.2f} GiB per device "
        f"(≥ {state / GIB:.2f} GiB)": 1
    }
    lines: list[str] = []
    result = search(run, tgt, "2xv5e", space, budget_s=600, workers=0, say=lines.append)
    assert not result.ran_out and len(result.order) == 1, lines
    winner, outcome = result.ranked()[0]
    assert winner.mesh == MeshChoice((1, 1, 2, 1, 1, 1), zero=True) and outcome.fits
    assert outcome.peak_bytes is not None and outcome.peak_bytes <= tgt.device.memory_bytes
    path = tmp_path / "winner.yaml"
    loaded = write_winner(run, winner, path, "test")
    assert loaded.mesh.strategy == "fsdp" and (loaded.mesh.data, loaded.mesh.fsdp) == (1, 2)
    again = target_plan.plan(target_plan.plan_vocab(loaded), tgt, "2xv5e", lambda line: None)
    assert again.error is None
    assert math.isclose(again.data["estimate"]["seconds"], outcome.seconds, rel_tol=1e-9)
    assert again.data["train"]["peak_bytes"] == outcome.peak_bytes
    assert table(result)[1].split()[:3] == ["1", "fsdp=2", "none"]
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(300)))
    sets = ["train.steps=2", "optimizer.schedule.warmup_steps=0", "train.eval_batches=1",
            "train.log_every=1", "logging.sinks=[jsonl]", "mesh.data=-1", "data.batch_size=8",
            "eval.batch_size=8",
            "logging.progress=false", f"data.cache_dir={tmp_path / 'cache'}",
            "sampling.max_new_tokens=2"]  # fmt: skip
    argv = ["--config", str(path), "--run-dir", "run", "--data", str(corpus)]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    out = capsys.readouterr().out
    assert "done: 2 steps" in out and "fsdp 2" in out, out


def test_a_batch_that_fits_only_with_remat_takes_the_fastest_remat_that_fits(monkeypatch):
    """Peaks fall and step times rise with what remat recomputes: no remat does not fit, full
    remat fits but is slowest; the search climbs to save_dots, the fastest that fits, and never
    to a mesh it pruned."""
    peaks = {"none": 3.0, "save_dots_and_attention": 2.5, "save_dots": 1.5,
             "save_attention_output": 1.2, "full": 1.0}  # fmt: skip
    times = {"none": 1.0, "save_dots_and_attention": 1.1, "save_dots": 1.2,
             "save_attention_output": 1.3, "full": 1.5}  # fmt: skip
    planned = fake_plans(monkeypatch, lambda r: (peaks[r.model.remat] * GIB, times[r.model.remat]))
    run = run_of()
    tgt = target(1, memory=2 * GIB)
    space = Space.of(run, tgt, accumulations=(1,), attentions=("xla",), losses=("xla",))
    result = search(run, tgt, "v5e", space, budget_s=600, workers=0)
    (winner, outcome), *rest = result.ranked()
    assert winner.remat == "save_dots" and outcome.seconds == 1.2
    assert [c.remat for c, _ in rest] == ["save_attention_output", "full"]
    assert {c.remat for c in planned} == set(peaks) and not result.ran_out


def test_a_pipeline_the_layer_count_does_not_divide_is_pruned_not_compiled(monkeypatch):
    planned = fake_plans(monkeypatch, lambda r: (GIB, 1.0 + 0.1 * r.optimizer.accumulation_steps))
    run = run_of("model.num_layers=3", "data.batch_size=4")
    space = Space.of(run, target(2), axes=("pipeline", "data"), remats=("none",),
                     accumulations=(1, 2, 4), attentions=("xla",), losses=("xla",))  # fmt: skip
    assert space.pruned.counts["mesh.pipeline does not divide model.num_layers"] == 1
    assert [m.describe() for m in space.meshes] == ["data=2"]
    result = search(run, target(2), "2xv5e", space, budget_s=600, workers=0)
    assert all(c.mesh.size("pipeline") == 1 for c in planned) and planned
    # 4 rows in 4 micro-steps leave one row per step: it does not split over 2 data ranks
    assert space.pruned.counts["the micro-batch does not split over data × fsdp × expert"] == 1
    assert [c.accumulation for c in planned] == [1, 2]
    assert result.ranked()[0][0].accumulation == 1  # fewer micro-steps: faster here


def test_a_candidate_the_fit_makes_lighter_is_not_compiled_again(monkeypatch):
    """The plan's memory fit turns remat none into full: the later full candidate is reused."""
    planned: list[Candidate] = []

    def evaluate(run, tgt, text):
        c = candidates.candidate_of(run, tgt.count)
        planned.append(c)
        fitted = {"remat": "full", "accumulation": 1, "attention": "xla", "loss": "xla"}
        return Outcome(None, fitted, GIB, 1.0, 1.0, 0.1, "estimate")

    monkeypatch.setattr(engine, "evaluate", evaluate)
    run = run_of("model.attention_impl=xla", "model.cross_entropy_impl=xla")
    space = Space.of(run, target(1), remats=("none", "full"), accumulations=(1,),
                     attentions=("xla",), losses=("xla",))  # fmt: skip
    result = search(run, target(1), "v5e", space, budget_s=600, workers=0)
    assert [c.remat for c in planned] == ["none"] and result.reused == 1
    assert result.ranked()[0][0].remat == "full"


def test_a_split_that_leaves_the_activations_little_room_is_tried_after_those_that_leave_some():
    """Plain data parallelism talks least, but its whole copy of the state fills 90 % of the
    device and a gradient leaves no room: the FSDP splits, whose shares leave room, come first;
    it stays in the space (the state alone fits)."""
    run = run_of("data.batch_size=4", "data.seq_len=16", "eval.batch_size=4")
    state = candidates.state_bytes(run)
    space = Space.of(run, target(4, memory=int(state / 0.9)), axes=("data", "fsdp"),
                     attentions=("xla",), losses=("xla",))  # fmt: skip
    first = [m.describe() for m in space.meshes]
    assert first[-1] == "data=4", first
    assert first[0] == "data=2 fsdp=2", first  # of the roomy splits, the one that talks least
    roomy = Space.of(run, target(4, memory=100 * state), axes=("data", "fsdp"),
                     attentions=("xla",), losses=("xla",))  # fmt: skip
    assert roomy.meshes[0].describe() == "data=4"  # with room to spare, talk decides alone


def test_the_budget_ends_the_search_and_says_so(monkeypatch):
    clock = iter(range(0, 10_000, 40))  # each reading 40 s after the last
    monkeypatch.setattr(engine.time, "perf_counter", lambda: float(next(clock)))
    fake_plans(monkeypatch, lambda r: (GIB, 1.0))
    run = run_of()
    space = Space.of(run, target(1), attentions=("xla",), losses=("xla",))
    result = search(run, target(1), "v5e", space, budget_s=100, workers=0)
    assert result.ran_out and 0 < len(result.order) < len(space.remats) + len(space.accumulations)


def test_fp8_is_searched_only_where_the_target_has_float8_units_and_the_model_takes_it():
    bf16 = ["model.precision.param_dtype=float32", "model.precision.compute_dtype=bfloat16"]
    run = run_of(*bf16)
    h100 = Target(accelerator("h100"), 1, jax.devices()[:1])
    space = Space.of(run, h100, axes=("data",), remats=("none",), accumulations=(1,),
                     attentions=("xla",), losses=("xla",))  # fmt: skip
    assert space.matmuls == ["default", "fp8"] and not space.pruned.counts
    a100 = Target(accelerator("a100-40gb"), 1, jax.devices()[:1])
    space = Space.of(run, a100, axes=("data",), attentions=("xla",), losses=("xla",))
    assert space.matmuls == ["default"]
    assert space.pruned.counts == {"matmul fp8: the a100-40gb has no float8 matrix units": 1}
    fp32 = Space.of(run_of(), h100, axes=("data",), attentions=("xla",), losses=("xla",))
    assert fp32.matmuls == ["default"] and any("compute_dtype" in r for r in fp32.pruned.counts)
    winner = apply(run, candidates.candidate_of(run, 1).replace(matmul="fp8"))
    assert (
        winner.model.precision.matmul == "fp8" and winner.model.precision.param_dtype == "float32"
    )
    assert describe(candidates.candidate_of(winner, 1))["kernels"].endswith(" fp8")


def test_the_climb_takes_fp8_when_its_estimate_is_faster(monkeypatch):
    run = run_of("model.precision.compute_dtype=bfloat16")
    fake_plans(monkeypatch, lambda r: (1, 0.5 if r.model.precision.matmul == "fp8" else 1.0))
    h100 = Target(accelerator("h100"), 1, jax.devices()[:1])
    space = Space.of(run, h100, axes=("data",), remats=("none",), accumulations=(1,),
                     attentions=("xla",), losses=("xla",))  # fmt: skip
    result = search(run, h100, "h100", space, budget_s=60, workers=0, say=lambda line: None)
    assert result.ranked()[0][0].matmul == "fp8" and not result.ran_out


def test_apply_writes_each_dimension_into_the_config():
    run = run_of()
    c = Candidate(MeshChoice((1, 1, 2, 1, 1, 2), zero=True), "full", 2, "xla", "xla")
    out = apply(run, c)
    assert (out.mesh.fsdp, out.mesh.tensor, out.mesh.data, out.mesh.strategy) == (
        2,
        2,
        1,
        "fsdp_tp",
    )
    assert (out.model.remat, out.optimizer.accumulation_steps) == ("full", 2)
    assert (out.model.attention_impl, out.model.cross_entropy_impl) == ("xla", "xla")
    assert candidates.candidate_of(out, 4) == c


def test_apply_turns_float8_off_with_its_settings():
    """A run in float8 (rowwise) whose candidate is not: the winner's YAML must load, and tjx.nn
    refuses a float8 setting without float8 products (#71)."""
    run = run_of("model.precision.matmul=fp8", "model.precision.fp8_scaling=rowwise")
    c = candidates.candidate_of(run, 1)
    off = apply(run, dataclasses.replace(c, matmul="default")).model.precision
    assert off == run.model.precision.without_fp8() and off.fp8_scaling == "tensorwise"
    assert apply(run, c).model.precision == run.model.precision  # the run as configured
    back = apply(run_of(), dataclasses.replace(c, matmul="fp8")).model.precision
    assert back.fp8 and back.fp8_scaling == "tensorwise"


def on_cpu(monkeypatch, memory: int | None = None) -> None:
    """The command line's target is this machine's first CPU device as a v5e; plans in-process."""
    opened = lambda text, devices, flag="--plan", **_: target(1, memory)
    monkeypatch.setattr(target_plan, "open_target", opened)
    monkeypatch.setattr(search_cli, "WORKERS", 0)


def sets(*extra: str) -> list[str]:
    return [x for s in [*TINY, *extra] for x in ("--set", s)]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--plan", "h800", "--search"], "--plan: unknown target 'h800'"),
        (["--plan", "v5e", "--search", "--search-budget", "0"], "--search-budget: must be more"),
        (["--search"], "--search: needs --plan TARGET"),
        (["--plan", "v5e", "--search", "--search-budget", "ten"], "expected minutes (a number)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, words, capsys, in_tmp):
    assert main(["--config", "tiny", *argv]) == 2
    assert words in error_line(capsys) and not list(in_tmp.iterdir())


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--search-out", "no/such/best.yaml"],
         "--search-out: the folder 'no/such' of 'no/such/best.yaml' does not exist; create it or "
         "choose another path"),
        (["--search-out", "out"], "--search-out: 'out' names a folder; name a file in it, e.g. "
         "'out/search.yaml'"),
        (["--plan-json", "out"], "--plan-json: 'out' names a folder; name a file in it, e.g. "
         "'out/search.json'"),
        (["--plan-json", "none/s.json"], "--plan-json: the folder 'none' of 'none/s.json' does "
         "not exist; create it or choose another path"),
    ],
)  # fmt: skip
def test_a_file_the_search_cannot_write_is_refused_before_any_candidate_compiles(
    flags, words, capsys, in_tmp, monkeypatch
):
    """The search writes its winner and record at its end, minutes later (#71): where they go is
    checked before the first candidate is planned, and nothing is created."""
    on_cpu(monkeypatch)
    planned = fake_plans(monkeypatch, lambda r: (GIB, 1.0))
    (in_tmp / "out").mkdir()
    argv = ["--config", "tiny", *sets("data.batch_size=2"), "--plan", "v5e", "--search", *flags]
    assert main(argv) == 2
    assert error_line(capsys) == f"trainer: error: {words}"
    assert planned == [] and [p.name for p in in_tmp.iterdir()] == ["out"]
    assert not list((in_tmp / "out").iterdir())


def test_the_default_winner_file_is_checked_too(capsys, in_tmp, monkeypatch):
    on_cpu(monkeypatch)
    planned = fake_plans(monkeypatch, lambda r: (GIB, 1.0))
    (in_tmp / "tiny-v5e-search.yaml").mkdir()  # where the winner would go
    assert main(["--config", "tiny", *sets("data.batch_size=2"), "--plan", "v5e", "--search"]) == 2
    assert "--search-out: 'tiny-v5e-search.yaml' names a folder" in error_line(capsys)
    assert planned == []


def test_a_state_too_big_for_every_split_is_one_line(capsys, in_tmp, monkeypatch):
    on_cpu(monkeypatch, memory=1024)
    assert main(["--config", "tiny", *sets(), "--plan", "v5e", "--search"]) == 2
    assert "every mesh split was pruned" in error_line(capsys)


def test_when_nothing_fits_the_search_says_so_in_one_line(capsys, in_tmp, monkeypatch):
    on_cpu(monkeypatch, memory=GIB)
    fake_plans(monkeypatch, lambda r: (2 * GIB, 1.0))
    assert main(["--config", "tiny", *sets("data.batch_size=2"), "--plan", "v5e", "--search"]) == 2
    assert "no candidate fits" in error_line(capsys) and not list(in_tmp.iterdir())


def test_a_budget_that_ends_before_a_fit_asks_for_a_longer_one_not_a_smaller_run(
    capsys, in_tmp, monkeypatch
):
    on_cpu(monkeypatch, memory=GIB)
    fake_plans(monkeypatch, lambda r: (2 * GIB, 1.0))
    clock = iter(range(0, 10_000, 40))  # each reading 40 s after the last: 1 minute is 2 plans
    monkeypatch.setattr(engine.time, "perf_counter", lambda: float(next(clock)))
    argv = ["--config", "tiny", *sets("data.batch_size=2"), "--plan", "v5e", "--search",
            "--search-budget", "1"]  # fmt: skip
    assert main(argv) == 2
    line = error_line(capsys)
    assert "before the budget (1 min) ran out" in line and "raise --search-budget" in line
    assert not list(in_tmp.iterdir())


def test_the_cli_prints_the_table_and_writes_a_config_that_loads(capsys, in_tmp, monkeypatch):
    on_cpu(monkeypatch)
    slower = {"none": 0.0, "full": 0.3}  # any other policy: 0.1
    fake_plans(monkeypatch, lambda r: (GIB, 1.0 + r.optimizer.accumulation_steps / 10
                                       + slower.get(r.model.remat, 0.1)))  # fmt: skip
    argv = ["--config", "tiny", *sets("data.batch_size=2"), "--plan", "v5e", "--search",
            "--search-out", "best.yaml", "--plan-json", "search.json"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "search: converged after" in out and "pruned 1: attention cudnn" in out
    assert "as configured: 1100.0 ms per step" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("# "))
    assert header.split()[1:4] == ["mesh", "remat", "micro-batch"]
    main_config = read_config(apply_overrides(load_config_data(str(in_tmp / "best.yaml")), []))
    assert main_config.optimizer.accumulation_steps == 1 and main_config.model.remat == "none"
    found = json.loads((in_tmp / "search.json").read_text())
    assert found["ranked"][0]["remat"] == "none" and found["ranked"][0]["seconds"] == 1.1
    assert found["base"]["seconds"] == 1.1 and not found["ran_out"]


class TwoAtOnce:
    """`engine.Planner` with two slots whose plans finish in the order submitted (a pool's
    scheduling without processes)."""

    def __init__(self, target, text, workers):
        self.target, self.text = target, text
        self.running: set[Candidate] = set()
        self.finished: list[tuple[Candidate, Outcome]] = []

    @property
    def slots(self) -> int:
        return 2 - len(self.running)

    def submit(self, c, run) -> None:
        self.running.add(c)
        self.finished.append((c, engine.evaluate(run, self.target, self.text)))

    def next_done(self, timeout):
        c, o = self.finished.pop(0)
        self.running.discard(c)
        return c, o

    def close(self) -> None:
        pass


def _plan_or_die(run) -> Outcome:
    """A worker's work for the test below: full remat dies (a line on stderr, then abort, as a
    native check does); anything else plans."""
    if run.model.remat == "full":
        sys.stderr.write("net_util.cc:2295] Check failed: info.has_value()\n")
        sys.stderr.flush()
        os.abort()
    return Outcome(None, {}, GIB, 1.0, 1e6, 0.5, "estimate")


def test_a_planning_process_that_dies_fails_its_own_candidate_and_planning_goes_on():
    """A worker that dies mid-plan answers for its candidate (how it died, its last stderr
    line) instead of losing it (a pool's lost task left the search waiting out its budget);
    the other worker's plan comes back, and two more candidates get that worker and a new one;
    a worker killed while idle is replaced."""
    run = run_of()
    space = Space.of(run, target(1), remats=("none", "full"), accumulations=(1, 2),
                     attentions=("xla",), losses=("xla",))  # fmt: skip
    dies = Candidate(space.meshes[0], "full", 1, "xla", "xla")
    lives = dies.replace(remat="none")
    after = [lives.replace(accumulation=2), lives.replace(attention="auto")]
    planner = engine.Planner(target(1), "v5e", 2, work=_plan_or_die)
    found: dict[Candidate, Outcome] = {}

    def collect(count: int) -> None:
        deadline = time.monotonic() + 300  # each spawned worker imports jax (~8 s here)
        while len(found) < count and time.monotonic() < deadline:
            done = planner.next_done(5.0)
            if done is not None:
                found[done[0]] = done[1]

    try:
        planner.submit(dies, apply(run, dies))
        planner.submit(lives, apply(run, lives))
        collect(2)
        assert planner.running == set() and planner.slots == 2
        for c in after:
            planner.submit(c, apply(run, c))
        collect(4)
        victim = planner.idle[-1].process  # a worker killed while idle is not sent a plan
        victim.kill()
        victim.join()
        last = lives.replace(loss="auto")
        planner.submit(last, apply(run, last))
        collect(5)
        workers = [w.process for w in [*planner.idle, *planner.busy]]
    finally:
        planner.close()
    assert found[dies].error == (
        "failed: the planning process died (killed by SIGABRT): "
        "net_util.cc:2295] Check failed: info.has_value()"
    )
    assert all(found[c].error is None and found[c].peak_bytes == GIB for c in [lives, *after, last])
    assert victim not in workers
    assert len(workers) == 1 and not any(p.is_alive() for p in workers)  # the other idle one


def test_no_kernel_is_compiled_under_its_own_name_while_auto_may_be_it(monkeypatch):
    """With two workers, the run as configured (auto kernels) is planned alone first: a second
    worker given xla by name would compile the program auto becomes on this target."""
    planned = fake_plans(monkeypatch, lambda r: (GIB, 1.0 if r.model.remat == "none" else 2.0))
    monkeypatch.setattr(engine, "Planner", TwoAtOnce)
    run = run_of()
    space = Space.of(run, target(1), remats=("none", "full"), accumulations=(1,),
                     attentions=("xla",), losses=("xla",))  # fmt: skip
    result = search(run, target(1), "v5e", space, budget_s=600, workers=2)
    assert [(c.remat, c.attention, c.loss) for c in planned] == [
        ("none", "auto", "auto"),
        ("full", "xla", "xla"),
    ]
    assert result.ranked()[0][0] == Candidate(space.meshes[0], "none", 1, "xla", "xla")


def test_a_kernel_that_does_not_lower_on_a_split_is_retried_with_the_next(monkeypatch):
    """cuDNN's partitioner refuses the FSDP split (as it does on 8 × H100): that split is
    planned again with the next kernel, which makes it the winner here."""
    planned: list[Candidate] = []

    def evaluate(run, tgt, text):
        c = candidates.candidate_of(run, tgt.count)
        planned.append(c)
        if c.attention == "cudnn" and c.mesh.size("fsdp") > 1:
            return Outcome("refused: --plan: attention: cudnn failed to lower or compile (x)")
        seconds = (2.0 if c.mesh.size("fsdp") == 1 else 1.0) + (c.attention == "pallas") * 0.1
        fitted = {"remat": c.remat, "accumulation": c.accumulation, "attention": c.attention}
        return Outcome(None, fitted, GIB, seconds, 1.0, 0.1, "estimate")

    monkeypatch.setattr(engine, "evaluate", evaluate)
    run = run_of("model.attention_impl=cudnn", "model.cross_entropy_impl=xla")
    tgt = dataclasses.replace(target(2), device=accelerator("h100"))
    space = Space.of(run, tgt, axes=("data", "fsdp"), remats=("none",), accumulations=(1,),
                     attentions=("cudnn", "pallas"), losses=("xla",))  # fmt: skip
    result = search(run, tgt, "2xh100", space, budget_s=600, workers=0)
    fsdp = [c.attention for c in planned if c.mesh.size("fsdp") > 1]
    assert fsdp[:2] == ["cudnn", "pallas"]
    winner = result.ranked()[0][0]
    assert winner.mesh.size("fsdp") == 2 and winner.attention == "pallas"


def test_a_split_the_compiler_fails_on_is_left_for_the_next_split(monkeypatch):
    """libtpu's RET_CHECK on an FSDP split (as on the 8B's context split of a v5e-32) fails every
    remat and micro-batch of that split alike: after the first failure, nothing else on it is
    compiled (not the same program under the kernel name ``auto`` resolves to, either), and the
    climb wins on the other split. A jax runtime error is an outcome, not a crash."""
    planned: list[Candidate] = []

    def plan(run, tgt, text, say):
        c = candidates.candidate_of(run, tgt.count)
        planned.append(c)
        if c.mesh.size("fsdp") > 1:
            raise jax.errors.JaxRuntimeError("INTERNAL: RET_CHECK failure (net_util.cc:2295)")
        seconds = 1.0 if c.remat == "none" else 2.0
        train = {"remat": c.remat, "accumulation_steps": c.accumulation, "peak_bytes": GIB}
        data = {"train": train, "attention": {"kernel": "xla"},
                "estimate": {"seconds": seconds, "tokens_per_s": 1.0, "mfu": 0.1}}  # fmt: skip
        return target_plan.PlanResult(text, run.name, data)

    monkeypatch.setattr(engine.target_plan, "plan", plan)
    run = run_of("mesh.strategy=fsdp", "mesh.data=1", "mesh.fsdp=2")
    space = Space.of(run, target(2), axes=("data", "fsdp"), remats=("none", "full"),
                     accumulations=(1, 2), attentions=("xla",), losses=("xla",))  # fmt: skip
    result = search(run, target(2), "2xv5e", space, budget_s=600, workers=0)
    on_fsdp = [c for c in planned if c.mesh.size("fsdp") > 1]
    assert len(on_fsdp) == 1 and on_fsdp[0].attention == "auto"
    assert "RET_CHECK" in (result.outcomes[on_fsdp[0]].error or "")
    winner = result.ranked()[0][0]
    assert winner.mesh.describe() == "data=2" and winner.remat == "none"
    (reason,) = (r for r in space.pruned.counts if "the compiler failed" in r)
    assert "RET_CHECK" in reason
    skipped = [c for c, o in result.outcomes.items() if (o.error or "").startswith("pruned: the")]
    assert skipped == [on_fsdp[0].replace(attention="xla")]  # the program auto is, by name


# --- An RL config's search (#72): the rollout batch for the most samples per second -------------


class Planned(list):
    """The batches a fake RL search planned with overlap 0; ``splits`` its (batch, sampler)."""

    splits: list[tuple[int, int]]


def fake_rl_plans(monkeypatch, answer) -> Planned:
    """`rl._plan_batch` answering ``answer(batch) -> (peak_bytes, rollout_s, update_s)`` (or
    ``answer(batch, sampler)`` when it takes two) against the target's memory; the batches
    planned with overlap 0, in order (a split's plans are in ``planned.splits``)."""
    planned = Planned()
    planned.splits = []

    def plan_batch(run, batch, tgt, text, sampler, cache):
        if sampler:
            planned.splits.append((batch, sampler))
            peak, rollout, update = answer(batch, sampler)
            copy = 0.001
            step = max(rollout, update) + copy
        else:
            planned.append(batch)
            peak, rollout, update = answer(batch) if answer.__code__.co_argcount == 1 else (
                answer(batch, 0))  # fmt: skip
            copy, step = 0.0, rollout + update
        record = {
            "label": "estimate",
            "seconds": rollout,
            "update_s": update,
            "iterations": 1,
            "step_s": step,
            "copy_s": copy,
            "samples_per_s": batch / step,
            "rollout_share": rollout / step,
        }
        fits = peak <= tgt.device.memory_bytes
        # The fit's micro-batches: 2 from 64 completions up (what it splits past full remat)
        fitted = {"remat": "full" if batch > 32 else "none",
                  "accumulation": 2 if batch >= 64 else 1, "attention": "xla"}  # fmt: skip
        # A peak within 2 × the memory: the update fitted, the (sequential) rollout did not
        update_fits = peak <= 2 * tgt.device.memory_bytes
        return rl.RlOutcome(batch, None if fits else "does not fit", record if fits else {},
                            fitted, peak, 1.0, sampler, update_fits)  # fmt: skip

    monkeypatch.setattr(rl, "_plan_batch", plan_batch)
    return planned


def test_an_rl_search_takes_the_rollout_batch_with_the_most_samples_per_second_that_fits(
    capsys, in_tmp, monkeypatch
):
    """A larger rollout batch samples more per second (the decode steps' fixed cost is shared)
    until it no longer fits: of grpo_tiny's 32, 64, 128 and 256 completions, 64 is chosen and 32
    is the runner-up; 128 and 256 are planned and do not fit. The group size and the split are
    said, not searched; the update micro-batch is the fit's (2 micro-batches from 64 up); the
    winner's YAML loads with its batch and micro-batch."""
    on_cpu(monkeypatch, memory=GIB)
    planned = fake_rl_plans(monkeypatch, lambda b: (b / 64 * GIB, 0.01 + b * 1e-4, 0.002))
    out = in_tmp / "rl.json"
    argv = ["--config", "grpo_tiny", "--plan", "v5e", "--search", "--search-out", "rl.yaml",
            "--plan-json", str(out)]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert planned == [32, 64, 128, 256]
    assert any(line.startswith("search: group size 8 kept: ") for line in lines)
    for words in (
        "sampler/trainer split: not searched: one device (",
        "update micro-batch: at each rollout batch and split, the whole batch, else (after full "
        "remat) 2, 4, ... micro-batches",
    ):
        assert any(words in line for line in lines), words
    chosen = next(line for line in lines if line.startswith("search: chosen: "))
    assert chosen.startswith(
        "search: chosen: rollout batch 64 (8 prompts × 8), overlap 0 (all 1 "
        "devices sample, then train), remat full, micro-batch 32 × 2: "
    )
    runner = next(line for line in lines if line.startswith("search: runner-up: "))
    assert runner.startswith("search: runner-up: rollout batch 32 (4 prompts × 8), overlap 0")
    table_rows = [line.split() for line in lines if line.startswith("  1 ") or
                  line.startswith("  2 ")]  # fmt: skip
    assert [r[1] for r in table_rows] == ["64", "32"]
    assert [r[7:10] for r in table_rows] == [["32", "×", "2"], ["32", "×", "1"]]  # micro-batch
    loaded = load_config(str(in_tmp / "rl.yaml"), [])
    assert loaded.data.batch_size == 64 and loaded.model.remat == "full"
    assert loaded.rollout.group_size == 8 and loaded.optimizer.accumulation_steps == 2
    record = json.loads(out.read_text())
    assert record["chosen"]["batch"] == 64 and record["runner_up"]["batch"] == 32
    assert (record["chosen"]["accumulation_steps"], record["chosen"]["micro_batch"]) == (2, 32)
    assert record["runner_up"]["accumulation_steps"] == 1
    assert record["micro_batch"] == rl.MICRO_LINE
    assert [p["batch"] for p in record["planned"] if p["error"]] == [128, 256]


def test_an_rl_search_where_no_rollout_batch_fits_is_one_line(capsys, in_tmp, monkeypatch):
    on_cpu(monkeypatch, memory=GIB)
    fake_rl_plans(monkeypatch, lambda b: (2 * GIB, 0.01, 0.01))
    argv = ["--config", "grpo_tiny", "--plan", "v5e", "--search", "--search-rollouts", "64,128"]
    assert main(argv) == 2
    assert error_line(capsys) == (
        "trainer: error: --plan v5e --search: no rollout batch fits (2 planned: 64, 128); lower "
        "grpo.max_new_tokens or data.seq_len, or plan more devices"
    )
    assert not list(in_tmp.iterdir())  # no winner file


def test_a_search_worker_keeps_its_compiles_in_the_runs_folder(monkeypatch, tmp_path):
    """A worker process opens the target itself (jax does not cross a spawn), but with the
    findings folder of the parent's run (its train.compilation_cache), not the default's."""
    default = CompileFindings(tmp_path / "default", "t")
    opened = lambda text, devices, flag="--plan", **_: dataclasses.replace(
        target(1), findings=default
    )
    monkeypatch.setattr(target_plan, "open_target", opened)
    monkeypatch.setattr(engine, "_WORKER", {})
    runs = CompileFindings(tmp_path / "run", "t")
    engine._open_worker("h100", runs)
    assert engine._WORKER["target"].findings == runs and engine._WORKER["text"] == "h100"
    engine._open_worker("h100", None)  # the run's setting is off
    assert engine._WORKER["target"].findings is None


def on_8(monkeypatch, memory: int) -> None:
    """As `on_cpu`, with 8 of this machine's devices as the target (``--plan 8xh100``)."""
    monkeypatch.setattr(target_plan, "open_target",
                        lambda text, devices, flag="--plan", **_: target(8, memory))  # fmt: skip
    monkeypatch.setattr(search_cli, "WORKERS", 0)


def test_an_rl_search_on_8_devices_tries_every_split_and_chooses_the_fastest_that_fits(
    capsys, in_tmp, monkeypatch
):
    """#72: every rollout batch is planned with overlap 0, then the two best (256, 128) split
    into 1 to 7 sampler devices, the fewest first, each at the largest batch up to it that the
    group size (8), the samplers and the trainers divide (256: 1 + 7 at 224, 2 + 6 and 3 + 5
    at 240, ...). As a decode step reads the whole policy on each device, the rollout barely falls
    with more samplers (40 ms + 20 µs a row on each), while the update is 1 ms a row on each
    trainer; a sampler device holds at most 192 rows. 2 + 6 at 240 (max(42.4, 40) + 1 ms copy)
    beats 4 + 4 (65 ms) and the sequential 256 (72.6 ms); 1 + 7 at 224 does not fit; 3 + 5 at
    240 is the runner-up. The YAML builds its trainer's mesh over 6 devices here (data 6, the
    held-out batch 30 that they split), and the JSON carries the split."""
    on_8(monkeypatch, memory=GIB)

    def answer(batch, sampler):
        devices, trainers = (sampler, 8 - sampler) if sampler else (8, 8)
        peak = 2 * GIB if batch / devices > 192 else GIB // 2
        return peak, 0.040 + 2e-5 * batch / devices, 1e-3 * batch / trainers

    planned = fake_rl_plans(monkeypatch, answer)
    out = in_tmp / "rl.json"
    argv = ["--config", "grpo_tiny", "--plan", "8xh100", "--search", "--search-out", "rl.yaml",
            "--plan-json", str(out)]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert planned == [32, 64, 128, 256]
    assert planned.splits == [
        (224, 1), (240, 2), (240, 3), (256, 4), (240, 5), (240, 6), (224, 7),
        (112, 1), (120, 2), (120, 3), (128, 4), (120, 5), (120, 6), (112, 7),
    ]  # fmt: skip
    assert any(line.startswith("search: sampler/trainer split: overlap 0 (every device samples")
               and "N = 1, 2, 3, 4, 5, 6, 7 " in line for line in lines)  # fmt: skip
    chosen = next(line for line in lines if line.startswith("search: chosen: "))
    assert chosen.startswith(
        "search: chosen: rollout batch 240 (30 prompts × 8), overlap 1: 2 "
        "sampler + 6 trainer devices, remat full, micro-batch 120 × 2: 5,530 samples/s"
    )
    runner = next(line for line in lines if line.startswith("search: runner-up: "))
    assert runner.startswith(
        "search: runner-up: rollout batch 240 (30 prompts × 8), overlap 1: 3 sampler + 5 "
        "trainer devices, remat full, micro-batch 120 × 2: 4,898 samples/s"
    )
    assert "search: eval.batch_size 32 → 30 in the winner: the held-out completions run on its " \
        "6 trainer devices, which must split them" in lines  # fmt: skip
    row = next(line.split() for line in lines if line.startswith("  1 "))
    assert row[1:8] == ["240", "30", "×", "8", "2", "+", "6"] and "1.0" in row  # split, copy
    loaded = load_config(str(in_tmp / "rl.yaml"), [])
    assert (loaded.data.batch_size, loaded.eval.batch_size) == (240, 30)
    assert (loaded.rollout.overlap, loaded.rollout.sampler_devices) == (1, 2)
    # The run's mesh as the trainer builds it: the first 6 of 8 devices, every batch split
    mesh, _ = make_mesh(loaded.mesh, loaded.mesh_needs(), jax.devices()[:8])
    assert mesh.shape["data"] == 6 and mesh.devices.size == 6
    record = json.loads(out.read_text())
    assert (record["chosen"]["batch"], record["chosen"]["sampler_devices"]) == (240, 2)
    assert record["chosen"]["overlap"] == 1 and record["splits"] == [1, 2, 3, 4, 5, 6, 7]
    assert [(p["batch"], p["sampler_devices"]) for p in record["planned"] if p["error"]] == [
        (224, 1)]  # fmt: skip


def test_a_batch_whose_sequential_rollout_does_not_fit_is_tried_split(capsys, in_tmp, monkeypatch):
    """512 completions: the update fits, the sequential rollout does not (the devices keep the
    optimizer state while they sample); its 4 + 4 split (the sampler holds the policy alone)
    fits and wins, planned beside the two best batches' splits."""
    on_8(monkeypatch, memory=GIB)

    def answer(batch, sampler):
        if batch == 512:
            return (GIB if sampler == 4 else 3 * GIB // 2), 0.05, 0.01
        return GIB // 2, 0.05, 0.01

    planned = fake_rl_plans(monkeypatch, answer)
    argv = ["--config", "grpo_tiny", "--plan", "8xh100", "--search", "--search-rollouts",
            "128,256,512", "--search-samplers", "4"]  # fmt: skip
    assert main(argv) == 0
    assert planned.splits == [(256, 4), (128, 4), (512, 4)]
    chosen = next(x for x in capsys.readouterr().out.splitlines() if "search: chosen: " in x)
    assert chosen.startswith("search: chosen: rollout batch 512 (64 prompts × 8), overlap 1: 4 ")


def test_an_rl_search_where_nothing_fits_on_8_devices_is_one_line(capsys, in_tmp, monkeypatch):
    """No rollout batch fits with overlap 0 (the update alone is too large): no split is
    planned (fewer trainer devices hold more each), and the refusal is one line."""
    on_8(monkeypatch, memory=GIB)
    planned = fake_rl_plans(monkeypatch, lambda b, n: (3 * GIB, 0.01, 0.01))
    argv = ["--config", "grpo_tiny", "--plan", "8xh100", "--search", "--search-rollouts", "64"]
    assert main(argv) == 2
    assert error_line(capsys) == (
        "trainer: error: --plan 8xh100 --search: no rollout batch fits (1 planned: 64); lower "
        "grpo.max_new_tokens or data.seq_len, or plan more devices"
    )
    assert planned == [64] and planned.splits == [] and not list(in_tmp.iterdir())


def test_an_rl_search_tries_group_sizes_reusing_each_batch_and_splits_plan(
    capsys, in_tmp, monkeypatch
):
    """``--search-groups 4,8,16``: a group size changes no program at a rollout batch, so the
    overlap-0 batch 256 is planned once (for the configured 8) and reused for 4 and 16; on the
    2 + 6 split it changes the batch that runs: 240 for 8 and 16 (multiples of 24 and 48), 252
    for 4 (of 12), two plans. With the update 1 ms a row on each trainer, the rollout 40 ms +
    20 µs a row on each sampler, 252 in groups of 4 is the most samples per second; 240 is the
    runner-up in groups of 8 (the configured size, before 16 on the tie). The line, table, YAML
    and JSON say the group size."""
    on_8(monkeypatch, memory=GIB)

    def answer(batch, sampler):
        devices, trainers = (sampler, 8 - sampler) if sampler else (8, 8)
        return GIB // 2, 0.040 + 2e-5 * batch / devices, 1e-3 * batch / trainers

    planned = fake_rl_plans(monkeypatch, answer)
    out = in_tmp / "rl.json"
    argv = ["--config", "grpo_tiny", "--plan", "8xh100", "--search", "--search-rollouts", "256",
            "--search-samplers", "2", "--search-groups", "16,4,8", "--search-out", "rl.yaml",
            "--plan-json", str(out)]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert planned == [256] and planned.splits == [(240, 2), (252, 2)]
    assert any(line.startswith("search: group sizes 8, 4, 16 (grpo.group_size, --search-groups)")
               for line in lines)  # fmt: skip
    reused = [line for line in lines if line.endswith("(the same programs as planned)")]
    assert len(reused) == 3  # 256 for 4 and 16, 240 on 2 + 6 for 16
    chosen = next(line for line in lines if line.startswith("search: chosen: "))
    assert chosen.startswith("search: chosen: rollout batch 252 (63 prompts × 4), overlap 1: 2 ")
    runner = next(line for line in lines if line.startswith("search: runner-up: "))
    assert runner.startswith("search: runner-up: rollout batch 240 (30 prompts × 8), overlap 1")
    row = next(line.split() for line in lines if line.startswith("  1 "))
    assert row[1:5] == ["252", "63", "×", "4"]
    loaded = load_config(str(in_tmp / "rl.yaml"), [])
    assert (loaded.data.batch_size, loaded.rollout.group_size) == (252, 4)
    assert loaded.rollout.sampler_devices == 2
    record = json.loads(out.read_text())
    assert record["groups"] == [8, 4, 16] and record["chosen"]["group_size"] == 4
    assert record["chosen"]["rollout"]["prompts"] == 63
    assert sorted(
        (p["batch"], p["sampler_devices"], p["group_size"]) for p in record["planned"]
    ) == [(240, 2, 8), (240, 2, 16), (252, 2, 4), (256, 0, 4), (256, 0, 8), (256, 0, 16)]


@pytest.mark.parametrize(
    ("samplers", "sets", "splits", "why"),
    [
        # 2 + 6: 64 completions round down to 48 (groups of 8 that 2 and 6 devices divide)
        ("2,4", [], [(48, 2), (64, 4)], None),
        ("6", [], [(48, 6)], None),
        ("0", [], [], "--search-samplers 0: overlap 0 only"),
        # A mesh of 8 fixed data ways covers no trainer count of a split
        ("2,4", ["mesh.data=8"], [], "the config's mesh (pipeline=1, data=8, fsdp=1, "
         "expert=1, context=1, tensor=1) covers none of 6, 4 trainer devices"),
    ],
)  # fmt: skip
def test_an_rl_search_plans_the_splits_it_is_given(
    samplers, sets, splits, why, capsys, in_tmp, monkeypatch
):
    """``--search-samplers 2,4``: those splits only, each at the largest batch up to 64 that
    the group size and both sides divide; ``0``: overlap 0 only; a split whose trainer count the
    config's mesh does not cover is not planned. Why no split was planned is said."""
    on_8(monkeypatch, memory=GIB)
    planned = fake_rl_plans(monkeypatch, lambda b, n: (GIB // 2, 0.05, 0.01))
    argv = ["--config", "grpo_tiny", "--plan", "8xh100", "--search", "--search-rollouts", "64",
            "--search-samplers", samplers, *[x for s in sets for x in ("--set", s)]]  # fmt: skip
    assert main(argv) == 0
    assert planned == [64] and planned.splits == splits
    said = [x for x in capsys.readouterr().out.splitlines() if "split: not searched" in x]
    assert said == ([] if why is None else [f"search: sampler/trainer split: not searched: {why}"])


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--config", "grpo_tiny", "--plan", "8xh100", "--search", "--search-samplers", "8"],
         "--search-samplers: '8' is no count of sampler devices of --plan 8xh100's 8: each must "
         "leave a trainer; give integers from 1 to 7 separated by commas (0 alone: no split)"),
        (["--config", "grpo_tiny", "--plan", "8xh100", "--search", "--search-samplers", "0,4"],
         "--search-samplers: '0' is no count of sampler devices of --plan 8xh100's 8: each must "
         "leave a trainer; give integers from 1 to 7 separated by commas (0 alone: no split)"),
        (["--config", "grpo_tiny", "--plan", "h100", "--search", "--search-samplers", "1"],
         "--search-samplers: --plan h100 is one device, which cannot be split into sampler and "
         "trainer devices; drop --search-samplers or plan more devices"),
        (["--config", "tiny", "--plan", "8xh100", "--search", "--search-samplers", "4"],
         "--search-samplers: applies to an RL config (data.format: prompts); 'tiny' trains on "
         "data.format='text', which samples nothing; drop --search-samplers"),
        (["--config", "grpo_tiny", "--plan", "8xh100", "--search-samplers", "4"],
         "--search-samplers: applies to --plan TARGET --search, which this command does not ask "
         "for; add --search or drop --search-samplers"),
        (["--config", "grpo_tiny", "--plan", "8xh100", "--set", "grpo.overlap=1", "--set",
          "grpo.sampler_devices=8"],
         "grpo.sampler_devices: 8 of --plan 8xh100's 8 devices sample, which leaves none to "
         "train on; set it to at most 7"),
        (["--config", "grpo_tiny", "--plan", "h100", "--set", "grpo.overlap=1", "--set",
          "grpo.sampler_devices=1"],
         "grpo.overlap: 1 samples and trains on devices of their own, and --plan h100 is one "
         "device; set grpo.overlap=0 and grpo.sampler_devices=0, or plan more devices"),
    ],
)  # fmt: skip
def test_a_split_that_leaves_no_trainer_is_one_line(argv, words, capsys, in_tmp, monkeypatch):
    on_8(monkeypatch, memory=GIB)
    planned = fake_rl_plans(monkeypatch, lambda b, n: (GIB, 0.01, 0.01))
    assert main(argv) == 2
    assert error_line(capsys) == f"trainer: error: {words}"
    assert planned == [] and not list(in_tmp.iterdir())


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--config", "tiny", "--plan", "v5e", "--search", "--search-rollouts", "64"],
         "--search-rollouts: applies to an RL config (data.format: prompts); 'tiny' trains on "
         "data.format='text', whose search has no rollout; drop --search-rollouts"),
        (["--config", "grpo_tiny", "--plan", "v5e", "--search", "--search-rollouts", "64,60"],
         "--search-rollouts: 60 completions do not split into groups of grpo.group_size=8 over "
         "the mesh's 1 batch ways; use multiples of 8"),
        (["--config", "grpo_tiny", "--plan", "v5e", "--search", "--search-rollouts", "64,x"],
         "--search-rollouts: expected rollout batches as positive integers separated by commas "
         "(e.g. 64,128), got 'x'"),
        (["--config", "grpo_tiny", "--plan", "v5e", "--search-rollouts", "64"],
         "--search-rollouts: applies to --plan TARGET --search, which this command does not ask "
         "for; add --search or drop --search-rollouts"),
        (["--config", "grpo_tiny", "--plan", "v5e", "--search", "--search-groups", "4,1"],
         "--search-groups: '1' is no group size (grpo.group_size: completions per prompt, at "
         "least 2); give integers of at least 2 separated by commas (e.g. 4,8,16)"),
        (["--config", "tiny", "--plan", "v5e", "--search", "--search-groups", "4"],
         "--search-groups: applies to an RL config (data.format: prompts); 'tiny' trains on "
         "data.format='text', whose search has no rollout; drop --search-groups"),
        (["--config", "grpo_tiny", "--plan", "v5e", "--search", "--search-rollouts", "64",
          "--search-groups", "8,48"],
         "--search-rollouts: 64 completions do not split into groups of grpo.group_size=48 over "
         "the mesh's 1 batch ways; use multiples of 48"),
        (["--config", "grpo_tiny", "--plan", "v5e", "--search-groups", "4"],
         "--search-groups: applies to --plan TARGET --search, which this command does not ask "
         "for; add --search or drop --search-groups"),
    ],
)  # fmt: skip
def test_an_rl_search_space_that_cannot_be_searched_is_one_line(
    argv, words, capsys, in_tmp, monkeypatch
):
    on_cpu(monkeypatch)
    planned = fake_rl_plans(monkeypatch, lambda b: (GIB, 0.01, 0.01))
    assert main(argv) == 2
    assert error_line(capsys) == f"trainer: error: {words}"
    assert planned == [] and not list(in_tmp.iterdir())


def test_the_rl_search_says_how_it_searches_the_update_micro_batch():
    """#72: the micro-batch line says the memory fit splits the update (exact for every loss
    type) and prices the k programs; with the entropy mask (the whole batch's quantile) it says
    the update stays whole."""
    run = resolve(read_config(load_config_data("grpo_tiny")), 300)
    assert rl.micro_line(run) == rl.MICRO_LINE
    assert "2, 4, ... micro-batches" in rl.MICRO_LINE and "every loss type" in rl.MICRO_LINE
    masked = apply_overrides(load_config_data("grpo_tiny"), ["grpo.top_entropy_quantile=0.2"])
    assert rl.micro_line(resolve(read_config(masked), 300)) == rl.MICRO_MASKED
    assert rl.MICRO_MASKED.startswith("update micro-batch: not searched: ")


def test_a_rollout_batchs_outcome_is_read_from_its_plan(monkeypatch):
    """`rl._plan_batch` plans the run at the batch (nothing else changed), takes the largest
    peak of the update and the rollout's programs, the fitted remat, and the plan's refusal or
    error as the outcome's."""
    from trainer.plan.plan_report import PlanResult

    seen = []

    def plan(run, tgt, text, say, cache=None):
        seen.append((run.data.batch_size, run.rollout.overlap, run.rollout.sampler_devices))
        if run.data.batch_size == 16:
            raise ValueError("mesh: a rule refused it")
        data = {"train": {"peak_bytes": 3, "remat": "full", "accumulation_steps": 1},
                "programs": {"prefill": {"peak_bytes": 5}, "decode": {"peak_bytes": None}},
                "attention": {"kernel": "xla"}}  # fmt: skip
        if run.data.batch_size == 64:
            data["rollout"] = {"samples_per_s": 10.0}
        return PlanResult(text, run.name, data, None)

    monkeypatch.setattr(target_plan, "plan", plan)
    run = resolve(read_config(load_config_data("grpo_tiny")), 300)
    fits = rl._plan_batch(run, 64, target(1), "v5e", 0, {})
    assert fits.fits and fits.peak_bytes == 5 and fits.samples_per_s == 10.0
    assert fits.fitted == {"remat": "full", "accumulation": 1, "attention": "xla"}
    assert rl._plan_batch(run, 32, target(1), "v5e", 0, {}).error == (
        "no rollout estimate (a program did not compile)"
    )
    refused = rl._plan_batch(run, 16, target(1), "v5e", 0, {})
    assert refused.error == "refused: mesh: a rule refused it" and refused.samples_per_s == 0.0
    split = rl._plan_batch(run, 64, target(1), "v5e", 4, {})  # overlapped: the split's settings
    assert split.key == (64, 4) and split.fits
    assert seen == [(64, 0, 0), (32, 0, 0), (16, 0, 0), (64, 1, 4)]
