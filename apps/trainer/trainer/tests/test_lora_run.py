"""LoRA runs: the ``lora:`` section is tjx.nn's `LoraConfig`, only the adapters train (no optimizer
state for the base), the checkpoint resumes, and ``--export-peft`` writes PEFT's adapter files."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from tjx import nn
from trainer.cli import main, plan_argv
from trainer.config.schema import ConfigError
from trainer.config.typed import read_config, resolve, step_config

LLAMA = [
    "model.kind=llama",
    "model.d_model=16",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.mlp.dim=32",
    "model.max_seq_len=16",
    "model.tie_embeddings=false",
    "model.scan_layers=true",
    "data.seq_len=16",
    "data.batch_size=8",
    "eval.batch_size=8",
    "train.steps=4",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "optimizer.schedule.warmup_steps=1",
    "optimizer.schedule.peak_lr=0.05",
    "sampling.max_new_tokens=2",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
    "lora.enabled=true",
    "lora.rank=2",
    "lora.targets=[q, v, down]",
]


def _argv(tmp, *extra):
    text = tmp / "corpus.txt"
    if not text.exists():
        text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(300)))
    argv = ["--config", "tiny", "--run-dir", str(tmp / "run"), "--data", str(text)]
    for item in [*LLAMA, f"data.cache_dir={tmp / 'cache'}"]:
        argv += ["--set", item]
    return [*argv, *extra]


def test_the_lora_section_is_tjx_nn_lora_config_and_a_setting_without_enabled_is_refused():
    cfg = read_config({"lora": {"enabled": True, "rank": 4, "targets": ["q", "gate"]}})
    assert isinstance(cfg.lora, nn.LoraConfig) and cfg.use_lora
    assert cfg.lora.targets == ("q", "gate") and cfg.lora.rank == 4
    saved = cfg.to_dict()["lora"]
    assert saved["enabled"] is True and saved["targets"] == ["q", "gate"]
    assert read_config(cfg.to_dict()).lora == cfg.lora  # config.yaml reads back
    assert not read_config({}).use_lora
    with pytest.raises(ConfigError, match=r"^lora\.rank: LoRA is off; set lora\.enabled=true"):
        read_config({"lora": {"rank": 4}})
    with pytest.raises(ConfigError, match=r"^lora\.targets: 'qq' is not allowed"):
        read_config({"lora": {"enabled": True, "targets": ["qq"]}})
    with pytest.raises(ConfigError, match=r"^lora\.rank"):
        read_config({"lora": {"enabled": True, "rank": 0}})


def test_only_the_adapters_train_and_hold_optimizer_state(in_tmp):
    import trainer.step.state as state
    from trainer.step.train_step import jit_train_step

    cfg = resolve(plan_argv(_argv(in_tmp)).config, 80)
    setup = state.build(step_config(cfg))
    params = setup.state.param_tree()
    flat = jax.tree_util.tree_leaves_with_path(params)
    adapters = {jax.tree_util.keystr(p): x for p, x in flat if "lora" in jax.tree_util.keystr(p)}
    # q and v of the attention and the MLP's down projection, A and B each, stacked layers
    assert len(adapters) == 6
    n_adapter = sum(int(x.size) for x in adapters.values())
    moments = [x for x in jax.tree.leaves(setup.state.opt_state) if np.ndim(x) > 0]
    assert sum(int(x.size) for x in moments) == 2 * n_adapter  # Adam's mu and nu, adapters only
    before = jax.tree.map(np.asarray, params)
    rng = np.random.default_rng()
    tokens = rng.integers(0, 80, size=(8, 17)).astype(np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    step = jit_train_step(setup)
    new, metrics = step(setup.state, batch)
    new, metrics = step(new, batch)
    after = jax.tree.map(np.asarray, new.param_tree())
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(before), jax.tree.leaves(after),
                            strict=True):  # fmt: skip
        moved = not np.array_equal(x, y)
        assert moved == ("lora" in jax.tree_util.keystr(path)), jax.tree_util.keystr(path)
    assert np.isfinite(float(metrics["loss"]))


def test_a_lora_run_trains_resumes_and_exports_a_peft_adapter(in_tmp, capsys):
    out = in_tmp / "adapter"
    assert main(_argv(in_tmp, "--set", "train.stop_at=2")) == 0
    assert main(_argv(in_tmp, "--resume", "--export-peft", str(out))) == 0
    assert "resumed from step 2" in capsys.readouterr().out
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2
    assert sorted(config["target_modules"]) == ["down_proj", "q_proj", "v_proj"]
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    saved = (in_tmp / "run" / "config.yaml").read_text()
    assert "enabled: true" in saved


def test_export_peft_of_a_run_it_cannot_export_is_one_line_and_exit_2(in_tmp, capsys):
    no_lora = ["--config", "tiny", "--export-peft", str(in_tmp / "a")]
    gpt2 = ["--config", "tiny", "--set", "lora.enabled=true", "--export-peft", str(in_tmp / "a")]
    (in_tmp / "full").mkdir()
    (in_tmp / "full" / "x").write_text("")
    not_empty = _argv(in_tmp, "--export-peft", str(in_tmp / "full"))
    for argv, message in [
        (no_lora, "--export-peft: this run trains no adapters; set lora.enabled=true"),
        (gpt2, "--export-peft: PEFT adapters are written for Llama-family models"),
        (not_empty, "is not an empty folder; name a new one"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (in_tmp / "run").exists() and not (in_tmp / "a").exists()


def test_export_peft_of_an_mla_model_is_refused_before_training(in_tmp, capsys):
    # DeepSeek's projections are not HF's q/k/v_proj: refused at the start, whether the config
    # says MLA or the --init-from checkpoint does (its config.json, the architecture it fixes).
    from flax import nnx

    mla = dict(
        vocab_size=48,
        max_seq_len=32,
        d_model=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        head_dim=12,
        mlp=nn.MLPConfig(dim=40),
        **{"attention.type": "mla"},
        mla=nn.MLAConfig(kv_latent_dim=16, qk_rope_head_dim=4, v_head_dim=6),
        moe=nn.MoEConfig(
            num_experts=4,
            experts_per_token=2,
            expert_mlp_dim=12,
            num_shared_experts=1,
            first_dense=1,
            router_norm_topk=False,
        ),
    )  # fmt: skip (DeepSeek-V2's shape)
    nn.save_hf(nn.Llama(nn.make_config(nn.LlamaConfig, mla), rngs=nnx.Rngs(0)), in_tmp / "deepseek")
    from_hf = _argv(
        in_tmp, "--init-from", str(in_tmp / "deepseek"), "--set", "model.num_kv_heads=null"
    )
    own = _argv(in_tmp, "--set", "model.attention_type=mla", "--set", "model.mla.kv_latent_dim=8")
    for argv in (from_hf, own):
        assert main([*argv, "--export-peft", str(in_tmp / "a")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--export-peft: PEFT adapters do not cover MLA" in err[0], err
    assert not (in_tmp / "run").exists() and not (in_tmp / "a").exists()
