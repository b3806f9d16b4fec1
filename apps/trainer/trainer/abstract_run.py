"""A run's train and eval steps over abstract, sharded inputs: what a compile needs, nothing else.

The same model, optimizer, mesh rules and steps as a run builds (`trainer.state`, `trainer.step`),
but every array is a ``jax.ShapeDtypeStruct`` carrying its sharding on the given mesh: no
parameter is created, so a mesh of devices that are not here (tjx-parallel's `abstract_devices`)
compiles the program those devices would run, state donated and laid out as the real run lays it
out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from trainer.config import Config
from trainer.schema import ConfigError

#: The loader's token batch (tjx.data's layout): every LM-like objective reads from these.
TOKEN_KEYS = ("inputs", "targets", "segment_ids", "positions")


@dataclass
class AbstractRun:
    """The jitted steps of a run and their abstract, sharded arguments."""

    train_step: Any
    state: Any
    batch: dict[str, jax.ShapeDtypeStruct]
    eval_step: Any
    eval_batch: dict[str, jax.ShapeDtypeStruct]
    mesh: Any


def abstract_batch(run: Config, rows: int, mesh: Any) -> dict[str, jax.ShapeDtypeStruct]:
    """A batch of ``rows`` in the loader's layout for the run's objective, split over the mesh's
    batch axes (a ViT's images and labels; every other objective's tokens)."""
    from tjx import parallel

    if run.task == "classify":
        m = run.model
        shapes = {
            "images": ((rows, m.image_size, m.image_size, m.num_channels), jnp.float32),
            "labels": ((rows,), jnp.int32),
        }
    else:
        shapes = {k: ((rows, run.data.seq_len), jnp.int32) for k in TOKEN_KEYS}
    return {
        k: jax.ShapeDtypeStruct(shape, dtype, sharding=parallel.batch_sharding(mesh, len(shape)))
        for k, (shape, dtype) in shapes.items()
    }


def build(run: Config, devices: list[Any]) -> AbstractRun:
    """The run's steps over ``devices`` (abstract or real), with the run's mesh and rules.

    Raises
    ------
    ConfigError
        A mesh or batch that does not split over ``len(devices)`` devices, or a pipelined mesh
        (its stages are built over this machine's own devices).
    """
    from tjx import nn, parallel
    from trainer.state import abstract_state, make_mesh
    from trainer.step import experts_of, make_eval_step, make_train_step

    if run.mesh.pipeline > 1:
        raise ConfigError("mesh.pipeline: a pipelined run is not planned without its devices yet")
    mesh, rules = make_mesh(run, devices)  # ZeRO over fsdp × context under a split
    split = parallel.context_parallel(mesh, rules, run.mesh)  # as state.build: None unless split
    graphdef, rest, tx, state, specs = abstract_state(run)
    shardings = parallel.state_shardings(state, mesh, rules, param_specs=specs)
    state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
    concrete_rest = nn.concrete_state(rest)
    train = jax.jit(
        make_train_step(graphdef, concrete_rest, tx, run, split, experts_of(mesh, rules, run)),
        donate_argnums=(0,),
        out_shardings=(shardings, None),
    )
    evaluate = jax.jit(make_eval_step(graphdef, concrete_rest, run, split))
    return AbstractRun(
        train,
        state,
        abstract_batch(run, run.data.batch_rows(run.data.batch_size), mesh),
        evaluate,
        abstract_batch(run, run.data.batch_rows(run.eval.batch_size), mesh),
        mesh,
    )
