"""Fit the train step to the memory the device has, before anything is written.

A preset sized for a GPU does not fit every machine: gpt2_small's step (16 × 1024 tokens, no remat)
needs about 43 GiB, more than a 24 GiB workstation has, and would be killed mid-compile or
mid-step. So on a single device the trainer first compiles the step abstractly (no parameter is
materialised), reads XLA's memory analysis, and compares the peak with the memory available. If it
does not fit and remat is off, it switches to full remat and says so (gpt2_small: 5.7 GiB); if even
that does not fit, it stops with exit code 2 and names the settings that shrink the step.

The check is skipped on several devices (the abstract step is not partitioned, so its figure would
overstate a sharded step) and for ``--init-from`` (the architecture comes from the checkpoint).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.metrics import GIB, available_bytes, peak_bytes
from trainer import tasks
from trainer.config import Config, build_config
from trainer.overrides import apply_overrides
from trainer.schema import ConfigError


def abstract_step(cfg: Config, vocab_size: int) -> tuple[Any, Any, Any]:
    """(jitted step, abstract state, abstract batch) of an LM config; no parameter is created."""
    from tjx import nn, optim
    from trainer.model_build import nn_config, optimizer_config
    from trainer.step import make_train_step

    abstract = nnx.eval_shape(
        lambda: nn.build_model(nn_config(cfg.model, vocab_size), rngs=nnx.Rngs(0))
    )
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)  # type: ignore[misc]
    params = nnx.to_pure_dict(params)
    tx = optim.build_optimizer(optimizer_config(cfg))
    state = {
        "params": params,
        "opt_state": jax.eval_shape(tx.init, params),
        "step": jax.ShapeDtypeStruct((), jnp.int32),
    }
    b, s = cfg.data.batch_size, cfg.data.seq_len
    keys = ("inputs", "targets", "segment_ids", "positions")
    batch = {k: jax.ShapeDtypeStruct((b, s), jnp.int32) for k in keys}
    step = jax.jit(make_train_step(graphdef, nn.concrete_state(rest), tx, cfg), donate_argnums=(0,))
    return step, state, batch


def step_peak(cfg: Config, vocab_size: int) -> int:
    """Peak bytes of the compiled train step of ``cfg`` on one device."""
    step, state, batch = abstract_step(cfg, vocab_size)
    return peak_bytes(step.lower(state, batch).compile())["peak"]


def fit_memory(
    cfg: Config, vocab_size: int, *, budget: int | None = None, devices: int | None = None
) -> Config:
    """``cfg`` if its step fits, else ``cfg`` with ``model.remat=full``; ConfigError if neither.

    ``budget`` (bytes) and ``devices`` default to this machine's (tests pass their own).
    """
    devices = jax.device_count() if devices is None else devices
    if not cfg.train.fit_memory or not tasks.for_config(cfg).fits_memory or devices != 1:
        return cfg
    budget = available_bytes() if budget is None else budget
    if budget is None:
        return cfg
    need = step_peak(cfg, vocab_size)
    print(f"memory: the train step needs {need / GIB:.2f} GiB; {budget / GIB:.2f} GiB available")
    if need <= budget:
        return cfg
    if cfg.model.remat == "none":
        fitted = build_config(apply_overrides(cfg.to_dict(), ["model.remat=full"]))
        need_full = step_peak(fitted, vocab_size)
        if need_full <= budget:
            print(
                f"note: it does not fit, so this run uses model.remat=full "
                f"({need_full / GIB:.2f} GiB; recomputes activations in the backward pass). "
                "Set train.fit_memory=false to keep remat off.",
                flush=True,
            )
            return fitted
        need = need_full
    # XLA:CPU undoes remat in unrolled stacks (it drops jax.checkpoint's barriers, then CSE
    # merges the recomputation back into the forward pass); scanned stacks keep it.
    unrolled = (
        "; set model.scan_layers=true (remat only saves memory on scanned layers on CPU)"
        if not cfg.model.scan_layers and jax.default_backend() == "cpu"
        else ""
    )
    raise ConfigError(
        f"train.fit_memory: the train step needs {need / GIB:.2f} GiB even with model.remat="
        f"full, but {budget / GIB:.2f} GiB is available; lower data.batch_size or data.seq_len, "
        f"or raise optimizer.accumulation_steps{unrolled}"
    )
