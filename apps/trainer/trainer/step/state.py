"""Model, optimizer and mesh set-up: the sharded train state the jitted step reads and donates."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import chex
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

import trainer.step.dpo as dpo
from tjx import kernels, nn, optim, parallel
from trainer.config.folder import RunDir
from trainer.config.schema import ConfigError, keyed
from trainer.config.typed import MeshNeeds, StepConfig
from trainer.step import init_from as init_runs
from trainer.step.train_state import TrainState


@dataclass(frozen=True)
class TrainParts:
    """`train_state`'s result: the model split for the step and the state built from it."""

    graphdef: nnx.GraphDef[nnx.Module]
    #: The model's state that is not a parameter (RNG counters, caches' shapes, ...).
    rest: nnx.State
    tx: optax.GradientTransformation
    state: TrainState
    #: The params' logical axes (a dict like ``params``, of ``PartitionSpec``s of axis names).
    specs: chex.ArrayTree


@dataclass
class Setup:
    """Everything built once per run."""

    mesh: Mesh
    rules: parallel.AxisRules
    #: The model's own config: ``cfg.model``, or one read from an ``--init-from`` checkpoint.
    nn_config: nn.TransformerConfig
    graphdef: nnx.GraphDef[nnx.Module]
    #: The model's state that is not a parameter (RNG counters, caches' shapes, ...).
    rest: nnx.State
    tx: optax.GradientTransformation
    state: TrainState
    num_params: int
    #: What the steps read of the run's config (the one the state was built from).
    step_config: StepConfig
    #: The scopes the steps trace the model in: None unless mesh.context > 1, and None for a
    #: model without MoE layers.
    split: parallel.ContextParallel | None = None
    experts: parallel.ExpertParallel | None = None
    #: The step of the run ``--init-from RUN_DIR`` read (None: another start).
    init_step: int | None = None
    #: The jitted held-out step, built by trainer.loop.evaluation at the run's first evaluation.
    eval_step: Callable[..., dict[str, jax.Array]] | None = None
    #: The params' logical axes (`train_state`'s): the optimizer's decay mask reads them.
    specs: chex.ArrayTree = None


def _check_pipeline(mc: parallel.MeshConfig, needs: MeshNeeds, batch_ways: int = 1) -> None:
    """mesh.pipeline > 1: a model tjx.nn can cut into stages, and sizes that split (tjx.parallel's
    rules; ``batch_ways`` = data×fsdp once known)."""

    assert needs.model is not None  # mesh_needs holds it whenever mesh.pipeline != 1
    with keyed("mesh.pipeline"):
        nn.check_pipelinable(needs.model)
        parallel.check_pipeline(
            num_layers=needs.model.num_layers,
            stages=mc.pipeline,
            batch_size=needs.step_batch,
            microbatches=mc.microbatches,
            batch_ways=batch_ways,
            schedule=mc.schedule,
        )


def trainer_devices(sampler: int, devices: list[jax.Device] | None = None) -> list[jax.Device]:
    """The devices a GRPO run that overlaps its rollouts trains on: all of ``devices`` (default
    this machine's) but the last ``sampler`` (``grpo.sampler_devices``, trainer.step.grpo's
    `sampler_devices`); a `ConfigError` when that leaves none, on one device, or with several
    processes (their devices interleave: a split per process is not made yet)."""
    devs = list(jax.devices() if devices is None else devices)
    if len(devs) < 2:
        raise ConfigError(
            "grpo.overlap: 1 samples and trains on devices of their own, and this run has one "
            "device; set grpo.overlap=0 (rollouts then updates, on the one device)"
        )
    if sampler >= len(devs):
        raise ConfigError(
            f"grpo.sampler_devices: {sampler} of the run's {len(devs)} devices sample, which "
            f"leaves none to train on; set it to at most {len(devs) - 1}"
        )
    if jax.process_count() > 1:
        raise ConfigError(
            f"grpo.overlap: one process only for now ({jax.process_count()} here); set "
            "grpo.overlap=0 and grpo.sampler_devices=0"
        )
    return devs[: len(devs) - sampler]


def make_mesh(
    mc: parallel.MeshConfig, needs: MeshNeeds, devices: list[jax.Device] | None = None
) -> tuple[Mesh, parallel.AxisRules]:
    """The mesh of the section ``mc`` over ``devices`` (default: this machine's; a plan's
    abstract ones) and the logical-axis rules; what the run asks of it (``needs``, a config's
    `Config.mesh_needs`) that it cannot split is a config error."""

    if mc.pipeline > 1:  # the sizes first: their message is clearer than the mesh's
        _check_pipeline(mc, needs)
    if needs.sampler_devices:  # GRPO's overlap: the last devices sample, the others train
        devices = trainer_devices(needs.sampler_devices, devices)
    try:
        mesh = parallel.make_mesh(mc, devices)
    except ValueError as err:
        n, where = (jax.device_count(), "here") if devices is None else (len(devices), "planned")
        raise ConfigError(f"mesh: {err} ({n} devices {where})") from None
    if mc.pipeline > 1:  # each microbatch is split over data×fsdp inside its stage
        _check_pipeline(mc, needs, parallel.batch_ways(mesh))
    with keyed(None):  # the messages name the keys
        if needs.num_experts:  # each device holds whole experts
            parallel.check_expert_split(needs.num_experts, mesh, section="mesh")
        parallel.check_batch_split(needs.batches, mesh)
    ways = parallel.context_ways(mesh)
    if ways > 1:  # a split sequence: the model's rules and the length's
        assert needs.model is not None  # mesh_needs holds it whenever mesh.context != 1
        check_context(needs.model, needs.seq_len, ways)
    # stage k holds the k-th run of layers: the stacked params' leading dim over `pipeline`;
    # with the sequence split, ZeRO's weights span fsdp × context (tjx.parallel's rules_for)
    return mesh, parallel.rules_for(mc, **({"layers": "pipeline"} if mc.pipeline > 1 else {}))


def check_context(model: nn.TransformerConfig, seq_len: int, ways: int) -> None:
    """tjx.nn's rules of sequences split over ``ways`` devices for ``model`` (refused only while
    tracing otherwise) and tjx.parallel's for the length ``seq_len`` (``data.seq_len``), each a
    `ConfigError`."""
    if ways == 1:
        return  # no sequence is split: no rule applies (both return at once)
    with keyed(None):  # the messages name the keys
        nn.check_sequence_split(model, ways)
        parallel.check_context_split(seq_len, ways, "data.seq_len")


def run_model(cfg: StepConfig, model: nnx.Module | None = None) -> nnx.Module:
    """The run's model: ``model`` (default: a new one of ``cfg.model`` from ``train.seed``) with
    tjx.nn's LoRA adapters of ``cfg.lora`` when ``lora.enabled`` (in place; step 0 computes
    exactly what the base computes); a target the model lacks is a config error."""

    if model is None:  # the kernels the run resolved (its kernel choice) run in its layers
        model = nn.build_model(cfg.model, rngs=nnx.Rngs(cfg.seed), attention=cfg.attention)
    if cfg.use_lora:
        seed = cfg.seed
        with keyed("lora.targets"):
            nn.add_lora(model, cfg.lora, rngs=nnx.Rngs(params=seed + 1, dropout=seed + 2))
    return model


@dataclass(frozen=True)
class Start:
    """The weights an ``--init-from`` start reads (`build`).

    A tjx run's model is the config's: ``params`` (its ``nnx.Param`` state) replace the drawn
    ones, and its other state (RNG streams) is a fresh start's, from ``train.seed``. A Hugging
    Face checkpoint's model is of its own architecture: ``graphdef`` and ``rest`` are its own.
    """

    params: nnx.State
    graphdef: nnx.GraphDef[nnx.Module] | None = None
    rest: nnx.State | None = None

    def arrays(self) -> tuple[nnx.State, ...]:
        """What `born`'s program reads: the params, and a Hugging Face model's ``rest``."""
        return (self.params,) if self.rest is None else (self.params, self.rest)

    def placed(self, mesh: Mesh, rules: parallel.AxisRules) -> Start:
        """This start with its arrays on ``mesh``, sharded as the run's state holds them (`born`
        donates them to its program)."""
        on = [jax.device_put(x, parallel.state_shardings(x, mesh, rules)) for x in self.arrays()]
        return Start(on[0], self.graphdef, on[1] if len(on) > 1 else None)


def _start_model(cfg: StepConfig, start: Start | None, *arrays: nnx.State) -> nnx.Module:
    """The model a run starts from, before `run_model`'s LoRA adapters: a new one of
    ``cfg.model`` drawn from ``train.seed``, or ``start``'s with its ``arrays`` (`Start.arrays`:
    inside `born`'s program, its arguments).

    A tjx run's params replace the drawn ones: inside `born`'s program those draws are never
    read, and XLA drops them (the weights are not drawn at all)."""

    if start is not None and start.graphdef is not None:
        return nnx.merge(start.graphdef, *arrays)
    model = nn.build_model(cfg.model, rngs=nnx.Rngs(cfg.seed), attention=cfg.attention)
    if start is not None:
        nnx.update(model, arrays[0])
    return model


def born(
    cfg: StepConfig, mesh: Mesh, rules: parallel.AxisRules, start: Start | None = None
) -> TrainParts:
    """`train_state` of the run's model with every array made by ONE jitted program on its own
    shards (tjx.parallel's `shard_init`): the parameters (drawn from ``train.seed``, or
    ``start``'s, placed on ``mesh`` first and donated), LoRA adapters, the optimizer state, the
    step, the float8 state, DPO's reference and the flat optimizer's buffers, each sharded as
    `abstract_state`'s is on ``mesh`` (the layout the train step is compiled for). The numbers
    are those the model's initializers draw eagerly, bit for bit (tjx.nn's `normal`)."""

    traced: list[TrainParts] = []

    def create(*arrays: nnx.State) -> tuple[TrainState, nnx.State]:
        parts = train_state(cfg, run_model(cfg, _start_model(cfg, start, *arrays)))
        traced.append(parts)  # its graph, optimizer and specs: Python objects, no arrays
        return parts.state, parts.rest

    arrays = () if start is None else start.arrays()
    # The model is traced once: shard_init's eval_shape and jit reuse this trace of `create`
    # (made as theirs are, in its scope).
    with parallel.init_scope(mesh):
        jax.eval_shape(create, *arrays)
    specs = traced[0].specs
    # A start's weights are donated: the program's arrays reuse their buffers (no second copy).
    state, rest = parallel.shard_init(
        create, mesh, rules, *arrays, param_specs=specs, donate=start is not None
    )
    return dataclasses.replace(traced[0], state=state, rest=rest)


def build(cfg: StepConfig, init_from: str | None = None) -> Setup:
    """Mesh, model (born sharded), optimizer and the initial state ``{params, opt_state, step}``
    of a config whose vocabulary is known (`trainer.config.typed.resolve`), made by one jitted
    program (`born`)."""

    model_cfg, vocab_size = cfg.model, cfg.tokenizer_vocab
    if vocab_size is None:
        raise ValueError("state.build: the run's vocabulary is unknown; pass resolve(cfg, vocab)")
    mesh, rules = make_mesh(cfg.mesh, cfg.mesh_needs())
    init_step, start = None, None
    if init_from is not None:
        if RunDir.is_run(init_from):  # a tjx run's newest checkpoint (SFT before DPO), checked
            params, init_step = init_runs.load_run(cfg.seed, model_cfg, init_from)
            start = Start(params)
        else:  # the architecture from the checkpoint; how to train it from the config
            how = {k: nn.setting_value(model_cfg, k) for k in nn.TRAINING_FIELDS}
            with keyed("--init-from", OSError, ValueError):
                model, _ = nn.load_hf(init_from, **how)
            model_cfg = model.config  # its own attention settings (position) under the split
            check_context(model_cfg, cfg.data.seq_len, parallel.context_ways(mesh))
            if vocab_size > model_cfg.vocab_size:
                raise ConfigError(
                    f"--init-from: the tokenizer's {vocab_size} ids do not fit the checkpoint's "
                    f"vocab_size {model_cfg.vocab_size}; set data.tokenizer to the checkpoint's "
                    "tokenizer (its folder)"
                )
            graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
            start = Start(params, graphdef, rest)
        start = start.placed(mesh, rules)
    parts = born(cfg, mesh, rules, start)
    # Any leaf left off the mesh replicated over it: one device set (none is, out of `born`).
    state = parallel.on_mesh(parts.state, mesh)
    num_params = sum(int(x.size) for x in jax.tree.leaves(state.params))
    split = parallel.context_parallel(mesh, rules, cfg.mesh)  # None unless mesh.context > 1
    experts = parallel.expert_parallel(mesh, rules) if cfg.model.moe.num_experts else None
    return Setup(
        mesh,
        rules,
        model_cfg,
        parts.graphdef,
        parts.rest,
        parts.tx,
        state,
        num_params,
        cfg,
        split=split,
        experts=experts,
        init_step=init_step,
        specs=parts.specs,
    )


#: The mesh axes a parameter can be split over (the `data` axis only splits batches).
PARAM_AXES = ("fsdp", "tensor", "expert", "context", "pipeline")


def whole_params(cfg: StepConfig) -> bool:
    """Each parameter is whole on every device: no mesh axis that splits parameters is larger
    than one (-1, "the rest of the devices", may be). Then the optimizer may run over flat
    buffers (tjx.optim's ``flat_update``) without gathering anything."""
    return all(getattr(cfg.mesh, axis) == 1 for axis in PARAM_AXES)


def flat_update(cfg: StepConfig) -> bool:
    """The run's optimizer runs over flat buffers (tjx.optim's ``flat_update`` on this mesh)."""

    return optim.uses_flat_update(cfg.optimizer, whole_params=whole_params(cfg))


def flat_params(cfg: StepConfig) -> bool:
    """The train state holds the params as the flat optimizer's buffers (tjx.optim's
    `FlatParams`): whenever the optimizer runs flat (`flat_update`), but for LoRA (only the
    adapters are in its buffers), a sigmoid router's bias (moved after the update, per leaf) and
    a step built for a TPU.

    The flat buffers save one kernel launch a parameter (``p + u``), a GPU's cost: gpt2_small's
    H100 step 1,054 → 804 launches, 0.5 ms faster measured on an H200. XLA's TPU compile of the
    same state needs more memory (llama_small on a v5e: 14.67 → 15.79 GiB compiled peak), with
    no launches to save, so a TPU keeps its params per leaf. The step's kernels are chosen for
    the same target (`tjx.kernels.current_target`: the device, or ``--plan``'s)."""
    balanced = cfg.model.moe.num_experts > 0 and cfg.model.moe.router == "sigmoid"
    on_tpu = kernels.current_target().platform == "tpu"
    return flat_update(cfg) and not cfg.use_lora and not balanced and not on_tpu


def other_layout(setup: Setup) -> tuple[TrainState, Callable[[TrainState], TrainState]] | None:
    """For a checkpoint whose optimizer state is laid out the other way (flat buffers or per
    leaf, tjx.optim's ``flat_update``: it follows the mesh, and a run may move between meshes):
    a state to restore it onto, and ``convert(restored) -> restored`` in this run's layout.
    None: the optimizer has one layout only.

    The other layout's state is abstract (shapes and shardings) for the restore to create; flat
    buffers on a mesh that splits the parameters are whole on each device until converted."""

    cfg, params = setup.step_config, setup.state.param_tree()
    oc = cfg.optimizer
    if oc.name not in optim.FLAT_OPTIMIZERS:
        return None
    other_cfg = dataclasses.replace(oc, flat_update="off" if flat_update(cfg) else "on")
    tx = optim.build_optimizer(
        other_cfg, schedule=cfg.learning_rate, axes=setup.specs, whole_params=True
    )
    trainable = optim.adapter_mask(params) if cfg.use_lora else None
    if trainable is not None:
        tx = optim.only_trainable(tx, trainable)
    mine = setup.state.opt_state
    # Shapes and shardings only: the restore creates the arrays (no second optimizer state).
    abstract = jax.eval_shape(tx.init, params)
    where = parallel.state_shardings(abstract, setup.mesh, setup.rules, param_specs=setup.specs)
    other = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, where
    )
    relayout = functools.partial(optim.relayout_state, oc, axes=setup.specs, trainable=trainable)
    placed = jax.jit(relayout, out_shardings=jax.tree.map(lambda x: x.sharding, mine))

    def convert(restored: TrainState) -> TrainState:
        opt_state = placed(restored.opt_state, restored.param_tree(), mine)
        return dataclasses.replace(restored, opt_state=opt_state)

    return dataclasses.replace(setup.state, opt_state=other), convert


def train_state(cfg: StepConfig, model: nnx.Module) -> TrainParts:
    """The parts of ``model`` the step reads and its `TrainState`, made from the model's arrays:
    traced inside `born`'s program, or abstract for a model of ``jax.ShapeDtypeStruct`` leaves
    (`abstract_state`'s ``nnx.eval_shape``)."""

    graphdef, params_state, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    params = nnx.to_pure_dict(params_state)
    # The params' logical axes: the weight-decay mask and Muon's matrices are read from them, and
    # optimizer slots that mirror the params (mu, nu, ...) are sharded like them (ZeRO under FSDP).
    specs = nnx.to_pure_dict(nnx.get_partition_spec(params_state))
    rate, whole = cfg.learning_rate, whole_params(cfg)  # the schedule over train.steps
    tx = optim.build_optimizer(cfg.optimizer, schedule=rate, axes=specs, whole_params=whole)
    if cfg.use_lora:  # over the adapters only: the base holds no optimizer state, gets no update
        tx = optim.only_trainable(tx, optim.adapter_mask(params))
    abstract = all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))

    def make(p: chex.ArrayTree) -> tuple[optax.OptState, jax.Array]:
        return tx.init(p), jnp.zeros((), jnp.int32)

    opt_state, step = jax.eval_shape(make, params) if abstract else make(params)
    # Delayed float8 scaling's scales and histories (tjx.nn's Fp8Meta, in ``rest``): state the
    # step advances, so the train state carries (and a checkpoint holds) it; None without it.
    _, fp8 = nn.split_fp8_meta(rest)
    state = TrainState(opt_state=opt_state, params=params, step=step, fp8=fp8)
    # DPO (and GRPO with β > 0) without LoRA: the starting params, frozen, as the reference
    needed = dpo.needs_frozen_reference(cfg.data, cfg.grpo, use_lora=cfg.use_lora)
    state = dpo.with_reference(state, needed=needed, copy=not abstract)
    if flat_params(cfg):  # the optimizer's own buffers: one p + u a buffer (tjx.optim.FlatParams)
        layout = optim.flat_layout(cfg.optimizer, params, axes=specs)
        state = dataclasses.replace(state, params=optim.FlatParams.of(params, layout))
    return TrainParts(graphdef, rest, tx, state, specs)


def abstract_state(cfg: StepConfig) -> TrainParts:
    """`train_state` of ``cfg``'s model (LoRA adapters included) with no parameter created."""
    return train_state(cfg, nnx.eval_shape(lambda: run_model(cfg)))
