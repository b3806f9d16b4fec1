"""The probe program of a replay: what the replayed steps did inside, computed in a jitted
program of its own beside the run's train step, which stays the run's program (its loss is the
one compared with the log).

Given the state before a step and the step's batch, the program returns arrays by name, as
asked:

* ``grad_norms/<layer>`` / ``update_norms/<layer>``: each layer's gradient and update norm, from
  the run's own step function built with a probe (trainer.step.train_step's ``probe``: the same
  gradients and optimizer update, its new state dropped);
* ``token_loss``: each target's cross-entropy ``[rows, seq]`` of the step's parameters (the
  evaluation's logits, dropout off; 0 where unscored): ``documents`` and ``tokens`` are the host's
  sums of it (trainer.start.replay.findings);
* ``activation_max`` / ``attention_logit_max``: each layer's largest output and attention logit
  ``[layers]``, recorded by tjx.nn's probes while an unrolled copy of the model without remat is
  traced (a scanned stack's parameters cut per layer inside the program).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import chex
import jax
from flax import nnx

from tjx import nn
from tjx.nn import probes as nn_probes
from trainer.config.schema import ConfigError
from trainer.step import state as run_state
from trainer.step.state import Setup
from trainer.step.train_state import TrainState
from trainer.step.train_step import PROBED, Batch, make_train_step

#: ``program(state, batch) -> {name: array}`` (names in the module docstring).
ProbeProgram = Callable[[TrainState, Batch], dict[str, jax.Array]]
#: A parameter's path in a pure parameter dict (its keys, outermost first).
Path = tuple[str | int, ...]
#: A pure parameter dict flattened: path → array.
Flat = dict[Path, jax.Array]
#: The per-layer norms' probes, their values named ``<probe>/<layer>``.
NORMS = ("grad_norms", "update_norms")


@dataclasses.dataclass
class Probes:
    """A built probe program and the names its per-layer values come in."""

    program: ProbeProgram
    #: The layers of ``activation_max`` / ``attention_logit_max``, in order (known once traced).
    layers: list[str] = dataclasses.field(default_factory=list)


def _flat(tree: chex.ArrayTree, prefix: Path = ()) -> Flat:
    if isinstance(tree, dict):
        out: Flat = {}
        for key, value in tree.items():
            out |= _flat(value, (*prefix, key))
        return out
    assert isinstance(tree, jax.Array | jax.ShapeDtypeStruct), prefix
    return {prefix: tree}  # type: ignore[dict-item]


def _nested(flat: Flat) -> dict[str | int, chex.ArrayTree]:
    out: dict[str | int, chex.ArrayTree] = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})  # type: ignore[assignment]
        node[path[-1]] = value
    return out


Convert = Callable[[chex.ArrayTree], chex.ArrayTree]


def unrolled_model(setup: Setup) -> tuple[nnx.GraphDef[nnx.Module], nnx.State, Convert]:
    """The run's model unrolled and without remat (what tjx.nn's `recording` traces): its graph,
    its other state, and ``convert(params)`` from the run's parameter tree (a scanned stack's
    leaves cut per layer).

    Raises
    ------
    ConfigError
        A mixed layer stack (``model.mixer_pattern``'s segments), which is not cut per layer.
    """
    model_cfg = dataclasses.replace(setup.nn_config, scan_layers=False, remat="none")
    cfg = dataclasses.replace(setup.step_config, model=model_cfg)
    abstract = nnx.eval_shape(lambda: run_state.run_model(cfg))
    graphdef, abstract_params, abstract_rest = nnx.split(  # type: ignore[misc]
        abstract, nnx.Param, ...
    )
    wanted = _flat(nnx.to_pure_dict(abstract_params))
    # The unrolled model's other state (RNG streams): stand-ins, as a deterministic forward never
    # draws from them.
    rest = nn.concrete_state(abstract_rest)
    run_paths = set(_flat(setup.state.param_tree()))
    mixed = any("segments" in path for path in run_paths)
    if mixed or nn.split_fp8_meta(setup.rest)[1] is not None:
        what = (
            "this model mixes kinds (model.mixer_pattern)"
            if mixed
            else "this model's float8 scales are per step (fp8_recipe delayed)"
        )
        raise ConfigError(
            "--probe: activations and attention record each layer of a stack of one layer kind "
            f"from its parameters alone; {what}: choose from grad_norms, update_norms, "
            "documents, tokens"
        )

    def source(path: Path) -> tuple[Path, int | None]:
        if path in run_paths:
            return path, None
        i = path.index("layers")
        return (*path[: i + 1], *path[i + 2 :]), int(path[i + 1])

    sources = {path: source(path) for path in wanted}

    def convert(params: chex.ArrayTree) -> chex.ArrayTree:
        flat = _flat(params)
        out: Flat = {}
        for path, (where, layer) in sources.items():
            out[path] = flat[where] if layer is None else flat[where][layer]
        return _nested(out)

    return graphdef, rest, convert


def build(setup: Setup, names: Sequence[str]) -> Probes:
    """The jitted probe program of ``names`` (`trainer.start.replay.request.PROBES`) for
    ``setup``'s run; nothing is donated (the state goes on to the run's own step)."""
    cfg = setup.step_config
    norms = [n for n in NORMS if n in names]
    tokens = any(n in names for n in ("documents", "tokens"))
    layered = any(n in names for n in ("activations", "attention"))
    step = None
    if norms:

        def probe(
            params: chex.ArrayTree, grads: chex.ArrayTree, updates: chex.ArrayTree
        ) -> dict[str, jax.Array]:
            trees = {"grad_norms": grads, "update_norms": updates}
            out = {}
            for name in norms:
                for layer, value in nn_probes.layer_norms(trees[name]).items():
                    out[f"{name}/{layer}"] = value
            return out

        step = make_train_step(
            setup.graphdef, setup.rest, setup.tx, cfg, setup.split, setup.experts, probe=probe
        )
    rest, _ = nn.split_fp8_meta(setup.rest)
    logits_fn = nn.objective_logits_fn(setup.graphdef, rest)
    unrolled = unrolled_model(setup) if layered else None
    layers: list[str] = []

    def program(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        out: dict[str, jax.Array] = {}
        if step is not None:
            _, metrics = step(state, batch)
            out |= {k.removeprefix(PROBED): v for k, v in metrics.items() if k.startswith(PROBED)}
        if tokens:
            logits, labels = logits_fn(state.model_tree(), batch)
            out["token_loss"] = nn_probes.token_losses(logits, labels)
        if unrolled is not None:
            graphdef, other, convert = unrolled
            model = nnx.merge(graphdef, convert(state.param_tree()), other)
            with nn_probes.recording() as rec:
                model(
                    batch["inputs"],
                    positions=batch.get("positions"),
                    segment_ids=batch.get("segment_ids"),
                    deterministic=True,
                )
            layers[:] = rec.layers
            out |= rec.stacked()
        return out

    return Probes(program=jax.jit(program), layers=layers)
