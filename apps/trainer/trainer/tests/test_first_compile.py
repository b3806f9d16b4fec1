"""One compile of the train step before step 1: the kernel choice, the memory measure and the
run share one executable (trainer.plan.first_compile). XLA's own compile events are counted (JAX's
``/jax/core/compile/backend_compile_duration``, by the compiled function's name), for ``tiny``
and the shapes of gpt2_small and llama_small shrunk to tiny sizes, with settings that change the
kernel and the memory fit; a long compile says so while it runs. Beside it, one program makes
the run's start (trainer.step.state.born), from the seed or from a run's checkpoint."""

from __future__ import annotations

import functools
import re
import threading
import time

import jax
import pytest

from trainer.cli import main
from trainer.plan.first_compile import FROM_CACHE, ticking

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
#: The programs before step 1 besides the train step and the start's: the step's base key
#: (``jax.random.key(train.seed)``, made eagerly by trainer.step.train_step), two tiny ones.
KEY_PROGRAMS = {"jit(stage)", "jit(_threefry_seed)"}
#: A compile's last line; CI's shared persistent cache may serve the compile, and the line says so.
COMPILED_LINE = rf"compiled the train step in \d+\.\d s({re.escape(FROM_CACHE)})?"
#: Tiny sizes for every preset (each keeps its own structure: norms, positions, MLP, tying).
TINY = [
    "model.d_model=16",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.mlp.dim=32",
    "model.max_seq_len=16",
    "data.seq_len=16",
    "data.batch_size=8",
    "eval.batch_size=8",
    "data.tokenizer=byte",
    "model.compute_dtype=float32",
    "train.steps=2",
    "train.stop_at=1",  # one step, then the checkpoint: no evaluation, no sampling
    "train.eval_every=0",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]


@pytest.fixture
def corpus(in_tmp):
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(200)))
    return text


def train_step_compiles(argv: list[str]) -> tuple[int, list[str]]:
    """(exit code, the names of every XLA compile of a train step while ``main(argv)`` ran)."""
    names: list[str] = []

    def listen(event: str, duration: float, **kwargs: object) -> None:
        name = str(kwargs.get("fun_name", ""))
        if event == COMPILE_EVENT and "train_step" in name:
            names.append(name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        code = main(argv)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return code, names


def programs_before_step_1(argv: list[str], monkeypatch) -> tuple[int, list[str], list[str]]:
    """(exit code, the names of every XLA compile from ``main(argv)``'s start to the first call
    of the train step, and of every one while it ran)."""
    import trainer.plan.first_compile as first_compile

    names: list[str] = []
    before: list[list[str]] = []

    def listen(event: str, duration: float, **kwargs: object) -> None:
        if event == COMPILE_EVENT:
            names.append(str(kwargs.get("fun_name", "")))

    steps = first_compile.taking_step_keys

    def counted(compiled, batch):
        call = steps(compiled, batch)

        def first(state, given):
            before.append(before[0] if before else list(names))
            return call(state, given)

        return first

    monkeypatch.setattr(first_compile, "taking_step_keys", counted)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        code = main(argv)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return code, before[0] if before else names, names


def argv(preset: str, corpus, *sets: str, run_dir: str = "run") -> list[str]:
    out = ["--config", preset, "--run-dir", run_dir, "--data", str(corpus)]
    for item in [*TINY, f"data.cache_dir={corpus.parent / 'cache'}", *sets]:
        out += ["--set", item]
    return out


def assert_compiled_once(code: int, names: list[str], out: str, err: str) -> None:
    """The run ended at its stop with one XLA compile of its train step, said in one line."""
    assert code == 0, out + err
    assert len([n for n in names if "train_step" in n]) == 1, names
    assert "train.stop_at: saved step 1" in out
    compiled = [ln for ln in out.splitlines() if ln.startswith("compiled the train step in")]
    assert len(compiled) == 1 and re.fullmatch(COMPILED_LINE, compiled[0])


@pytest.mark.parametrize(
    "preset,sets",
    [
        # tiny as it is: test_the_start_is_one_program_before_step_1's run
        ("tiny", ("model.attention_impl=pallas",)),  # the kernel choice compiles it
        ("gpt2_small", ()),
        ("llama_small", ("model.remat=full", "model.num_kv_heads=1")),
    ],
)
def test_the_train_step_is_compiled_once(preset, sets, corpus, in_tmp, capsys):
    code, names = train_step_compiles(argv(preset, corpus, *sets))
    assert_compiled_once(code, names, *capsys.readouterr())


@pytest.mark.parametrize("sets", [(), ("lora.enabled=true",)], ids=["tiny", "tiny-lora"])
def test_the_start_is_one_program_before_step_1(sets, corpus, in_tmp, capsys, monkeypatch):
    """From the command to step 1, tiny compiles its train step and ONE program that makes the
    whole start: parameters, LoRA adapters, optimizer state and step (it was 33 eager programs,
    one per initializer, shape and flat buffer); the rest is the step's base key. A run that
    starts from that run's checkpoint (``--init-from RUN``) draws no weight: one program again,
    beside the eager sum of a LoRA run's adapters into its weights (as the run saved them).
    The first run compiles its train step once (test_the_train_step_is_compiled_once's rule)."""
    code, names, every = programs_before_step_1(argv("tiny", corpus, *sets), monkeypatch)
    assert_compiled_once(code, every, *capsys.readouterr())
    assert sorted(set(names) - KEY_PROGRAMS) == ["jit(create)", "jit(train_step)"], names
    assert len(names) <= 4, names
    again = [*argv("tiny", corpus, *sets, run_dir="again"), "--init-from", "run"]
    code, names, _ = programs_before_step_1(again, monkeypatch)
    assert code == 0, capsys.readouterr()
    merge = {"jit(dot_general)", "jit(multiply)", "jit(add)", "jit(convert_element_type)"}
    assert sorted(set(names) - KEY_PROGRAMS - merge) == ["jit(create)", "jit(train_step)"], names
    assert names.count("jit(create)") == 1 and (sets or len(names) <= 4), names


def test_the_memory_fit_measures_the_executable_the_run_calls(corpus, in_tmp, capsys, monkeypatch):
    """On one device the memory fit reads the kernel choice's executable: still one compile. A
    step that does not fit is compiled once more with full remat (the lighter step), and no
    more: here neither fits, so the run stops with one error line after those two compiles."""
    from trainer.plan import memory_fit

    one = functools.partial(memory_fit.fit_memory, devices=1)
    monkeypatch.setattr(memory_fit, "fit_memory", one)
    sets = ("train.fit_memory=true",)  # auto is XLA on a CPU: the memory fit compiles it
    code, names = train_step_compiles(argv("tiny", corpus, *sets))
    out = capsys.readouterr().out
    assert code == 0 and len(names) == 1, (names, out)
    assert "memory: the train step needs" in out and "compiling the train step to" not in out
    monkeypatch.setattr(memory_fit, "fit_memory", functools.partial(one, budget=1))
    code, names = train_step_compiles(argv("tiny", corpus, *sets, run_dir="other"))
    err = capsys.readouterr().err
    assert code == 2 and "even with model.remat=full" in err
    assert len(names) == 2, names


def test_a_long_compile_says_so_while_it_runs():
    said: list[str] = []
    with ticking("compiling the train step", every=0.05, say=said.append):
        time.sleep(0.28)
    count = len(said)
    time.sleep(0.15)
    assert len(said) == count, "the ticker stopped with its block"
    assert 3 <= count <= 6, said
    assert all(re.fullmatch(r"compiling the train step… \d+ s", line) for line in said)
    assert not [t for t in threading.enumerate() if t.name == "compile-ticker"]
