"""Fit the train step to the memory the device has, before anything is written.

What a step needs depends on the device that compiles it: gpt2_small's step (16 × 1024 tokens, no
remat) needs 14.9 GiB compiled for an H100 with cuDNN attention (``--plan h100``, BENCHMARKS.md)
but about 43 GiB on XLA:CPU, more than a 24 GiB workstation has. So on a single device the trainer
compiles the step abstractly and takes, through tjx-metrics' `first_fit`, the step as configured
or else with full remat (gpt2_small on CPU: 5.7 GiB), saying so; if neither fits (a compiler that
refuses a step for its size counts too), it exits 2 naming the settings that shrink the step.
Skipped on several devices (the abstract step is not partitioned: its figure would overstate a
sharded step) and for ``--init-from``; ``--plan`` shows what it would do on a device not here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax

from tjx.metrics import GIB, first_fit, peak_bytes
from trainer.config import Config
from trainer.schema import ConfigError


def abstract_step(cfg: Config) -> tuple[Any, Any, Any]:
    """(jitted step, abstract state, abstract batch) of ``cfg``'s train step on one device,
    unsharded; no parameter is created."""
    from tjx import nn
    from trainer.state import abstract_state
    from trainer.step import make_train_step

    graphdef, rest, tx, state, _ = abstract_state(cfg)
    shapes = nn.batch_shapes(cfg.model, cfg.data.batch_rows(cfg.data.batch_size), cfg.data.seq_len)
    step = jax.jit(make_train_step(graphdef, nn.concrete_state(rest), tx, cfg), donate_argnums=(0,))
    return step, state, {k: jax.ShapeDtypeStruct(s, d) for k, (s, d) in shapes.items()}


def step_peak(cfg: Config) -> int:
    """Peak bytes of the compiled train step of ``cfg`` on one device."""
    step, state, batch = abstract_step(cfg)
    return peak_bytes(step.lower(state, batch).compile())["peak"]


def _announced(name: str, cfg: Config) -> int:
    """`step_peak`, said first: a big model's compile takes minutes on a CPU."""
    print(f"memory: compiling {name} to measure its peak…", flush=True)
    return step_peak(cfg)


def lighter(cfg: Config, devices: int | None = None) -> Iterator[tuple[Config, str]]:
    """The lighter steps of ``cfg`` the memory fit takes, in order, each with its change: full
    remat when remat is off; then, for a plan over ``devices`` (advice: the trainer does not
    split a batch itself), the batch in twice as many micro-batches while it splits over the
    mesh's data × fsdp ways."""
    if cfg.model.remat == "none":
        cfg = cfg.with_model(remat="full")
        yield cfg, "model.remat=full"
    if devices is None:
        return
    sizes = cfg.mesh.resolve(devices)
    batch, micro, ways = cfg.data.batch_size, cfg.optimizer.accumulation_steps, sizes[1] * sizes[2]
    while True:
        micro *= 2
        if batch % micro or (batch // micro) % ways:
            return
        optimizer = dataclasses.replace(cfg.optimizer, accumulation_steps=micro)
        cfg = dataclasses.replace(cfg, optimizer=optimizer)
        yield cfg, f"optimizer.accumulation_steps={micro}"


#: The candidates' names, as the ``memory:`` lines print them.
STEP, FULL_REMAT = "the train step", "the train step with model.remat=full"


def fit_memory(cfg: Config, *, budget: int | None = None, devices: int | None = None) -> Config:
    """``cfg`` if its step fits, else ``cfg`` with ``model.remat=full``; ConfigError if neither.

    ``budget`` (bytes) and ``devices`` default to this machine's (tests pass their own).
    """
    devices = jax.device_count() if devices is None else devices
    # The abstract step below is a decoder's (an LM batch).
    if not cfg.train.fit_memory or cfg.task != "lm" or devices != 1:
        return cfg
    full = next(lighter(cfg), (cfg, ""))[0]  # full remat, when remat is off
    candidates = [(STEP, lambda: _announced(STEP, cfg))]
    if full is not cfg:
        candidates.append((FULL_REMAT, lambda: _announced(FULL_REMAT, full)))
    # Each figure is printed as it comes: the next compile may take a while.
    fit = first_fit(candidates, budget=budget, on_check=lambda c: print(f"memory: {c}", flush=True))
    if fit.chosen == FULL_REMAT:
        print(
            "note: it does not fit, so this run uses model.remat=full (recomputes activations in "
            "the backward pass). Set train.fit_memory=false to keep remat off.",
            flush=True,
        )
        return full
    if fit.chosen is not None or fit.budget is None:
        return cfg
    # XLA:CPU undoes remat in unrolled stacks (it drops jax.checkpoint's barriers, then CSE
    # merges the recomputation back into the forward pass); scanned stacks keep it.
    unrolled = (
        "; set model.scan_layers=true (remat only saves memory on scanned layers on CPU)"
        if not cfg.model.scan_layers and jax.default_backend() == "cpu"
        else ""
    )
    last = fit.checks[-1]
    need = f"{'more than ' if last.refused else ''}{last.peak / GIB:.2f} GiB"
    raise ConfigError(
        f"train.fit_memory: the train step needs {need} even with model.remat="
        f"full, but {last.budget / GIB:.2f} GiB is available; lower data.batch_size or "
        f"data.seq_len, or raise optimizer.accumulation_steps{unrolled}"
    )
