"""The trainer's command line: bad input → one error line, exit code 2, nothing written."""

from __future__ import annotations

import errno
import gzip
import os
import socket
import sys

import pytest
import zstandard
from tjx_damaged_hf import HOSTILE_HF, damage

from tjx import data, nn
from tjx.parallel.arguments import distributed_from_args
from trainer.cli import _launch_flags, build_parser, main, parse_profile, plan_run
from trainer.config.folder import RunDir
from trainer.config.schema import ConfigError
from trainer.config.settings import load_config
from trainer.start.replay.request import parse_steps
from trainer.step import data_setup


def _plan(*argv):
    return plan_run(build_parser().parse_args(list(argv)))


def test_plan_defaults(in_tmp):
    plan = _plan("--config", "tiny")
    assert plan.config.name == "tiny"
    assert str(plan.run_dir) == "runs/tiny"
    assert plan.resume is False and plan.init_from is None and plan.profile is None


def test_plan_overrides_data_and_profile(in_tmp):
    plan = _plan(
        "--config",
        "tiny",
        "--set",
        "optimizer.lr=0.01",
        "--data",
        "kjv",
        "--run-dir",
        "out",
        "--profile-steps",
        "2:4",
    )
    assert plan.config.optimizer.schedule.peak_lr == 0.01
    assert plan.config.data.source == "kjv"
    assert str(plan.run_dir) == "out" and plan.profile == (2, 4)


NEW_NAME = "optimizer.schedule.peak_lr"


@pytest.mark.parametrize(
    "sets",
    [
        ("optimizer.lr=1e-3", f"{NEW_NAME}=2e-3"),
        (f"{NEW_NAME}=2e-3", "optimizer.lr=1e-3"),
        ("optimizer.lr=1e-3", "train.steps=9", f"{NEW_NAME}=2e-3", "optimizer.lr=3e-3"),
    ],
)
def test_one_setting_under_its_old_and_its_new_name_is_one_error_line(in_tmp, capsys, sets):
    """As in a file, neither may silently win (#46 point 1: the last one won)."""
    argv = ["--config", "tiny", *(a for s in sets for a in ("--set", s))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"trainer: error: --set optimizer.lr: is {NEW_NAME} now, which is set too; keep only "
        f"{NEW_NAME}\n"
    )
    assert list(in_tmp.iterdir()) == []


def test_an_old_name_alone_still_works_and_says_its_new_name_once(in_tmp, capsys):
    plan = _plan("--config", "tiny", "--set", "optimizer.lr=1e-3", "--set", "optimizer.lr=2e-3")
    assert plan.config.optimizer.schedule.peak_lr == 2e-3  # a key set twice: the last wins
    assert capsys.readouterr().err.splitlines() == [
        f"trainer: note: --set optimizer.lr is {NEW_NAME} now (the old name still works)"
    ]
    _plan("--config", "tiny", "--set", f"{NEW_NAME}=1e-3", "--set", f"{NEW_NAME}=2e-3")
    assert capsys.readouterr().err == ""


def test_a_flat_moe_mla_or_delta_key_is_its_sections_now_and_says_so(in_tmp, capsys):
    """The settings of the ``moe``, ``mla`` and ``delta`` sections were flat model keys: set by
    their old names they reach the section (one note each), beside the new name an error."""
    plan = _plan(
        *["--config", "moe_tiny", "--set", "model.num_experts=8"],
        *["--set", "model.moe_layer_step=2", "--set", "model.moe.router_z_loss=0.0"],
    )
    moe = plan.config.model.moe
    assert (moe.num_experts, moe.layer_step, moe.router_z_loss) == (8, 2, 0.0)
    assert moe.experts_per_token == 2  # the preset's, beside them
    assert capsys.readouterr().err.splitlines() == [
        "trainer: note: --set model.num_experts is model.moe.num_experts now (the old name still "
        "works)",
        "trainer: note: --set model.moe_layer_step is model.moe.layer_step now (the old name "
        "still works)",
    ]
    argv = ["--config", "moe_tiny", "--set", "model.moe.num_experts=2"]
    argv += ["--set", "model.num_experts=4"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "trainer: error: --set model.num_experts: is model.moe.num_experts now, which is set too; "
        "keep only model.moe.num_experts\n"
    )


def test_a_flat_section_key_is_its_sections_now_and_a_null_there_the_kinds_own(in_tmp, capsys):
    """``mtp_depths``, ``init_std``, ``mlp_dim``, ``norm`` ... are the ``mtp``, ``init``,
    ``mlp`` and ``norm`` sections' now: by their old names they reach the section (one note each;
    ``model.norm``, a name then, is ``model.norm.kind``, and ``model.norm.eps`` today's key);
    what the file leaves null is the kind's own (LLaMA's SwiGLU, no scaled residual)."""
    plan = _plan(
        *["--config", "llama_small", "--set", "model.init_std=0.01"],
        *["--set", "model.mtp_depths=1", "--set", "model.mtp.loss_weight=0.5"],
        *["--set", "model.mlp_dim=64", "--set", "model.norm=layernorm"],
        *["--set", "model.norm.eps=1e-5"],
    )
    model = plan.config.model
    assert (model.init.std, model.init.scaled_residual) == (0.01, False)
    assert (model.mtp.depths, model.mtp.loss_weight) == (1, 0.5)
    assert model.mlp == nn.MLPConfig(dim=64, activation="swiglu")
    assert capsys.readouterr().err.splitlines() == [
        "trainer: note: --set model.init_std is model.init.std now (the old name still works)",
        "trainer: note: --set model.mtp_depths is model.mtp.depths now (the old name still "
        "works)",
        "trainer: note: --set model.mlp_dim is model.mlp.dim now (the old name still works)",
        "trainer: note: --set model.norm is model.norm.kind now (the old name still works)",
    ]
    assert model.norm == nn.NormConfig(kind="layernorm", eps=1e-5, position="pre")
    tiny = _plan("--config", "tiny", "--set", "model.init.std=0.01").config.model
    assert tiny.init == nn.InitConfig(std=0.01, scaled_residual=True)


def test_the_flat_position_keys_are_the_position_sections_now(in_tmp, capsys):
    """``model.position`` (a name then) is ``model.position.kind`` and ``model.rope_theta`` ...
    the section's: by their old names they reach it, with one note each naming the new key."""
    plan = _plan(
        *["--config", "llama_small", "--set", "model.position=alibi"],
        *["--set", "model.rope_theta=5e5", "--set", "model.position.relative_buckets=16"],
    )
    assert plan.config.model.position == nn.PositionConfig(
        kind="alibi", rope_theta=5e5, relative_buckets=16
    )
    assert capsys.readouterr().err.splitlines() == [
        "trainer: note: --set model.position is model.position.kind now (the old name still "
        "works)",
        "trainer: note: --set model.rope_theta is model.position.rope_theta now (the old name "
        "still works)",
    ]


def test_only_the_launch_flags_reach_tjx_parallel_and_they_read_as_from_the_whole_line(in_tmp):
    launch = ["--num-processes", "1", "--process-id", "0", "--init-timeout", "9"]
    argv = ["--config", "tiny", "--set", "train.steps=7", *launch]
    args = build_parser().parse_args(argv)
    flags = _launch_flags(args)
    names = ["cluster", "coordinator", "init_timeout", "num_processes", "process_id"]
    assert sorted(vars(flags)) == names  # no --set, --config or other run setting
    assert distributed_from_args(flags) == distributed_from_args(args)
    assert _plan(*argv).distributed.timeout_s == 9.0


@pytest.mark.parametrize(("text", "expected"), [(None, None), ("0:1", (0, 1)), ("10:15", (10, 15))])
def test_parse_profile(text, expected):
    assert parse_profile(text) == expected


@pytest.mark.parametrize("text", ["5", "a:b", "3:3", "4:2", "-1:2", "1:2:3"])
def test_parse_profile_rejects(text):
    with pytest.raises(ConfigError, match="--profile-steps"):
        parse_profile(text)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("x:2", "--steps: expected A:B, the first and last step to replay (integers), got 'x:2'"),
        ("3:2", "--steps: expected 1 <= A <= B"),
        ("0:2", "--steps: expected 1 <= A <= B"),
    ],
)
def test_replay_steps_reject_what_is_not_a_range_of_logged_steps_naming_the_flag(text, needle):
    assert parse_steps("2:2") == (2, 2)
    with pytest.raises(ConfigError) as err:
        parse_steps(text)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--config", "nope"], "unknown preset 'nope'"),
        (["--config", "tiny", "--set", "model.foo=1"], "model.foo: unknown key"),
        (["--config", "tiny", "--set", "train.steps=-5"], "train.steps: -5 is too small"),
        (["--config", "tiny", "--data", "./missing.txt"], "data.source: no such file"),
        (["--config", "tiny", "--data", " "], "--data: empty source"),
        (["--config", "tiny", "--resume"], "--resume: no checkpoint"),
        (["--config", "tiny", "--init-from", "gpt2"], "data.tokenizer 'gpt2'"),
        (["--config", "llama_small", "--init-from", "gpt2"], "model.kind must be 'gpt2'"),
        (["--config", "gpt2_small", "--init-from", "./nowhere"], "neither a folder nor a hub"),
        (
            [
                *["--config", "gpt2_small", "--init-from", "gpt2"],
                *["--set", "model.attention_type=mla", "--set", "model.mla.kv_latent_dim=8"],
                *["--set", "model.use_bias=false"],
            ],
            "model.attention.type 'mla', model.use_bias False cannot apply",
        ),
        (
            ["--config", "gpt2_small", "--init-from", "gpt2", "--set", "model.position=rope"],
            "GPT-2 weights fix the architecture, so model.position.kind 'rope' cannot apply",
        ),
        (  # silently dropped before tjx.nn's hf_gpt2_conflicts said what GPT-2 weights fix
            [
                *["--config", "gpt2_small", "--init-from", "gpt2"],
                *["--set", "model.norm.position=post", "--set", "model.tie_embeddings=false"],
            ],
            "model.norm.position 'post', model.tie_embeddings False cannot apply",
        ),
        (["--config", "tiny", "--profile-steps", "1:9999"], "ends after train.steps"),
    ],
)
def test_main_rejects_with_exit_2_and_writes_nothing(in_tmp, capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainer: error: ") and needle in err
    assert err.count("\n") == 1  # one line
    assert list(in_tmp.iterdir()) == []  # nothing written


def test_a_family_switch_or_window_the_llama_checkpoint_lacks_is_refused(in_tmp, capsys):
    """Gemma's, Qwen3's and OLMo 2's switches and the windows come from the checkpoint: asked of
    a plain Llama's weights they would be dropped, so the run stops (one line, nothing written);
    the checkpoint's own values pass."""
    from flax import nnx

    from tjx import nn

    config = nn.LlamaConfig(
        vocab_size=64,
        d_model=16,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        attention=nn.AttentionConfig(
            qkv_bias=True, sliding_window=4, window_pattern=("local", "global")
        ),
    )
    nn.save_hf(nn.Llama(config, rngs=nnx.Rngs(0)), in_tmp / "ck", model_type="qwen2")
    base = ["--config", "llama_small", "--init-from", str(in_tmp / "ck")]
    asked = ["--set", "model.qk_norm=true", "--set", "model.sliding_window=8"]
    assert main([*base, *asked]) == 2
    err = capsys.readouterr().err
    assert "model.attention.sliding_window 8, model.attention.qk_norm True cannot apply" in err
    assert err.count("\n") == 1 and sorted(p.name for p in in_tmp.iterdir()) == ["ck"]
    from trainer.step.init_from import check_init_from

    same = ["--set", "model.sliding_window=4", "--set", "model.window_pattern=[local,global]"]
    check_init_from(_plan(*base, *same).config, str(in_tmp / "ck"))  # no clash


@pytest.fixture(scope="module")
def hf_saved(tmp_path_factory):
    """A tiny Qwen2 checkpoint saved whole (``one``) and in shards (``sharded``)."""
    from flax import nnx

    from tjx import nn

    config = nn.LlamaConfig(
        vocab_size=64,
        d_model=16,
        num_layers=1,
        num_heads=4,
        num_kv_heads=4,
        attention=nn.AttentionConfig(qkv_bias=True),
    )
    root = tmp_path_factory.mktemp("hf")
    model = nn.Llama(config, rngs=nnx.Rngs(0))
    nn.save_hf(model, root / "one", model_type="qwen2")
    nn.save_hf(model, root / "sharded", model_type="qwen2", max_shard_size="4KB")
    return root


@pytest.mark.parametrize(("how", "kind", "needle"), HOSTILE_HF, ids=[c[0] for c in HOSTILE_HF])
def test_a_damaged_hf_checkpoint_is_one_line_before_anything_is_written(
    in_tmp, capsys, hf_saved, how, kind, needle
):
    import shutil

    shutil.copytree(hf_saved / kind, in_tmp / "ck")
    damage(in_tmp / "ck", how)
    before = sorted(p.name for p in (in_tmp / "ck").iterdir())
    argv = ["--config", "llama_small", "--run-dir", "r", "--init-from", str(in_tmp / "ck")]
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.err.startswith(f"trainer: error: --init-from: {in_tmp / 'ck'}")
    assert needle in out.err and out.err.count("\n") == 1 and "Traceback" not in out.err
    assert out.out == ""  # refused while planning: no config line, no run directory line
    assert sorted(p.name for p in in_tmp.iterdir()) == ["ck"]  # no run directory
    assert sorted(p.name for p in (in_tmp / "ck").iterdir()) == before


def test_existing_checkpoints_need_resume(in_tmp, capsys):
    (in_tmp / "r" / "checkpoints" / "10").mkdir(parents=True)
    assert main(["--config", "tiny", "--run-dir", "r"]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    # --resume compares with the run's saved config: the same one is accepted.
    RunDir(in_tmp / "r").create(
        _plan("--config", "tiny", "--run-dir", "elsewhere").config.to_dict()
    )
    plan = _plan("--config", "tiny", "--run-dir", "r", "--resume")
    assert plan.resume and plan.resume_changes == {}


def test_an_overlapped_grpo_run_written_before_old_logps_resumes_as_it_trained(in_tmp, capsys):
    """Its config.yaml has no ``grpo.old_logps``, whose ``auto`` would now take π_old from the
    decode: the resume keeps the forward pass it trained with and says so in one line; a value
    named on the command line wins (and is a change the resume reports)."""
    overlap = ["--set", "grpo.overlap=1", "--set", "grpo.sampler_devices=1"]
    saved = _plan("--config", "grpo_tiny", *overlap, "--run-dir", "x").config.to_dict()
    del saved["grpo"]["old_logps"]
    (in_tmp / "r" / "checkpoints" / "4").mkdir(parents=True)
    RunDir(in_tmp / "r").create(saved)
    plan = _plan("--config", "grpo_tiny", *overlap, "--run-dir", "r", "--resume")
    assert plan.config.rollout.old_logps == "recompute" and plan.resume_changes == {}
    assert not plan.config.rollout.old_from_decode
    assert "resume: grpo.old_logps=recompute, as the run trained" in capsys.readouterr().err
    named = ["--set", "grpo.old_logps=decode"]
    plan = _plan("--config", "grpo_tiny", *overlap, *named, "--run-dir", "r", "--resume")
    assert plan.config.rollout.old_from_decode
    assert plan.resume_changes == {"grpo.old_logps": ("recompute", "decode")}
    assert "grpo.old_logps=recompute" not in capsys.readouterr().err


def _run_written_without(in_tmp, key):
    """A folder ``corpus`` of one text file, and a run ``r`` in ``in_tmp`` trained on it whose
    config.yaml lacks ``data.<key>``, as a trainer before that setting wrote it: ``(the folder,
    its --set)``."""
    folder = in_tmp / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("plain text " * 400, encoding="utf-8")
    source = ["--set", f"data.source={folder}"]
    saved = _plan("--config", "tiny", *source, "--run-dir", "x").config.to_dict()
    del saved["data"][key]
    (in_tmp / "r" / "checkpoints" / "4").mkdir(parents=True)
    RunDir(in_tmp / "r").create(saved)
    return folder, source


def test_a_run_written_before_compressed_sources_resumes_without_them(in_tmp, capsys):
    """tjx-data 0.22 read no ``.jsonl.gz`` of a folder; its config.yaml has no
    ``data.compressed``. Where the folder holds one, the resume goes on reading as the run did
    (``data.compressed=false``, said in one line; naming ``true`` is another token stream,
    refused); where it holds none, nothing changes."""
    folder, source = _run_written_without(in_tmp, "compressed")
    plan = _plan("--config", "tiny", *source, "--run-dir", "r", "--resume")
    assert plan.config.data.compressed and plan.resume_changes == {}
    assert "data.compressed" not in capsys.readouterr().err  # no compressed file: as before
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "rows"}\n'))
    plan = _plan("--config", "tiny", *source, "--run-dir", "r", "--resume")
    assert not plan.config.data.compressed and plan.resume_changes == {}
    assert "resume: data.compressed=false, as the run trained" in capsys.readouterr().err
    cache = ["--set", f"data.cache_dir={in_tmp / 'cache'}"]
    bundle = data_setup.prepare(
        _plan("--config", "tiny", *source, *cache, "--run-dir", "r", "--resume").config
    )
    alone = in_tmp / "alone"  # what the run read: a.txt alone
    alone.mkdir()
    (alone / "a.txt").write_bytes((folder / "a.txt").read_bytes())
    read = data.prepare_shards(str(alone), data.ByteTokenizer(), in_tmp / "cache").tokens
    assert data.load_index(bundle.train_dir).tokens == read["train"]
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"data: left out 1 file(s) of other types: {folder / 'b.jsonl.gz'} (this run reads .txt, "
        ".text, .md, .jsonl, .parquet files and, as data.compressed=false, no compressed one)"
    )
    named = ["--set", "data.compressed=true"]  # another token stream: refused, as a new source
    with pytest.raises(ConfigError, match=r"cannot continue with data\.compressed False → True"):
        _plan("--config", "tiny", *source, *named, "--run-dir", "r", "--resume")


def test_a_run_written_before_zstd_sources_resumes_without_them(in_tmp, capsys):
    """tjx-data 0.23 read a folder's ``.jsonl.gz`` but no ``.jsonl.zst``; its config.yaml has
    ``data.compressed`` and no ``data.zstd``. Where the folder holds a ``.zst``, the resume goes
    on without it (``data.zstd=false``, one line); the data it reads is what the run read."""
    folder, source = _run_written_without(in_tmp, "zstd")
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "gzipped rows"}\n'))
    plan = _plan("--config", "tiny", *source, "--run-dir", "r", "--resume")
    assert plan.config.data.zstd and plan.resume_changes == {}  # no .zst: as before
    assert "data.zstd" not in capsys.readouterr().err
    (folder / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "z"}\n'))
    plan = _plan("--config", "tiny", *source, "--run-dir", "r", "--resume")
    assert plan.config.data.compressed and not plan.config.data.zstd
    assert plan.resume_changes == {}
    err = capsys.readouterr().err
    assert "resume: data.zstd=false, as the run trained" in err and "compressed=false" not in err
    assert sorted(data.compressions_of(plan.config.data)) == [".bz2", ".gz", ".xz"]
    with pytest.raises(ConfigError, match=r"cannot continue with data\.zstd False → True"):
        _plan("--config", "tiny", *source, "--set", "data.zstd=true", "--run-dir", "r", "--resume")


def test_a_resume_run_in_another_folder_says_its_relative_source_was_read_in_the_runs(
    in_tmp, monkeypatch, capsys
):
    """A relative ``data.source`` names other files in another folder: the run's data.json
    records where it was read (a new run's), and a resume run elsewhere says so in one line
    before the data is prepared, or in its error where the source is not there."""
    for name in ("a", "b", "c"):
        (in_tmp / name).mkdir()
    for name in ("a", "b"):
        (in_tmp / name / "corpus.txt").write_text(f"text of {name} " * 400, encoding="utf-8")
    monkeypatch.chdir(in_tmp / "a")
    run = in_tmp / "r"
    argv = ["--config", "tiny", "--data", "./corpus.txt", "--run-dir", str(run)]
    plan = _plan(*argv)
    (run / "checkpoints" / "4").mkdir(parents=True)
    RunDir(run).create(plan.config.to_dict())
    RunDir(run).write_json(
        RunDir.DATA_FILE, {"source": "./corpus.txt", **data.read_in(plan.config.data)}
    )
    _plan(*argv, "--resume")  # where the run read it: nothing said
    assert "relative" not in capsys.readouterr().err
    monkeypatch.chdir(in_tmp / "b")
    _plan(*argv, "--resume")
    assert capsys.readouterr().err.splitlines()[0] == (
        "resume: data.source ./corpus.txt is a path relative to the folder a command runs in: the "
        f"run read it in {in_tmp / 'a'}, this command runs in {in_tmp / 'b'}; run it from "
        f"{in_tmp / 'a'} to read the run's files"
    )
    monkeypatch.chdir(in_tmp / "c")
    with pytest.raises(ConfigError, match=r"^data\.source: no such file or folder '\./corpus\.txt'"
                       r"; data\.source \./corpus\.txt is a path relative .* this command runs in "
                       rf"{in_tmp / 'c'};"):  # fmt: skip
        _plan(*argv, "--resume")
    # A new run there is refused as before, with no word of a run it does not resume.
    with pytest.raises(
        ConfigError, match=r"^data\.source: no such file or folder '\./corpus\.txt'$"
    ):
        _plan("--config", "tiny", "--data", "./corpus.txt", "--run-dir", str(in_tmp / "new"))


MULTI_STEPS = ["--set", "optimizer.accumulation_mode=multi_steps"]
MULTI_STEPS += ["--set", "optimizer.accumulation_steps=2"]


def test_a_new_run_reads_multi_steps_as_one_update_a_step_and_says_so(in_tmp, capsys):
    """Under the trainer multi_steps made one update of every k steps (each step already sums
    its k micro-batches) and stopped the schedule at 1/k: a new run, its plan and a resume of a
    run that started as scan read it as scan, in one line."""
    plan = _plan("--config", "tiny", *MULTI_STEPS)
    assert plan.config.optimizer.accumulation_mode == "scan"
    assert plan.config.optimizer.accumulation_steps == 2
    err = capsys.readouterr().err
    assert err.startswith("optimizer.accumulation_mode=multi_steps is read as scan: ")
    assert err.count("\n") == 1 and "1/2 of its length" in err
    assert load_config("tiny", MULTI_STEPS[1::2]).optimizer.accumulation_mode == "scan"
    assert "is read as scan" in capsys.readouterr().err
    (in_tmp / "r" / "checkpoints" / "4").mkdir(parents=True)
    RunDir(in_tmp / "r").create(plan.config.to_dict())  # the run it started
    plan = _plan("--config", "tiny", *MULTI_STEPS, "--run-dir", "r", "--resume")
    assert plan.config.optimizer.accumulation_mode == "scan" and plan.resume_changes == {}
    assert "is read as scan" in capsys.readouterr().err


def test_a_run_started_with_multi_steps_resumes_as_it_trained(in_tmp, capsys):
    """Its checkpoints hold optax.MultiSteps' state and its steps the updates they made: it goes
    on with multi_steps, said in one line; a resume asking for scan is refused (another
    optimizer state)."""
    saved = _plan("--config", "tiny", "--run-dir", "x").config.to_dict()
    saved["optimizer"] |= {"accumulation_mode": "multi_steps", "accumulation_steps": 2}
    (in_tmp / "r" / "checkpoints" / "4").mkdir(parents=True)
    RunDir(in_tmp / "r").create(saved)
    capsys.readouterr()
    plan = _plan("--config", "tiny", *MULTI_STEPS, "--run-dir", "r", "--resume")
    assert plan.config.optimizer.accumulation_mode == "multi_steps"
    assert plan.resume_changes == {}
    err = capsys.readouterr().err
    assert err.startswith("resume: optimizer.accumulation_mode=multi_steps, as the run trained")
    assert err.count("\n") == 1
    with pytest.raises(ConfigError, match="optimizer.accumulation_mode 'multi_steps' → 'scan'"):
        _plan("--config", "tiny", "--run-dir", "r", "--resume")
    own = _plan("--config", str(in_tmp / "r" / "config.yaml"), "--run-dir", "r", "--resume")
    assert own.config.optimizer.accumulation_mode == "multi_steps"  # what the refusal says


def test_run_dir_that_is_a_file(in_tmp, capsys):
    (in_tmp / "f").write_text("x")
    assert main(["--config", "tiny", "--run-dir", "f"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_resume_and_init_from_conflict(in_tmp, capsys):
    (in_tmp / "r" / "checkpoints" / "1").mkdir(parents=True)
    argv = ["--config", "gpt2_small", "--run-dir", "r", "--resume", "--init-from", "gpt2"]
    assert main(argv) == 2
    assert "cannot be combined with --resume" in capsys.readouterr().err


def test_argparse_errors_exit_2(in_tmp, capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--config", "tiny", "--bogus"])
    assert exc.value.code == 2


def test_help_lists_presets(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "gpt2_small" in out and "vit_digits" in out


def test_a_logger_without_its_package_is_refused_at_plan_time(in_tmp, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as on a machine without it
    with pytest.raises(
        ConfigError,
        match=r"logging.sinks: logger 'tensorboard' needs the "
        r"tensorboardX package.*pip install",
    ):
        _plan("--config", "tiny", "--set", "logging.sinks=[jsonl,tensorboard]")
    assert not (in_tmp / "runs").exists()


def test_a_run_dir_that_cannot_be_made_is_refused_at_plan_time(in_tmp, monkeypatch):
    (in_tmp / "file").write_text("x")
    with pytest.raises(ConfigError, match="'file' is a file, not a folder"):
        _plan("--config", "tiny", "--run-dir", "file/run")
    (in_tmp / "ok").mkdir()
    (in_tmp / "ro").mkdir()
    # Unwritable in a way os.access does not see (root in a container, an immutable folder):
    # os.access says yes, making anything fails with EPERM. The check writes a probe.
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if os.path.abspath(os.path.dirname(path)) != str(in_tmp / "ok"):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)
    with pytest.raises(ConfigError, match=r"data.cache_dir: cannot create .* is not writable"):
        _plan("--config", "tiny", "--run-dir", "ok", "--set", f"data.cache_dir={in_tmp}/c")
    with pytest.raises(
        ConfigError,
        match=r"--run-dir: cannot create 'new': '.' is not writable \(Operation not permitted\)",
    ):
        _plan("--config", "tiny", "--run-dir", "new")
    with pytest.raises(
        ConfigError, match=r"^--run-dir: cannot write into 'ro' \(Operation not permitted\)"
    ):
        _plan("--config", "tiny", "--run-dir", "ro")
    assert sorted(p.name for p in (in_tmp / "ok").iterdir()) == []  # the probe was removed


def test_ctrl_c_before_the_loop_is_one_line(in_tmp, capfd, monkeypatch):
    from trainer.start import startup

    def interrupted(plan):
        raise KeyboardInterrupt

    monkeypatch.setattr(startup, "run", interrupted)
    assert main(["--config", "tiny", "--run-dir", "r"]) == 130
    err = capfd.readouterr().err
    assert err.strip() == "trainer: error: interrupted: stopped at once; no checkpoint was saved"


def _files(root):
    """Every file under ``root``: relative path → (bytes, modification time in ns)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_run_dir_another_trainer_holds_is_one_line_and_changes_nothing(in_tmp, capsys):
    # Said before "already holds checkpoints" (a --resume would be refused too) and before the
    # saved config is compared: what is really in the way. Nothing written, no folder made.
    (in_tmp / "r" / "checkpoints" / "10").mkdir(parents=True)
    RunDir(in_tmp / "r").create(_plan("--config", "tiny", "--run-dir", "x").config.to_dict())
    with RunDir(in_tmp / "r").lock():
        before = _files(in_tmp)
        for extra in ([], ["--resume"], ["--resume", "--set", "model.d_model=32"]):
            assert main(["--config", "tiny", "--run-dir", "r", *extra]) == 2
            err = capsys.readouterr().err.splitlines()
            assert len(err) == 1, err
            assert err[0].startswith(
                f"trainer: error: --run-dir: 'r' is in use by another trainer (pid {os.getpid()} "
                f"on host {socket.gethostname()} since "
            ), err[0]
            assert err[0].endswith(" UTC); wait for it to end or choose another --run-dir")
        assert _files(in_tmp) == before
    assert main(["--config", "tiny", "--run-dir", "r"]) == 2  # released: the usual reason again
    assert "already holds checkpoints" in capsys.readouterr().err


def test_a_trainer_that_loses_the_race_for_the_lock_writes_nothing(in_tmp, capsys):
    # Planned while the folder was free; another trainer took it before this one's start: the
    # lock, taken before anything is written, refuses it in the same line.
    from trainer.start import startup

    plan = _plan("--config", "tiny", "--run-dir", "r")
    with RunDir(in_tmp / "r").lock():
        before = _files(in_tmp)
        assert startup.run(plan) == 2
        assert _files(in_tmp) == before
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--run-dir: 'r' is in use by another trainer (pid" in err[0], err
    assert not (in_tmp / "r").exists()  # the holder's lock made it; nothing else was written
