"""What a --resume may change: the rule (training-only keys) and the fact behind it (the train
state of both configs is the same tree of the same shapes and dtypes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
import yaml  # type: ignore[import-untyped]

import trainer.step.data_setup as data_setup
from tjx import ckpt, data, nn
from trainer.config.folder import RunDir
from trainer.config.schema import ConfigError
from trainer.config.settings import apply_overrides, load_config_data
from trainer.config.typed import read_config, resolve, step_config
from trainer.loop import resume
from trainer.plan.memory_fit import abstract_step

VOCAB = 257
SMALL = ["model.num_layers=2", "model.d_model=32", "model.num_heads=2", "model.mlp.dim=64"]


def _config(*extra: str) -> Any:
    return read_config(apply_overrides(load_config_data("tiny"), [*SMALL, *extra]))


def _state_signature(cfg: Any) -> Any:
    """(tree structure, [(shape, dtype)]) of the abstract train state: what a checkpoint holds."""
    _, state, _ = abstract_step(step_config(resolve(cfg, VOCAB)))
    leaves, treedef = jax.tree.flatten(state)
    return treedef, [(leaf.shape, leaf.dtype) for leaf in leaves]


# One new value for every training-only key that reaches the model or the optimizer (the others
# never reach the train state: logging, sampling, checkpoint cadence, mesh...).
TRAINING_ONLY_VALUES = [
    "model.attention_impl=xla",
    "model.remat=full",
    "model.precision.compute_dtype=bfloat16",
    "model.dropout=0.2",
    "model.attention.decode_topk=4",
    "optimizer.schedule.peak_lr=1e-4",
    "optimizer.b1=0.8",
    "optimizer.b2=0.9",
    "optimizer.eps=1e-6",
    "optimizer.weight_decay=0.0",
    "optimizer.clip_norm=null",
    "optimizer.accumulation_steps=2",
    "optimizer.schedule.name=wsd",
    "optimizer.schedule.warmup_steps=7",
    "optimizer.schedule.min_lr_ratio=0.5",
    "train.steps=5000",
    "train.chunked_ce=false",
    "train.z_loss=1e-4",
]

# A sample of the keys that must match, each of which really changes the state (so the test
# above would see a wrong entry in TRAINING_ONLY).
STATE_CHANGING = [
    "model.d_model=64",
    "model.num_layers=3",
    "model.mlp.dim=128",
    "model.max_seq_len=256",
    "model.tie_embeddings=false",
    "model.scan_layers=true",
    "model.precision.param_dtype=bfloat16",
    "model.vocab_size=300",
    "optimizer.name=lion",
    "optimizer.loss_scale=dynamic",
    "optimizer.skip_nonfinite=false",
]


@pytest.fixture(scope="module")
def base_signature() -> Any:
    return _state_signature(_config())


@pytest.mark.parametrize("override", TRAINING_ONLY_VALUES)
def test_training_only_keys_leave_the_state_alone(override, base_signature):
    key = override.split("=")[0]
    assert resume.is_training_only(key)
    assert _state_signature(_config(override)) == base_signature


@pytest.mark.parametrize("override", STATE_CHANGING)
def test_state_changing_keys_must_match(override, base_signature):
    key = override.split("=")[0]
    assert not resume.is_training_only(key)
    assert _state_signature(_config(override)) != base_signature


def test_the_optimizer_layout_may_change_though_the_state_it_holds_does(base_signature):
    """``optimizer.flat_update`` lays the same numbers out otherwise (flat buffers or per leaf;
    it follows the mesh): a resume may change it, and the trainer converts the restored state
    (trainer.loop.training's ``_restore``, tjx.optim's ``relayout_state``; test_train_pipeline moves
    a run between meshes)."""
    assert resume.is_training_only("optimizer.flat_update")
    assert _state_signature(_config("optimizer.flat_update=off")) != base_signature


@pytest.mark.parametrize(
    "key", ["data.batch_size", "data.seq_len", "data.source", "data.shuffle", "train.seed"]
)
def test_data_stream_keys_must_match(key):
    # They leave the parameters alone but move the loader's position into another stream.
    assert not resume.is_training_only(key)


def test_a_key_the_rule_does_not_know_must_match():
    assert not resume.is_training_only("model.some_future_field")
    assert resume.is_training_only("logging.sinks") and resume.is_training_only("mesh.data")
    assert not resume.is_training_only("train.steps_extra")  # a prefix of a name is not a match


def _saved_run(tmp_path, cfg):
    RunDir(tmp_path).create(cfg.to_dict())
    return tmp_path


def test_same_config_has_no_changes(tmp_path):
    cfg = _config()
    assert resume.check_resume(_saved_run(tmp_path, cfg), cfg.to_dict()) == {}


def test_training_only_changes_are_returned_and_described(tmp_path):
    run = _saved_run(tmp_path, _config())
    new = _config(
        "train.steps=900", "optimizer.lr=1e-4"
    ).to_dict()  # the old layout's name, migrated
    diff = resume.check_resume(run, new)
    # tiny's warmup is a share of the run: a longer run warms up longer, and says so
    assert diff == {
        "optimizer.schedule.peak_lr": (5e-3, 1e-4),
        "optimizer.schedule.warmup_steps": (50, 75),
        "train.steps": (600, 900),
    }
    line = resume.describe_changes(diff)
    assert "optimizer.schedule.peak_lr 0.005 → 0.0001" in line and "train.steps 600 → 900" in line


def test_a_run_saved_before_the_compilation_cache_key_resumes(tmp_path):
    """A config.yaml written before ``train.compilation_cache`` existed lacks the key; where the
    compiled programs are cached changes no number, so the resume goes on: at the default
    silently (the key is compared at its default), and naming a value set now."""
    saved = _config().to_dict()
    del saved["train"]["compilation_cache"]
    RunDir(tmp_path).create(saved)
    assert resume.check_resume(tmp_path, _config().to_dict()) == {}
    diff = resume.check_resume(tmp_path, _config("train.compilation_cache=/tmp/xla").to_dict())
    assert diff == {"train.compilation_cache": ("auto", "/tmp/xla")}


def test_a_model_change_is_refused_naming_every_key(tmp_path):
    run = _saved_run(tmp_path, _config())
    new = _config("model.d_model=64", "data.batch_size=8", "train.steps=900").to_dict()
    with pytest.raises(ConfigError) as err:
        resume.check_resume(run, new)
    text = str(err.value)
    assert "model.d_model 32 → 64" in text and "data.batch_size 16 → 8" in text
    assert "train.steps" not in text  # allowed changes are not the problem
    assert f"--config {run / 'config.yaml'}" in text


def test_missing_or_broken_saved_config(tmp_path):
    config = tmp_path / "config.yaml"
    with pytest.raises(ConfigError, match=rf"^--resume: '{config}' is missing, so what the"):
        resume.check_resume(tmp_path, _config().to_dict())
    config.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        resume.check_resume(tmp_path, _config().to_dict())
    assert f"'{config}' is not a readable run config (while parsing a flow sequence" in str(
        err.value
    )
    assert str(err.value).endswith("put the run's config back or train into a new --run-dir")
    config.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match=r"run config \(not a mapping: it holds a list\)"):
        resume.check_resume(tmp_path, _config().to_dict())


def test_null_optimizer_settings_compare_as_the_optimizers_own_values(tmp_path):
    """A run saved when b2 defaulted to 0.95 shows the real change, not ``0.95 → None``."""
    old = _config().to_dict()
    old["optimizer"].update(name="adamw", b2=0.95, eps=1e-8)  # eps 1e-8 is adamw's own
    old["optimizer"]["schedule"]["peak_lr"] = 1e-3
    run = _saved_run(tmp_path, read_config(old))
    sets = ("optimizer.schedule.peak_lr=null", "optimizer.b2=null", "optimizer.eps=null")
    diff = resume.check_resume(run, _config(*sets).to_dict())
    assert set(diff) == {"optimizer.schedule.peak_lr", "optimizer.b2"}  # eps: the same number
    line = resume.describe_changes(diff)
    assert "optimizer.b2 0.95 → 0.999 (adamw's default)" in line
    assert "optimizer.schedule.peak_lr 0.001 → 0.0003 (adamw's default)" in line
    assert resume.check_resume(run, read_config(old).to_dict()) == {}


def test_a_null_that_means_off_is_not_a_default(tmp_path):
    """``clip_norm: null`` turns clipping off: a change from 1.0, not the optimizer's value."""
    run = _saved_run(tmp_path, _config("optimizer.clip_norm=1.0"))
    diff = resume.check_resume(run, _config("optimizer.clip_norm=null").to_dict())
    assert diff == {"optimizer.clip_norm": (1.0, None)}


def test_a_null_switch_compares_as_the_optimizers_own(tmp_path):
    sgd = ("optimizer.name=sgd", "optimizer.schedule.peak_lr=0.01")
    run = _saved_run(tmp_path, _config(*sgd, "optimizer.nesterov=false"))
    assert resume.check_resume(run, _config(*sgd, "optimizer.nesterov=null").to_dict()) == {}
    diff = resume.check_resume(run, _config(*sgd, "optimizer.nesterov=true").to_dict())
    assert (
        resume.describe_changes(diff) == "resume: changed settings: optimizer.nesterov False → True"
    )


SAVED_OLD = Path(__file__).parent / "saved_old_layout"
#: #51's presets store their logits in bf16 (a setting a resume may change, and says it does).
LOGITS_SINCE_51 = {"llama_small", "gpt2_medium"}
#: Each a ``config.yaml`` the trainer wrote before its sections were the packages' configs (its
#: own copies of the sections, every key of every kind; commit 99dd4f4), and the command that
#: made it.
OLD_RUNS = [
    ("tiny.yaml", "tiny", []),
    ("vit_digits.yaml", "vit_digits", []),
    (
        "bert_tiny_sgd.yaml",
        "bert_tiny",
        ["optimizer.name=sgd", "optimizer.b1=null", "optimizer.b2=null", "optimizer.eps=null"],
    ),
]


@pytest.mark.parametrize(("saved", "preset", "sets"), OLD_RUNS)
def test_a_run_saved_in_the_old_layout_resumes_with_the_same_command(tmp_path, saved, preset, sets):
    """Its renamed keys (``model.compute_dtype``, ``optimizer.lr``) and the ViT-only keys it listed
    under every kind are migrated: the same command resumes with no change, and a real change is
    still named in today's keys."""
    RunDir(tmp_path).create(yaml.safe_load((SAVED_OLD / saved).read_text()))
    cfg = read_config(apply_overrides(load_config_data(preset), sets))
    assert resume.check_resume(tmp_path, cfg.to_dict()) == {}
    changed = read_config(apply_overrides(load_config_data(preset), [*sets, "train.steps=77"]))
    warmup = "optimizer.schedule.warmup_steps"  # a share of the run in today's presets
    assert set(resume.check_resume(tmp_path, changed.to_dict())) == {"train.steps", warmup}
    other = apply_overrides(
        load_config_data(preset), [*sets, "model.precision.param_dtype=bfloat16"]
    )
    with pytest.raises(ConfigError, match="model.precision.param_dtype 'float32' → 'bfloat16'"):
        resume.check_resume(tmp_path, read_config(other).to_dict())


SAVED_BEFORE_40 = Path(__file__).parent / "saved_before_40"


#: #39's presets unroll their layers where 2a808f8's scanned them (the checkpoint's parameter
#: layout): such a run resumes by saying so, and the bare command is refused naming the key.
SCANNED_BEFORE_39 = {"llama_small", "gpt2_medium"}


@pytest.mark.parametrize("preset", ["tiny", "llama_small", "gpt2_medium", "vit_digits"])
def test_a_config_yaml_saved_before_the_sections_were_objects_resumes_unchanged(tmp_path, preset):
    """Saved by 2a808f8 (``model.mlp_dim: 512``, ``peak_lr: 0.0003``, warmup in steps, where today
    writes null for a value that follows from the others and presets give warmup as a share):
    the same command resumes with no change; a real change is still named."""
    RunDir(tmp_path).create(yaml.safe_load((SAVED_BEFORE_40 / f"{preset}.yaml").read_text()))
    scan = ["model.scan_layers=true"] if preset in SCANNED_BEFORE_39 else []
    if preset in SCANNED_BEFORE_39:
        bare = read_config(load_config_data(preset)).to_dict()
        with pytest.raises(ConfigError, match=r"cannot continue with model\.scan_layers True"):
            resume.check_resume(tmp_path, bare)
    same = read_config(apply_overrides(load_config_data(preset), scan)).to_dict()
    logits = {"model.precision.logits_dtype": ("float32", "bfloat16")}
    assert resume.check_resume(tmp_path, same) == (logits if preset in LOGITS_SINCE_51 else {})
    sets = [*scan, "train.steps=6000", "model.mlp.dim=64"]
    new = read_config(apply_overrides(load_config_data(preset), sets)).to_dict()
    with pytest.raises(ConfigError, match=r"cannot continue with model\.mlp\.dim (None|\d+) → 64"):
        resume.check_resume(tmp_path, new)


def test_a_saved_float8_setting_its_run_never_read_resumes(tmp_path):
    """An earlier trainer saved float8 settings while ``model.precision.matmul`` was not fp8
    (today's refuses them in a new config): they did nothing, so the run resumes with today's
    command, which leaves them out."""
    saved = _config().to_dict()
    saved["model"]["precision"].update(fp8_scaling="rowwise", fp8_amax_history=1024)
    RunDir(tmp_path).create(saved)
    assert resume.check_resume(tmp_path, _config().to_dict()) == {}
    with pytest.raises(ConfigError, match="fp8_scaling='rowwise' has no effect"):
        _config("model.precision.fp8_scaling=rowwise")


#: A Hugging Face checkpoint of another shape than the command's preset (whose architecture
#: settings an --init-from start does not use: the checkpoint fixes them).
HF_SHAPE = dict(
    vocab_size=VOCAB,
    d_model=16,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    mlp=nn.MLPConfig(dim=24),
)


def _hf_start(tmp_path: Path, cfg: Any) -> Path:
    """A run directory as an ``--init-from`` of a Hugging Face folder leaves it: the command's
    config, the checkpoint's model (model.json) and the record of the start (init.json)."""
    from tjx import nn

    folder = RunDir(tmp_path)
    folder.create(cfg.to_dict())
    held = nn.LlamaConfig(**HF_SHAPE, max_seq_len=cfg.model.max_seq_len)
    folder.write_json(RunDir.MODEL_FILE, nn.config_to_dict(held))
    folder.write_init(str(tmp_path / "hf"), kind="hugging-face", step=None)
    return tmp_path


def test_a_hugging_face_start_resumes_again_and_again_with_the_same_command(tmp_path):
    """The first resume writes the checkpoint's architecture into config.yaml (what trains);
    the same command must resume after it too: both compare as trained (#71)."""
    from trainer.step import init_from

    cfg = _config("model.kind=llama")
    run = _hf_start(tmp_path, cfg)
    assert resume.check_resume(run, cfg.to_dict()) == {}  # the first resume
    resumed = init_from.resumed_from_checkpoint(cfg, run)  # what it trains, and writes
    assert resumed is not None and resumed.model.d_model == 16 != cfg.model.d_model
    RunDir(run).create(resumed.to_dict())
    assert resume.check_resume(run, cfg.to_dict()) == {}  # the second, as the first
    init_from.check_resumed_start(cfg, run)
    # How it trains may change as for any run; what its weights fix may not.
    diff = resume.check_resume(run, _config("model.kind=llama", "model.remat=full").to_dict())
    assert diff == {"model.remat": ("none", "full")}
    with pytest.raises(ConfigError) as err:
        init_from.check_resumed_start(_config("model.kind=llama", "model.qk_norm=true"), run)
    assert str(err.value) == (
        "--resume: the run started from a Hugging Face checkpoint, whose weights fix the "
        "architecture, so model.attention.qk_norm True cannot apply; leave those settings unset"
    )
    with pytest.raises(ConfigError, match="cannot continue with data.seq_len 128 → 64"):
        resume.check_resume(run, _config("model.kind=llama", "data.seq_len=64").to_dict())


def test_a_hugging_face_start_with_a_damaged_model_json_is_one_line(tmp_path):
    run = _hf_start(tmp_path, _config("model.kind=llama"))
    (run / "model.json").write_text('{"class": "LlamaConfig", "fields": {"d_model": "wide"}}')
    with pytest.raises(ConfigError) as err:
        resume.check_resume(run, _config("model.kind=llama").to_dict())
    assert str(err.value).startswith("--resume: the run's init.json and model.json say what")


SAVED_BEFORE_SECTIONS = Path(__file__).parent / "saved_before_sections"


def test_a_config_yaml_with_flat_moe_mla_and_delta_keys_resumes_unchanged(tmp_path):
    """Saved by tjx-nn 0.28's trainer (moe_tiny with ``--set model.num_experts=4
    model.moe_layer_step=2 model.router=sigmoid model.router_bias_rate=0.002
    model.capacity_factor=2.0``: every MoE, MLA and delta key flat): the same command resumes
    with no change, by the old names or the new; a real change is named in the new keys and a
    resumable one (the sigmoid router's bias step) is let through."""
    RunDir(tmp_path).create(yaml.safe_load((SAVED_BEFORE_SECTIONS / "moe_tiny.yaml").read_text()))
    old = ["model.num_experts=4", "model.moe_layer_step=2", "model.router=sigmoid"]
    old += ["model.router_bias_rate=0.002", "model.capacity_factor=2.0"]
    new = [f"model.{nn.RENAMED_MODEL_KEYS[s.split('=')[0][6:]]}={s.split('=')[1]}" for s in old]
    assert new[1] == "model.moe.layer_step=2"
    for sets in (old, new):
        cfg = read_config(apply_overrides(load_config_data("moe_tiny"), sets))
        assert resume.check_resume(tmp_path, cfg.to_dict()) == {}
    rate = read_config(apply_overrides(load_config_data("moe_tiny"), [*new[:-2], new[-1]]))
    assert resume.check_resume(tmp_path, rate.to_dict()) == {
        "model.moe.router_bias_rate": (0.002, 0.001)
    }
    other = apply_overrides(load_config_data("moe_tiny"), [*new, "model.moe.layer_step=1"])
    with pytest.raises(ConfigError, match=r"cannot continue with model\.moe\.layer_step 2 → 1"):
        resume.check_resume(tmp_path, read_config(other).to_dict())


def test_a_config_yaml_with_flat_attention_keys_resumes_unchanged(tmp_path):
    """A run saved with the attention settings flat (tjx-nn 0.29's config.yaml, here with a
    window on every other layer, a soft cap and top-k decoding set): the same command resumes
    with no change by the old names or the new (``model.attention.*``); the resumable top-k is
    let through, a real change is named in the new keys."""
    saved = yaml.safe_load((SAVED_BEFORE_SECTIONS / "moe_tiny.yaml").read_text())
    flat = {"sliding_window": 8, "window_pattern": ["local", "global"]}
    flat |= {"attn_logit_softcap": 30.0, "decode_topk": 2}
    saved["model"] |= flat
    RunDir(tmp_path).create(saved)
    moe = ["model.num_experts=4", "model.moe_layer_step=2", "model.router=sigmoid"]
    moe += ["model.router_bias_rate=0.002", "model.capacity_factor=2.0"]
    old = [*moe, "model.sliding_window=8", "model.window_pattern=[local, global]"]
    old += ["model.attn_logit_softcap=30.0", "model.decode_topk=2"]
    new = [f"model.{nn.RENAMED_MODEL_KEYS[s.split('=')[0][6:]]}={s.split('=')[1]}" for s in old]
    assert new[-2:] == ["model.attention.logit_softcap=30.0", "model.attention.decode_topk=2"]
    for sets in (old, new):
        cfg = read_config(apply_overrides(load_config_data("moe_tiny"), sets))
        assert cfg.model.layer_windows(2) == (8, None)
        assert resume.check_resume(tmp_path, cfg.to_dict()) == {}
    topk = read_config(apply_overrides(load_config_data("moe_tiny"), [*new[:-1]]))
    assert resume.check_resume(tmp_path, topk.to_dict()) == {
        "model.attention.decode_topk": (2, None)
    }
    other = apply_overrides(
        load_config_data("moe_tiny"), [*new, "model.attention.sliding_window=4"]
    )
    with pytest.raises(ConfigError, match=r"model\.attention\.sliding_window 8 → 4"):
        resume.check_resume(tmp_path, read_config(other).to_dict())


def test_a_newer_setting_is_read_at_what_an_older_run_did_where_its_default_would_differ():
    """``grpo.old_logps`` (its ``auto`` takes an overlapped run's π_old from the decode): a saved
    overlapped run without it reads as ``recompute``, what it trained with (a replay and a resume
    compare that); a sequential one, and one that names it, read as saved."""
    grpo = ["grpo.overlap=1", "grpo.sampler_devices=1"]
    overlapped = read_config(apply_overrides(load_config_data("grpo_tiny"), grpo)).to_dict()
    named = {**overlapped, "grpo": {**overlapped["grpo"], "old_logps": "decode"}}
    del overlapped["grpo"]["old_logps"]
    assert resume.as_written(overlapped)["grpo"]["old_logps"] == "recompute"
    assert resume.as_written(named)["grpo"]["old_logps"] == "decode"
    sequential = read_config(load_config_data("grpo_tiny")).to_dict()
    del sequential["grpo"]["old_logps"]
    assert resume.as_written(sequential)["grpo"]["old_logps"] == "auto"
    assert resume.as_written(_config().to_dict()) == _config().to_dict()  # no grpo section read


class _Loader:
    """A loader's state contract: a position, and a digest the saved state must match."""

    def __init__(self, digest: str) -> None:
        self.digest, self.step = digest, 0

    def state_dict(self) -> dict[str, object]:
        return {"step": self.step, "digest": self.digest}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state["digest"] != self.digest:
            raise data.DataError(f"digest: saved {state['digest']!r}, now {self.digest!r}")
        self.step = int(state["step"])  # type: ignore[call-overload]


def test_a_resume_checks_its_data_against_the_newest_step_and_moves_nothing(tmp_path):
    folder = tmp_path / "checkpoints"
    loader = _Loader("aa")
    data_setup.check_resume(loader, folder)  # no checkpoint yet: the restore says so, later
    with ckpt.CheckpointManager(folder, async_save=False) as manager:
        manager.save(2, state={"w": np.zeros(2)}, data_state={"step": 2, "digest": "aa"})
        manager.save(4, state={"w": np.ones(2)}, data_state={"step": 4, "digest": "bb"})
    with pytest.raises(ValueError) as err:
        data_setup.check_resume(loader, folder)
    assert str(err.value) == "--resume: digest: saved 'bb', now 'aa'"  # the newest step's
    assert loader.step == 0
    fits = _Loader("bb")
    data_setup.check_resume(fits, folder)
    assert fits.step == 0  # checked, and left where it was: the restore sets its own step
