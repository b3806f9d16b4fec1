"""The trainer's config: one object per run (`Config`), read once from plain data (`read_config`).

Its package sections ARE the packages' config objects (tjx.nn's class of ``model.kind``, ...).
The model's vocabulary is a placeholder until the tokenizer's is known (`resolve`); a stage that
changes a setting (the kernel that compiled, full remat) replaces it (`Config.with_model`).
``config.yaml`` is `Config.to_dict`. Every problem is one `ConfigError` naming the key path.
"""

# `setting()` returns dataclasses.field objects (with validation metadata).
# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, is_dataclass
from typing import Any, TypedDict, TypeVar

import yaml  # type: ignore[import-untyped]

from tjx import data, parallel
from tjx.core.config import ConfigError, check_unchanged, keyed, reworded
from tjx.core.lazy import lazy_imports
from trainer.config.grpo_settings import GrpoRollout, is_grpo
from trainer.config.schema import PACKAGE_SECTIONS, schema_of, section_class, setting
from trainer.config.seams import ConfigData
from trainer.config.sections import (
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    LoggingConfig,
    SamplingConfig,
    TrainConfig,
)

# The packages load jax, which the command line must not wait for. The annotations name their
# classes through these modules (``nn.TransformerConfig``): the schema evaluates them when it reads
# a config, by when tjx.nn is loaded anyway; it takes a package section's class from
# trainer.config.schema (``section=``).
with lazy_imports(globals()):
    import optax

    from tjx import nn, optim

_C = TypeVar("_C", "Config", "StepConfig")

#: The vocabulary the model holds until the tokenizer's is known: no rule of tjx.nn depends on it.
UNKNOWN_VOCAB = 2


@dataclass(frozen=True)
class MeshNeeds:
    """What a run asks of its mesh besides the mesh section (`Config.mesh_needs`;
    `trainer.step.state.make_mesh` checks it): the numbers each split must divide, and the model
    only where the mesh section may split it."""

    #: Rows per step and per evaluation batch, each by the keys an error names it with.
    batches: Mapping[str, int]
    #: Sequences per micro-step (``data.batch_size // optimizer.accumulation_steps``): what a
    #: pipeline cuts into microbatches.
    step_batch: int
    #: ``model.moe.num_experts`` (0: a model without experts), which the ``expert`` axis divides.
    num_experts: int
    #: ``data.seq_len``, which a split sequence (``mesh.context``) divides.
    seq_len: int
    #: The model, for its rules of a pipeline or a split sequence (tjx.nn's); None when
    #: ``mesh.pipeline`` and ``mesh.context`` are both 1: no split of the model to check.
    model: nn.TransformerConfig | None = None
    #: ``grpo.sampler_devices`` of a run that overlaps its rollouts (``grpo.overlap``): the
    #: devices, the last ones, the trainer's mesh leaves to the sampler (0: it takes them all).
    sampler_devices: int = 0


class _SectionViews:
    """What `Config` and `StepConfig` both read from their sections: the model's objective, a
    classifier's images and what the mesh must split."""

    # The dataclasses' fields these read (each class declares its own).
    model: nn.TransformerConfig
    data: DataConfig
    optimizer: optim.OptimizerConfig
    mesh: parallel.MeshConfig
    eval: EvalConfig
    rollout: GrpoRollout

    @property
    def objective(self) -> nn.Objective:
        """tjx.nn's `Objective` of the model kind: what a step trains and counts."""
        return nn.objective_of(type(self.model))

    @property
    def task(self) -> str:
        """The objective's name: "lm" (decoders), "mlm" (BERT), "classify" (ViT) or "seq2seq"."""
        return str(self.objective.name)

    @property
    def image_shape(self) -> dict[str, int]:
        """The images a classifier's data is prepared as (``image_size``, ``num_channels``); none
        for a model of text."""
        if self.task != "classify":
            return {}
        # A classifier's model is a ViTConfig (the schema's kind), which the command line may not
        # import to narrow the type: tjx.nn loads jax.
        m = self.model
        return {"image_size": m.image_size, "num_channels": m.num_channels}  # type: ignore[attr-defined]

    def mesh_needs(self) -> MeshNeeds:
        """What the run's mesh must split (`MeshNeeds`), with the messages' key names."""
        batch, steps = self.data.batch_size, self.optimizer.accumulation_steps
        per_step = f"data.batch_size / optimizer.accumulation_steps ({batch} / {steps})"
        rows = self.data.batch_rows  # a preference pair is two rows
        splits_model = self.mesh.pipeline != 1 or self.mesh.context != 1  # -1 may be > 1
        return MeshNeeds(
            batches={per_step: rows(batch) // steps, "eval.batch_size": rows(self.eval.batch_size)},
            step_batch=batch // steps,
            num_experts=self.model.moe.num_experts,
            seq_len=self.data.seq_len,
            model=self.model if splits_model else None,
            sampler_devices=self.rollout.sampler_devices if is_grpo(self.data) else 0,
        )


@dataclass(frozen=True)
class Config(_SectionViews):
    """Everything one training run needs (made by `read_config`)."""

    name: str = setting(
        "custom", help="the run's name (the default run dir is runs/<name>)", resumable=True
    )
    model: nn.TransformerConfig = setting(
        None, section="model", help="the tjx.nn config of model.kind"
    )
    data: DataConfig = setting(DataConfig, factory=True)
    optimizer: optim.OptimizerConfig = setting(
        None, section="optimizer", help="tjx.optim's OptimizerConfig"
    )
    train: TrainConfig = setting(TrainConfig, factory=True)
    mesh: parallel.MeshConfig = setting(None, section="mesh", help="tjx.parallel's MeshConfig")
    lora: nn.LoraConfig = setting(
        None, section="lora", help="tjx.nn's LoraConfig (with lora.enabled)"
    )
    preference: nn.PreferenceConfig = setting(
        None, section="preference", help="tjx.nn's PreferenceConfig (DPO)"
    )
    grpo: nn.GrpoConfig = setting(
        None, section="grpo", help="tjx.nn's GrpoConfig (GRPO's loss) and the rollout's keys"
    )
    checkpoint: CheckpointConfig = setting(CheckpointConfig, factory=True, resumable=True)
    logging: LoggingConfig = setting(LoggingConfig, factory=True, resumable=True)
    eval: EvalConfig = setting(EvalConfig, factory=True, resumable=True)
    sampling: SamplingConfig = setting(SamplingConfig, factory=True, resumable=True)
    #: ``model.vocab_size`` as the config sets it (None: the tokenizer's, once `resolve` knows it).
    vocab_size: int | None = setting(None, key=False)
    #: The tokenizer's vocabulary (`resolve`); None before the data is prepared.
    tokenizer_vocab: int | None = setting(None, key=False)
    #: ``lora.enabled``: only the adapters of ``lora`` train (tjx.nn.add_lora).
    use_lora: bool = setting(False, key=False)
    #: The ``grpo`` section's own keys: how GRPO samples and scores (trainer.config.grpo_settings).
    rollout: GrpoRollout = setting(GrpoRollout, factory=True, key=False)

    @property
    def kind(self) -> str:
        """``model.kind``: the key of tjx.nn.MODEL_KINDS holding the model's class."""
        return next(k for k, cls in nn.MODEL_KINDS.items() if type(self.model) is cls)

    def to_dict(self) -> ConfigData:
        """Plain data (YAML-safe) of every key: what ``config.yaml`` saves and a resume compares."""
        own = {"kind": self.kind, "vocab_size": self.vocab_size, "enabled": self.use_lora}
        own |= dataclasses.asdict(self.rollout)
        out = {k: getattr(self, k) for k in SCHEMA.keys(Config, "", self.kind)}
        return {k: SCHEMA.write(v, k, own) if is_dataclass(v) else v for k, v in out.items()}

    def to_yaml(self) -> str:
        """`to_dict` as YAML text in the schema's key order, as users read and write configs:
        ``config.yaml`` and ``--print-config``."""
        return str(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def with_model(self, **changes: Any) -> Config:
        """The config with model settings ``changes`` (``remat="full"``, ``attention_impl=...``)."""
        return _with_model(self, changes)

    def with_step(self, step: StepConfig) -> Config:
        """The config with the model and optimizer settings of ``step`` (`step_config` of this
        config, after the kernel choice and the memory fit changed them)."""
        return dataclasses.replace(self, model=step.model, optimizer=step.optimizer)


#: The model settings that name kernels, at XLA: a model built on no device (its abstract state,
#: whose shapes no kernel changes) is refused nothing a fused kernel needs a GPU for.
XLA_KERNELS: dict[str, str] = {"attention_impl": "xla", "norm.impl": "xla", "mlp.impl": "xla"}
#: Model settings the attention kernels do not read: a `StepConfig` changed only in these keeps
#: its resolved ``attention`` (`StepConfig.with_model`).
KERNEL_BLIND = frozenset({"remat"})


class HeadSettings(TypedDict):
    """The vocabulary head's loss settings, as tjx.nn's objectives take them."""

    #: ``train.chunked_ce``: the fused chunked cross-entropy (no [b, s, V] logits).
    chunked: bool
    #: ``train.ce_chunk_size``: tokens per chunk (None: from the shape).
    chunk_size: int | None
    #: ``train.z_loss``: the weight of the log-partition penalty.
    z_loss: float


@dataclass(frozen=True)
class StepConfig(_SectionViews):
    """What a run's compiled steps read of its config (`step_config`): the model, the optimizer
    with its learning-rate schedule built over the run, the data's shapes, the mesh, the loss
    head's settings and the seed; not how long the run is, how often it logs or where it writes.
    The kernel choice, the memory fit, the train state and the steps take this, not `Config`."""

    model: nn.TransformerConfig
    data: DataConfig
    optimizer: optim.OptimizerConfig
    mesh: parallel.MeshConfig
    lora: nn.LoraConfig
    preference: nn.PreferenceConfig
    #: GRPO's loss (tjx.nn's) and rollout (``data.format: prompts``).
    grpo: nn.GrpoConfig
    rollout: GrpoRollout
    #: The held-out step's batch and top-k accuracies.
    eval: EvalConfig
    #: ``lora.enabled``: only the adapters of ``lora`` train.
    use_lora: bool
    #: The tokenizer's vocabulary (`resolve`).
    tokenizer_vocab: int | None
    #: ``train.seed``: initial weights and dropout keys.
    seed: int
    #: ``train.mlm_probability``: BERT's share of masked tokens.
    mlm_probability: float
    #: The vocabulary head's loss settings (``train.chunked_ce``, ``ce_chunk_size``, ``z_loss``).
    head_settings: HeadSettings
    #: ``train.fit_memory``: the memory fit may switch on full remat.
    fit_memory: bool
    #: ``step -> learning rate``: tjx.optim's `build_schedule` of ``optimizer.schedule`` over
    #: ``train.steps``, built once (`step_config`) for every optimizer the run builds.
    learning_rate: optax.Schedule
    #: The model's attention kernels, resolved once by the kernel choice (tjx.nn's
    #: `resolve_attention`, `trainer.plan.memory_fit.choose_attention`): every model the run builds
    #: from this config runs them (`trainer.step.state.run_model`). None: each model resolves its
    #: own. Not part of the step's identity: they are what ``model`` resolves to.
    attention: nn.ModelAttention | None = dataclasses.field(default=None, compare=False, repr=False)

    def with_model(self, **changes: Any) -> StepConfig:
        """With model settings ``changes`` (as `Config.with_model`); its resolved `attention`
        kept when only settings the kernels do not read change (`KERNEL_BLIND`: the memory
        fit's full remat), dropped otherwise (another kernel named: that model resolves its
        own)."""
        changed = _with_model(self, changes)
        if changed.attention is None or set(changes) <= KERNEL_BLIND:
            return changed
        return dataclasses.replace(changed, attention=None)


def step_config(cfg: Config) -> StepConfig:
    """The step's view of a resolved ``cfg`` (`StepConfig`), its learning-rate schedule built
    here, once: the one place the run's length meets the optimizer."""
    schedule = cfg.optimizer.resolved().schedule
    assert schedule is not None  # read_config gives every run one
    t = cfg.train
    return StepConfig(
        model=cfg.model,
        data=cfg.data,
        optimizer=cfg.optimizer,
        mesh=cfg.mesh,
        lora=cfg.lora,
        preference=cfg.preference,
        grpo=cfg.grpo,
        rollout=cfg.rollout,
        eval=cfg.eval,
        use_lora=cfg.use_lora,
        tokenizer_vocab=cfg.tokenizer_vocab,
        seed=t.seed,
        mlm_probability=t.mlm_probability,
        head_settings=HeadSettings(
            chunked=t.chunked_ce, chunk_size=t.ce_chunk_size, z_loss=t.z_loss
        ),
        fit_memory=t.fit_memory,
        learning_rate=optim.build_schedule(schedule, t.steps),
    )


def _with_model(cfg: _C, changes: Mapping[str, Any]) -> _C:
    """``cfg`` (a `Config` or `StepConfig`) with model settings ``changes`` (a section's by its
    dotted key, ``"norm.impl"``); itself if none changes a value (the model config's own
    equality says so: a kept ``cfg`` keeps what was resolved for it)."""
    with reworded(_words(type(cfg.model), "model")):
        model = cfg.model.replace(**changes)
    return cfg if model == cfg.model else dataclasses.replace(cfg, model=model)


SCHEMA = schema_of(Config)


def resolve(cfg: Config, vocab_size: int) -> Config:
    """``cfg`` with the tokenizer's ``vocab_size``: the model's, unless ``model.vocab_size`` is
    set (BERT's [MASK] id added; a kind that reads no tokens, ViT, keeps none)."""
    cfg = dataclasses.replace(cfg, tokenizer_vocab=vocab_size)
    if cfg.vocab_size is None and "vocab_size" not in type(cfg.model).unused_fields:
        return cfg.with_model(vocab_size=vocab_size + int(cfg.objective.extra_vocab))
    return cfg


def trains_multi_steps(data: ConfigData) -> bool:
    """Whether config ``data`` asks for ``optimizer.accumulation_mode=multi_steps`` with
    ``optimizer.accumulation_steps`` over 1 (`for_new_run`)."""
    optimizer = data.get("optimizer") if isinstance(data, dict) else None
    if not isinstance(optimizer, dict) or optimizer.get("accumulation_mode") != "multi_steps":
        return False
    steps = optimizer.get("accumulation_steps", 1)  # not a number: read_config says so
    return isinstance(steps, int) and not isinstance(steps, bool) and steps > 1


def for_new_run(data: ConfigData) -> tuple[ConfigData, list[str]]:
    """Config ``data`` as a run that starts today reads it, and a line for each setting read
    otherwise than an earlier trainer did, to print.

    ``optimizer.accumulation_mode=multi_steps`` with k micro-batches is read as ``scan``. Under
    the trainer it wrapped the chain in ``optax.MultiSteps`` while each step already summed its k
    micro-batches: one update came of k steps (k × ``data.batch_size`` sequences), and the
    schedule, which counts updates, stopped at 1/k of its length at ``train.steps``, against
    what ``train.steps`` (optimizer steps) and ``data.batch_size`` (sequences per optimizer
    step) say. ``scan`` makes each step one update of ``data.batch_size`` sequences in the same
    k micro-batches (the same memory). A run started with it resumes as it trained
    (`trainer.loop.resume.as_trained`)."""
    if not trains_multi_steps(data):
        return data, []
    optimizer = data["optimizer"]
    k = optimizer["accumulation_steps"]
    line = (
        "optimizer.accumulation_mode=multi_steps is read as scan: under the trainer it made one "
        f"update of every {k} steps ({k} × data.batch_size sequences) while train.steps and the "
        f"schedule count updates, so the schedule stopped at 1/{k} of its length; scan makes each "
        f"step one update of data.batch_size in {k} micro-batches, in the same memory (a run "
        "started with multi_steps resumes as it trained)"
    )
    return {**data, "optimizer": {**optimizer, "accumulation_mode": "scan"}}, [line]


def read_config(data: object) -> Config:
    """The validated config of plain data (files migrated, ``--set`` applied): every key read
    as its type (the first problem in the data's order), the trainer's rules, the packages' own
    as they build their sections (messages in the trainer's keys), then the rules between
    sections. Raises `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {data!r}")
    kind = SCHEMA.kind_of(data)
    read, known = SCHEMA.values(Config, data, "", kind), SCHEMA.keys(Config, "", kind)
    own = {k: build(known[k][0], read.pop(k, {}), k) for k in _OWN_SECTIONS}
    _check_own(own, section_class("model", kind))
    vocab = read.get("model", {}).get("vocab_size")
    model = _model(section_class("model", kind), read.get("model", {}), vocab)
    # A run always follows a schedule (ScheduleConfig's defaults where the config sets none).
    optimizer = {**read.get("optimizer", {})}
    optimizer["schedule"] = optimizer.get("schedule", {})
    with reworded(_words(section_class("optimizer"), "optimizer")):
        optimizer = build(section_class("optimizer"), optimizer, "optimizer")
        p = model.precision
        optim.check_precision(optimizer, param_dtype=p.param_dtype, compute_dtype=p.compute_dtype)
        if optimizer.schedule is not None:  # its warmup and decay fit in train.steps
            schedule = optim.schedule_over(optimizer.schedule, own["train"].steps)
            optimizer = dataclasses.replace(optimizer, schedule=schedule)
    mesh = build(section_class("mesh"), read.get("mesh", {}), "mesh")
    lora_read = read.get("lora", {})
    use_lora = bool(lora_read.pop("enabled", False))
    lora = _package_section("lora", lora_read)
    if lora_read and not use_lora:  # a setting changed while LoRA is off would do nothing
        why = "LoRA is off; set lora.enabled=true to train adapters, or drop the lora settings"
        check_unchanged(lora, lora_read, "lora", why)
    preference = _package_section("preference", read.get("preference", {}))
    grpo_read = {**read.get("grpo", {})}
    grpo_given = sorted(grpo_read)
    rollout = GrpoRollout(**{k: grpo_read.pop(k) for k in _ROLLOUT_KEYS if k in grpo_read})
    grpo = _package_section("grpo", grpo_read)
    more = {"lora": lora, "use_lora": use_lora, "preference": preference, "vocab_size": vocab}
    more |= {"grpo": grpo, "rollout": rollout}
    name = str(read.get("name", Config.name))
    cfg = Config(name, model, optimizer=optimizer, mesh=mesh, **own, **more)
    _check_across(cfg, sorted(read.get("preference", {})))
    _check_grpo(cfg, grpo_given)
    return cfg


def _package_section(name: str, read: ConfigData) -> Any:
    """Package section ``name`` (LoRA's, DPO's, GRPO's) built from its settings ``read``; with
    none, its class's ``DEFAULTS``, built once as tjx.nn loads: a run that sets none of a
    section's keys builds nothing of it."""
    cls = section_class(name)
    return build(cls, read, name) if read else cls.DEFAULTS  # type: ignore[attr-defined]


#: The ``grpo`` section's own keys (the rollout's), the others are tjx.nn's `GrpoConfig`.
_ROLLOUT_KEYS = tuple(f.name for f in dataclasses.fields(GrpoRollout))


def _check_grpo(cfg: Config, given: list[str]) -> None:
    """GRPO's rules (trainer/step/grpo.py): prompt data and a ``grpo`` section go together, and what
    the loop reads must fit (groups in the batch, checkpoints at rollout boundaries, the
    completions in the model's context, rewards that exist)."""
    d, r, t = cfg.data, cfg.rollout, cfg.train
    if d.format != "prompts":
        if given:  # a saved config lists every key, at its default
            why = "applies to prompt data only (GRPO); set data.format=prompts or drop the grpo"
            own = [k for k in given if k in _ROLLOUT_KEYS]
            loss = [k for k in given if k not in _ROLLOUT_KEYS]
            check_unchanged(cfg.grpo, loss, "grpo", f"{why} settings")
            check_unchanged(r, own, "grpo", f"{why} settings")
        return
    names = ", ".join(sorted(data.REWARDS))
    _require(
        bool(r.rewards),
        "grpo.rewards: data.format=prompts trains with GRPO, which needs at least one reward; "
        f"e.g. grpo.rewards=[exact_answer] (the rewards are: {names})",
    )
    for reward in r.rewards:
        _require(
            reward in data.REWARDS,
            f"grpo.rewards: unknown reward {reward!r}; the rewards are: {names}",
        )
    with keyed("grpo.reward_weights", data.RewardError):  # tjx.data's: one finite weight each
        data.check_reward_weights(r.rewards, r.reward_weights)
    _require(
        d.batch_size % r.group_size == 0,
        f"data.batch_size: {d.batch_size} completions per step must be a multiple of "
        f"grpo.group_size ({r.group_size}); each prompt's group is in one batch",
    )
    _require(
        t.checkpoint_every % r.iterations == 0,
        f"train.checkpoint_every: {t.checkpoint_every} must be a multiple of grpo.iterations "
        f"({r.iterations}): a checkpoint inside a rollout's steps could not replay it",
    )
    _require(
        r.overlap == 0 or r.sampler_devices > 0,
        "grpo.overlap: 1 samples on devices of its own while the update runs; set "
        "grpo.sampler_devices=N (the run's last N devices sample, the others train)",
    )
    _require(
        r.overlap > 0 or r.sampler_devices == 0,
        f"grpo.sampler_devices: {r.sampler_devices} sampler devices without grpo.overlap; set "
        "grpo.overlap=1, or grpo.sampler_devices=0 (sequential rollouts use the trainer's mesh)",
    )
    _require(
        r.sampler_devices == 0 or d.batch_size % r.sampler_devices == 0,
        f"grpo.sampler_devices: {r.sampler_devices} sampler devices split the rollout's "
        f"{d.batch_size} completions (data.batch_size) by rows, which they do not divide; set "
        "data.batch_size to a multiple of grpo.sampler_devices, or another grpo.sampler_devices",
    )
    _require(
        t.stop_at is None or t.stop_at % r.iterations == 0,
        f"train.stop_at: {t.stop_at} must be a multiple of grpo.iterations ({r.iterations})",
    )
    _require(
        cfg.model.max_seq_len >= d.seq_len + r.max_new_tokens,
        f"grpo.max_new_tokens: data.seq_len ({d.seq_len}, the prompts) + {r.max_new_tokens} "
        f"exceeds model.max_seq_len ({cfg.model.max_seq_len}); lower either or raise "
        "model.max_seq_len",
    )
    _require(
        cfg.optimizer.accumulation_steps == 1 or cfg.grpo.top_entropy_quantile == 1.0,
        f"optimizer.accumulation_steps: {cfg.optimizer.accumulation_steps} micro-batches cannot "
        f"take grpo.top_entropy_quantile={cfg.grpo.top_entropy_quantile}'s entropy quantile of "
        "the whole rollout batch; set optimizer.accumulation_steps=1 or "
        "grpo.top_entropy_quantile=1",
    )
    _require(
        cfg.mesh.pipeline == 1 and cfg.mesh.context == 1,
        "mesh.pipeline/mesh.context: GRPO's rollouts run the whole model on each device; set "
        "both to 1",
    )


#: The trainer's own sections (the others are the packages').
_OWN_SECTIONS = ("data", "train", "checkpoint", "logging", "eval", "sampling")


def _model(cls: type, read: ConfigData, vocab: int | None) -> nn.TransformerConfig:
    """The tjx.nn config of ``cls`` with settings ``read`` and a vocabulary (the set one, else
    the placeholder; none for a kind that reads no tokens)."""
    fields = {k: v for k, v in read.items() if k not in ("kind", "vocab_size")}
    unused = cls.unused_fields  # type: ignore[attr-defined]
    if "vocab_size" not in unused:
        fields["vocab_size"] = vocab or UNKNOWN_VOCAB
    elif vocab is not None:
        raise ConfigError(f"model.vocab_size: {unused['vocab_size']}; set it to null")
    return build(cls, fields, "model")


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_own(own: dict[str, Any], model_cls: type) -> None:
    """The rules across the trainer's own sections (``data``'s are tjx.data's)."""
    task = nn.objective_of(model_cls).name
    with keyed(None):  # before anything is prepared
        data.check_data_config(own["data"], task, decoders="a decoder (model.kind gpt2 or llama)")
    _require(
        bool(own["sampling"].prompts) or task != "lm",
        "sampling.prompts: give at least one prompt (a language model writes samples at the end "
        'of training), e.g. sampling.prompts=["\\n"]',
    )
    _require(
        own["checkpoint"].keep_best is None or own["train"].eval_every > 0,
        "checkpoint.keep_best: needs train.eval_every > 0 (best = lowest validation loss)",
    )


def _check_across(cfg: Config, preference: list[str]) -> None:
    """The rules between the trainer's sections and the packages' configs; DPO's
    (trainer/step/dpo.py): a ``preference`` setting given (off its default) needs preference data,
    which refuses what its loss cannot apply (tjx.nn's `check_preference_run`)."""
    m, d, o, mesh, t = cfg.model, cfg.data, cfg.optimizer, cfg.mesh, cfg.train
    _require(
        cfg.task == "classify" or m.max_seq_len >= d.seq_len,
        f"data.seq_len: {d.seq_len} exceeds model.max_seq_len ({m.max_seq_len})",
    )
    _require(
        d.batch_size % o.accumulation_steps == 0,
        f"optimizer.accumulation_steps: {o.accumulation_steps} must divide data.batch_size "
        f"({d.batch_size})",
    )
    if m.moe.num_experts and m.moe.capacity_factor is not None:
        # Capacity is per sequence: a device holding part of each sequence would size and fill
        # the slots of its part, so the dropped tokens would depend on the context split.
        _require(
            mesh.context == 1,
            f"model.moe.capacity_factor: MoE capacity is per sequence, which mesh.context "
            f"({mesh.context}) splits; set model.moe.capacity_factor=null (dropless) or "
            "mesh.context=1",
        )
    if mesh.strategy in ("tp", "fsdp_tp", "dp_tp"):
        _require(
            m.num_heads % mesh.tensor == 0,
            f"mesh.tensor: {mesh.tensor} must divide model.num_heads ({m.num_heads})",
        )
    if m.precision.fp8 and m.precision.fp8_recipe == "delayed":
        _check_delayed_fp8(cfg)
    if m.precision.fp8_lm_head:
        _check_fp8_lm_head(cfg)
    if d.format == "preference":
        with keyed(None):
            nn.check_preference_run(
                m, pipeline=mesh.pipeline, context=mesh.context, z_loss=t.z_loss
            )
    elif preference:  # a saved config lists every key, at its default
        why = "applies to preference pairs only; set data.format=preference or drop the preference"
        check_unchanged(cfg.preference, preference, "preference", f"{why} settings")


def _check_delayed_fp8(cfg: Config) -> None:
    """Delayed float8 scaling's state is advanced by the plain train step (trainer.step.train_step)
    from one forward and backward: refused where a step runs several (micro-batches: their amaxes
    would be averaged like gradients, not maxed) or another loss (a pipeline's, DPO's, GRPO's)."""
    key = "model.precision.fp8_recipe=delayed"
    o, mesh = cfg.optimizer, cfg.mesh
    _require(
        o.accumulation_steps == 1,
        f"{key}: one step records one amax per tensor, and optimizer.accumulation_steps "
        f"({o.accumulation_steps}) would average its micro-batches' amaxes; set "
        "optimizer.accumulation_steps=1 or fp8_recipe=current",
    )
    _require(
        mesh.pipeline == 1,
        f"{key}: a pipelined step (mesh.pipeline={mesh.pipeline}) does not carry the float8 "
        "state; set mesh.pipeline=1 or fp8_recipe=current",
    )
    _require(
        cfg.data.format not in ("preference", "prompts"),
        f"{key}: the {'DPO' if cfg.data.format == 'preference' else 'GRPO'} step does not carry "
        "the float8 state; use fp8_recipe=current",
    )


def _check_fp8_lm_head(cfg: Config) -> None:
    """The float8 LM head is the chunked token loss's (tjx.nn's `head_cross_entropy`): refused
    where the loss is unchunked or DPO's or GRPO's (those score through their own logits)."""
    key = "model.precision.fp8_lm_head=true"
    _require(
        cfg.train.chunked_ce,
        f"{key}: the float8 head is the chunked loss's; set train.chunked_ce=true or "
        "fp8_lm_head=false",
    )
    _require(
        cfg.data.format not in ("preference", "prompts"),
        f"{key}: the {'DPO' if cfg.data.format == 'preference' else 'GRPO'} loss scores its "
        "tokens through its own logits, not the float8 head; set fp8_lm_head=false",
    )


#: tjx.optim's `check_precision` names the model's dtypes by its arguments, and
#: `schedule_over` the run's length by its own (``total_steps``: ``train.steps``).
_PRECISION_WORDS = {
    f"{k}=": f"model.precision.{k}=" for k in ("param_dtype", "compute_dtype", "logits_dtype")
} | {"total_steps=": "train.steps="}


def build(cls: type, checked: ConfigData, path: str) -> Any:
    """``cls`` from `tjx.core.config.Schema.values`' output (nested sections built first); a
    package's ``ValueError`` is a `ConfigError` in the config's keys (`_words`)."""
    return SCHEMA.build(cls, checked, path, _words(cls, path))


def _words(cls: type, path: str) -> dict[str, str]:
    """How package class ``cls``'s messages name its fields (``GPT2Config.d_model``), as the
    config's keys (`tjx.core.config.Schema.words`); none for the trainer's own sections."""
    if path not in PACKAGE_SECTIONS:
        return {}
    return {**SCHEMA.words(cls, path), **(_PRECISION_WORDS if path == "optimizer" else {})}


def units_per_step(cfg: Config | StepConfig) -> int:
    """Tokens (or images) one global batch scores; the encoder-decoder's continued half."""
    rows = cfg.data.batch_rows(cfg.data.batch_size)  # both rows of each preference pair
    return rows * int(cfg.objective.units_per_window(cfg.data.seq_len))
