"""A table of bad inputs: each gives one clear error, exit code 2, and leaves no run directory.

Every case runs the app in an empty folder, as ``python -m trainer`` / ``python -m eval`` does
(`call_app`: its ``main`` in this process; the cases of ``AS_PROCESSES`` as separate processes,
for the exit status a shell sees); afterwards that folder holds only what the case itself
prepared. A second table, ``DIVERGED``, holds runs whose loss turns NaN for good (real processes):
they end with one error line and exit code 3, and leave no checkpoint from the bad streak and no
``final.json``.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from tests_integration._helpers_apps import SMALL, app_env, call_app, read_log, run_app
from tests_integration._helpers_unwritable import make_unwritable, writable_again

T = "trainer"
E = "eval"
TINY = ["--config", "tiny", "--run-dir", "r"]


def _bad_yaml(d):
    (d / "bad.yaml").write_text("model: [1, 2\n")


def _unknown_top_key(d):
    (d / "mine.yaml").write_text("base: tiny\nmodle: {d_model: 8}\n")


def _moe_key_both_ways(d):
    both = "base: moe_tiny\nmodel:\n  num_experts: 8\n  moe: {num_experts: 4}\n"
    (d / "both.yaml").write_text(both)


def _gemma4_key_both_ways(d):
    both = "base: tiny\nmodel:\n  kind: llama\n  value_norm: true\n  gemma4: {value_norm: false}\n"
    (d / "both.yaml").write_text(both)


def _norm_key_both_ways(d):
    both = "base: tiny\nmodel:\n  norm_eps: 1.0e-6\n  norm: {eps: 1.0e-5}\n"
    (d / "both.yaml").write_text(both)


def _attention_key_both_ways(d):
    both = "base: tiny\nmodel:\n  sliding_window: 8\n  attention: {sliding_window: 4}\n"
    (d / "both.yaml").write_text(both)


def _position_key_both_ways(d):
    both = "base: tiny\nmodel:\n  rope_theta: 5.0e+5\n  position: {rope_theta: 1.0e+4}\n"
    (d / "both.yaml").write_text(both)


def _empty_text(d):
    (d / "empty.txt").write_text("")


def _a_file(d):
    (d / "r").write_text("not a folder")


def _empty_dir(d):
    (d / "empty_run").mkdir()


def _config_files(d):
    (d / "empty.yaml").write_text("# settings to come\n")
    (d / "twice.yaml").write_text("base: tiny\noptimizer:\n  lr: 0.1\n  lr: 0.2\n")
    (d / "latin1.yaml").write_bytes("base: tiny\nname: caf\u00e9\n".encode("latin-1"))
    (d / "folder.yaml").mkdir()
    (d / "a.yaml").write_text("base: b.yaml\n")
    (d / "b.yaml").write_text("base: ./a.yaml\n")


def _immutable_run_dir(d):
    (d / "r").mkdir()
    make_unwritable(d / "r")


def _immutable_parent(d):
    (d / "ro").mkdir()
    make_unwritable(d / "ro")


def _prompts_without_answers(d):
    """GRPO prompt rows without the ``answer`` the exact_answer reward reads (issue #55)."""
    rows = [{"prompt": f"What is {i} + 1?"} for i in range(40)]
    (d / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


#: A GRPO run (issue #55) on the generated letter-reversal prompts, small.
GRPO = ["--config", "grpo_tiny", "--run-dir", "r", "--set", "model.num_layers=1"]


def _random_safetensors(d):
    """A GPT-2 HF folder whose model.safetensors is fresh random bytes (issue #58)."""
    import os

    (d / "hf").mkdir()
    config = {"model_type": "gpt2", "vocab_size": 64, "n_positions": 32, "n_embd": 16}
    (d / "hf" / "config.json").write_text(json.dumps({**config, "n_layer": 1, "n_head": 2}))
    (d / "hf" / "model.safetensors").write_bytes(os.urandom(1024))
    (d / "held.txt").write_text("held-out text\n" * 50)


#: A tiny Llama's config.json: transformers' keys, sizes that fit.
LLAMA_CONFIG = {
    "model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
}  # fmt: skip


def _hf_config_with_holes(d):
    """HF folders whose config.json lacks or damages a key tjx reads (#71's point 4: a KeyError or
    TypeError traceback before); their weights are empty files, which no refusal reaches."""
    holes = {
        "no-hidden-size": {k: v for k, v in LLAMA_CONFIG.items() if k != "hidden_size"},
        "null-heads": LLAMA_CONFIG
        | {"model_type": "gpt_oss", "sliding_window": 4, "num_attention_heads": None},
        # The published Qwen3.5 form: the text model's config inside the image-text one's (the
        # string was read as the number before).
        "nested": {
            "model_type": "qwen3_5",
            "text_config": {**LLAMA_CONFIG, "num_hidden_layers": "2"},
        },
    }
    for name, config in holes.items():
        (d / name).mkdir()
        (d / name / "config.json").write_text(json.dumps(config))
        (d / name / "model.safetensors").write_bytes(b"")
    (d / "held.txt").write_text("held-out text\n" * 50)


def _fp8_without_scales(d):
    """A block-scaled FP8 folder (DeepSeek-V3's form, #70) whose q_proj lacks its
    ``weight_scale_inv``: the file holds that one tensor, written as safetensors lays it out."""
    import struct

    (d / "fp8").mkdir()
    fp8 = {"quant_method": "fp8", "weight_block_size": [8, 8]}
    (d / "fp8" / "config.json").write_text(json.dumps(LLAMA_CONFIG | {"quantization_config": fp8}))
    name = "model.layers.0.self_attn.q_proj.weight"
    header = json.dumps({name: {"dtype": "F8_E4M3", "shape": [16, 16], "data_offsets": [0, 256]}})
    data = struct.pack("<Q", len(header)) + header.encode() + bytes(range(256))
    (d / "fp8" / "model.safetensors").write_bytes(data)


#: A run of the LLaMA kind (the presets' tiny is GPT-2): --init-from reads a Llama folder.
LLAMA_RUN = ["--config", "tiny", "--run-dir", "r", "--set", "model.kind=llama"]


def _hf_config(d, model_type, **config):
    """A Hugging Face folder whose config.json is refused before its weights are read (#71):
    ``config`` over a tiny Llama's, and a placeholder safetensors file."""
    from safetensors.numpy import save_file

    (d / "hf").mkdir()
    sizes = dict(
        vocab_size=257,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    (d / "hf" / "config.json").write_text(json.dumps({"model_type": model_type, **sizes, **config}))
    save_file({"placeholder": np.zeros(1, np.float32)}, str(d / "hf" / "model.safetensors"))


def _llama_rotating_nothing(d):
    _hf_config(d, "llama", rope_parameters={"rope_type": "default", "partial_rotary_factor": 0})


def _qwen3_5_rotating_nothing(d):
    types = {"layer_types": ["linear_attention", "full_attention"], "num_hidden_layers": 2}
    _hf_config(d, "qwen3_5_text", partial_rotary_factor=0, head_dim=8, **types)


def _deepseek_v32_sparse_first(d):
    """A DeepSeek-V3.2 config.json whose MoE layer comes before its dense one (``mlp_layer_types``
    out of ``first_k_dense_replace``'s order: a variant tjx's DeepSeek MoE cannot express)."""
    layers = {"num_hidden_layers": 2, "first_k_dense_replace": 1}
    _hf_config(d, "deepseek_v32", mlp_layer_types=["sparse", "dense"], **layers)


def _kimi_k25_int8(d):
    """The published Kimi-K2.5's config.json and index with its ``compressed-tensors`` experts
    packed in 8 bits instead of 4 (a W8A16 scheme tjx does not dequantize)."""
    import tjx_published_hf

    folder = tjx_published_hf.config_only("Kimi-K2.5", d / "hf")
    hf = json.loads((folder / "config.json").read_text())
    for config in (hf, hf["text_config"]):
        config["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] = 8
    (folder / "config.json").write_text(json.dumps(hf))


def _minimax_m2_lightning(d):
    """A MiniMax folder whose attn_type_list asks for MiniMax-01's lightning-attention layers (0),
    which transformers' minimax_m2 silently computes as full attention (#70)."""
    _hf_config(d, "minimax_m2", head_dim=8, attn_type_list=[0], num_local_experts=2,
               num_experts_per_tok=1)  # fmt: skip


def _hf_qwen3_5(d):
    """A Qwen3.5-shaped checkpoint: a Gated DeltaNet layer, then attention."""
    from flax import nnx

    from tjx import nn

    shape = dict(vocab_size=257, d_model=16, num_layers=2, num_heads=2, num_kv_heads=1,
                 mlp=nn.MLPConfig(dim=24), head_dim=8, mixer_pattern=("delta", "attention"),
                 delta=nn.DeltaConfig(key_heads=2, value_heads=2, key_dim=8, value_dim=8),
                 position=nn.PositionConfig(rope_fraction=0.25), norm=nn.NormConfig(plus_one=True),
                 attention=nn.AttentionConfig(output_gate=True, qk_norm=True))  # fmt: skip
    nn.save_hf(nn.build_model(nn.LlamaConfig(**shape), rngs=nnx.Rngs(0)), d / "hf")


def _a_folder(d):
    (d / "out").mkdir()


def _immutable_file(d):
    (d / "plan.json").write_text("{}\n")  # an earlier plan's figures
    make_unwritable(d / "plan.json")


#: A run's data prepared into the case's folder (``data.cache_dir``): a case refused before the
#: data preparation leaves it uncreated (`test_bad_input_exits_2_and_writes_nothing`), one
#: refused after it (the order #71 fixes) would not.
CACHE = ["--set", "data.cache_dir=cache"]
#: A split sequence (context parallelism) over 2 of the 8 devices.
CONTEXT = ["--set", "mesh.context=2", *CACHE]
LLAMA = [*TINY, "--set", "model.kind=llama", "--set", "model.num_layers=2"]
DELTA = [
    "model.mixer_pattern=[delta,attention]",
    "model.delta.key_heads=2",
    "model.delta.value_heads=2",
    "model.delta.key_dim=8",
    "model.delta.value_dim=8",
]
KV_SHARED = [
    "model.num_layers=3",
    "model.attention.sliding_window=16",
    "model.attention.window_pattern=[local,global]",
    "model.gemma4.kv_shared_layers=1",
]


#: Delayed scaling over a billion steps: 22 GB of histories before the first step (#71).
AMAX_OF_A_BILLION = [
    "model.precision.fp8_recipe=delayed",
    "model.precision.fp8_amax_history=1000000000",
]


def _sets(items):
    return [x for item in items for x in ("--set", item)]


CASES = [
    # (id, app, argv, setup, expected text in stderr)
    # Unwritable where os.access says writable (root, chattr +i): found by writing a probe.
    ("immutable-run-dir", T, TINY, _immutable_run_dir, "--run-dir: cannot write into 'r' ("),
    (
        "immutable-parent",
        T,
        ["--config", "tiny", "--run-dir", "ro/run"],
        _immutable_parent,
        "--run-dir: cannot create 'ro/run': 'ro' is not writable (",
    ),
    ("unknown-preset", T, ["--config", "nope", "--run-dir", "r"], None, "unknown preset 'nope'"),
    ("missing-config-file", T, ["--config", "no/such.yaml"], None, "no such file"),
    ("bad-yaml", T, ["--config", "bad.yaml", "--run-dir", "r"], _bad_yaml, "not valid YAML"),
    (
        "unknown-key-in-file",
        T,
        ["--config", "mine.yaml", "--run-dir", "r"],
        _unknown_top_key,
        "modle: unknown key",
    ),
    ("unknown-key", T, [*TINY, "--set", "model.foo=1"], None, "model.foo: unknown key"),
    (
        "wrong-type",
        T,
        [*TINY, "--set", "train.steps=abc"],
        None,
        "train.steps: expected an integer",
    ),
    ("zero-steps", T, [*TINY, "--set", "train.steps=0"], None, "train.steps: 0 is too small"),
    (
        "negative-lr",
        T,
        [*TINY, "--set", "optimizer.schedule.peak_lr=-1"],
        None,
        "optimizer.schedule.peak_lr=-1.0 is out of range",
    ),
    ("bad-choice", T, [*TINY, "--set", "model.kind=rnn"], None, "model.kind: 'rnn' is not allowed"),
    (
        "heads-do-not-divide",
        T,
        [*TINY, "--set", "model.num_heads=3"],
        None,
        "must be divisible by model.num_heads",
    ),
    (
        "seq-too-long",
        T,
        [*TINY, "--set", "data.seq_len=4096"],
        None,
        "data.seq_len: 4096 exceeds model.max_seq_len",
    ),
    (
        "accumulation",
        T,
        [*TINY, "--set", "optimizer.accumulation_steps=3"],
        None,
        "optimizer.accumulation_steps: 3 must divide data.batch_size",
    ),
    ("bad-sink", T, [*TINY, "--set", "logging.sinks=[slack]"], None, "'slack' is not allowed"),
    (
        "set-without-value",
        T,
        [*TINY, "--set", "optimizer.schedule.peak_lr"],
        None,
        "expected KEY=VALUE",
    ),
    ("set-a-section", T, [*TINY, "--set", "optimizer=1"], None, "optimizer: is a section"),
    (
        "moe-key-flat-and-in-its-section",
        T,
        ["--config", "both.yaml", "--run-dir", "r"],
        _moe_key_both_ways,
        "model.num_experts: is model.moe.num_experts now, which is set too",
    ),
    (
        "moe-section-value",
        T,
        ["--config", "moe_tiny", "--run-dir", "r", "--set", "model.moe.experts_per_token=9"],
        None,
        "model.moe.experts_per_token: 9 is more than the 4 experts",
    ),
    (
        "gemma4-key-flat-and-in-its-section",
        T,
        ["--config", "both.yaml", "--run-dir", "r"],
        _gemma4_key_both_ways,
        "model.value_norm: is model.gemma4.value_norm now, which is set too",
    ),
    (
        "gemma4-section-value",
        T,
        [*TINY, "--set", "model.kind=llama", "--set", "model.gemma4.per_layer_input_dim=-1"],
        None,
        "model.gemma4.per_layer_input_dim must be an int >= 0; got -1",
    ),
    (
        "norm-key-flat-and-in-its-section",
        T,
        ["--config", "both.yaml", "--run-dir", "r"],
        _norm_key_both_ways,
        "model.norm_eps: is model.norm.eps now, which is set too",
    ),
    (
        "norm-section-value",
        T,
        [*TINY, "--set", "model.norm.kind=batchnorm"],
        None,
        "model.norm.kind",
    ),
    (
        "position-key-flat-and-in-its-section",
        T,
        ["--config", "both.yaml", "--run-dir", "r"],
        _position_key_both_ways,
        "model.rope_theta: is model.position.rope_theta now, which is set too",
    ),
    (
        "position-section-value",
        T,
        [*TINY, "--set", "model.position.relative_buckets=7"],
        None,
        "model.position.relative_buckets must be an even int >= 4",
    ),
    (
        "mlp-section-value",
        T,
        [*TINY, "--set", "model.mlp.dim=0"],
        None,
        "model.mlp.dim",
    ),
    (
        "attention-key-flat-and-in-its-section",
        T,
        ["--config", "both.yaml", "--run-dir", "r"],
        _attention_key_both_ways,
        "model.sliding_window: is model.attention.sliding_window now, which is set too",
    ),
    (
        "attention-section-value",
        T,
        [*TINY, "--set", "model.attention.chunk=4", "--set", "model.attention.sliding_window=4"],
        None,
        "model.attention.chunk: a local layer has a chunk or a sliding_window, not both",
    ),
    ("missing-data-file", T, [*TINY, "--data", "./nope.txt"], None, "data.source: no such file"),
    ("empty-data-file", T, [*TINY, "--data", "./empty.txt"], _empty_text, "empty"),
    ("builtin-typo", T, [*TINY, "--data", "shakespear"], None, "did you mean 'shakespeare'?"),
    (
        "hub-name-offline",
        T,
        [*TINY, "--data", "nobody-xyz/no-such-dataset"],
        None,
        "nobody-xyz/no-such-dataset",
    ),
    (
        "missing-tokenizer",
        T,
        [*TINY, "--set", "data.tokenizer=./no_tok.json"],
        None,
        "no such tokenizer",
    ),
    ("resume-without-checkpoint", T, [*TINY, "--resume"], None, "--resume: no checkpoint"),
    ("run-dir-is-a-file", T, TINY, _a_file, "is not a directory"),
    (
        "run-dir-under-a-file",
        T,
        ["--config", "tiny", "--run-dir", "r/sub/run"],
        _a_file,
        "--run-dir: cannot create 'r/sub/run': 'r' is a file, not a folder",
    ),
    (
        "cache-dir-under-a-file",
        T,
        [*TINY[:2], "--run-dir", "x", "--set", "data.cache_dir=r/cache"],
        _a_file,
        "data.cache_dir: cannot create 'r/cache': 'r' is a file",
    ),
    (
        "optimizer-rule-names-user-keys",
        T,
        [*TINY, "--set", "optimizer.skip_nonfinite=false", "--set", "optimizer.loss_scale=dynamic"],
        None,
        "optimizer.skip_nonfinite=False with loss_scale='dynamic'",
    ),
    ("no-prompts", T, [*TINY, "--set", "sampling.prompts=[]"], None, "sampling.prompts: give at"),
    ("bad-profile-steps", T, [*TINY, "--profile-steps", "5"], None, "--profile-steps"),
    (
        "init-from-nowhere",
        T,
        ["--config", "gpt2_small", "--run-dir", "r", "--init-from", "./x"],
        None,
        "neither a folder nor a hub name",
    ),
    (
        "init-from-random-safetensors",
        T,
        ["--config", "gpt2_small", "--run-dir", "r", "--init-from", "hf"],
        _random_safetensors,
        "--init-from: hf/model.safetensors is not a safetensors file",
    ),
    (
        "init-from-config-without-hidden-size",
        T,
        [*LLAMA_RUN, "--init-from", "no-hidden-size"],
        _hf_config_with_holes,
        "--init-from: config.json: hidden_size is missing; it sets the model's size",
    ),
    (
        "init-from-fp8-weight-without-its-scales",
        T,
        [*LLAMA_RUN, "--init-from", "fp8"],
        _fp8_without_scales,
        "--init-from: fp8/model.safetensors: tensor model.layers.0.self_attn.q_proj.weight is "
        "stored in FP8 (F8_E4M3) without its scales",
    ),
    (
        "plan-init-from-config-with-null-heads",
        T,
        [*LLAMA_RUN, "--plan", "h100", "--init-from", "null-heads"],
        _hf_config_with_holes,
        "--init-from: config.json: num_attention_heads is null; transformers' GptOssConfig",
    ),
    (
        "eval-config-with-a-string-for-layers",
        E,
        ["--checkpoint", "nested", "--data", "held.txt"],
        _hf_config_with_holes,
        "--checkpoint: config.json: text_config.num_hidden_layers is '2' (a string), not an "
        "integer >= 1",
    ),
    ("mesh-does-not-fit", T, [*TINY, "--set", "mesh.data=3"], None, "mesh"),
    (
        "batch-not-divisible-by-mesh",
        T,
        [*TINY, "--set", "data.batch_size=12"],
        None,
        "must be divisible by the data×fsdp×expert mesh size (8)",
    ),
    (
        "tensor-does-not-divide-heads",
        T,
        [*TINY, "--set", "mesh.tensor=3", "--set", "mesh.strategy=tp"],
        None,
        "mesh.tensor: 3 must divide model.num_heads",
    ),
    ("unknown-flag", T, [*TINY, "--bogus"], None, "unrecognized arguments: --bogus"),
    ("no-config-flag", T, ["--run-dir", "r"], None, "the following arguments are required"),
    ("empty-config", T, ["--config", "empty.yaml"], _config_files, "holds no settings"),
    ("duplicate-key", T, ["--config", "twice.yaml"], _config_files, "'lr' is given twice"),
    ("config-not-utf8", T, ["--config", "latin1.yaml"], _config_files, "not UTF-8 text"),
    ("config-is-a-folder", T, ["--config", "folder.yaml"], _config_files, "is a directory"),
    ("base-cycle", T, ["--config", "a.yaml"], _config_files, "base: a cycle"),
    ("absurd-steps", T, [*TINY, "--set", "train.steps=10" + "0" * 24], None, "train.steps"),
    (
        "resume-and-init-from",
        T,
        [*TINY, "--resume", "--init-from", "gpt2"],
        None,
        "--init-from: cannot be combined with --resume",
    ),
    ("empty-data-flag", T, [*TINY, "--data", " "], None, "--data: empty source"),
    # #68: tokamax's Mosaic GPU attention needs an sm90/sm100 GPU: named on a CPU, one line.
    (
        "tokamax-attention-on-cpu",
        T,
        [*TINY, "--set", "model.attention_impl=tokamax"],
        None,
        "implementation 'tokamax' runs tokamax's Mosaic GPU attention, which needs an sm90 or "
        "sm100 GPU (Hopper, Blackwell); this run's device is cpu",
    ),
    ("zero-batch", T, [*TINY, "--set", "data.batch_size=0"], None, "data.batch_size: 0 is too"),
    # #70: the sparse attention indexer's loss on a model without an indexer (refused as the
    # model is built: an --init-from run sets it on the checkpoint's architecture).
    (
        "index-loss-without-an-indexer",
        T,
        [*TINY, "--set", "model.mla.index_loss_weight=1.0"],
        None,
        "mla.index_loss_weight: 1.0 trains a sparse attention's indexer and this model has no "
        "sparse-attention indexer (mla.index_* unset); set mla.index_loss_weight to 0",
    ),
    # GRPO (issue #55): rewards are named code, checked before anything is written.
    (
        "grpo-unknown-reward",
        T,
        [*GRPO, "--set", "grpo.rewards=[exact_anwser]"],
        None,
        "grpo.rewards: unknown reward 'exact_anwser'; the rewards are: exact_answer, format",
    ),
    (
        "grpo-reward-raises-on-probe",
        T,
        [*GRPO, "--set", "data.source=p.jsonl"],
        _prompts_without_answers,
        "grpo.rewards: reward 'exact_answer' raised KeyError",
    ),
    (
        "grpo-batch-not-groups",
        T,
        [*GRPO, "--set", "data.batch_size=12"],
        None,
        "data.batch_size: 12 completions per step must be a multiple of grpo.group_size (8)",
    ),
    (
        "grpo-checkpoint-inside-rollout",
        T,
        [*GRPO, "--set", "grpo.iterations=4", "--set", "train.checkpoint_every=6"],
        None,
        "train.checkpoint_every: 6 must be a multiple of grpo.iterations (4)",
    ),
    # grpo.overlap (issue #72): the sampler's devices are the run's last ones, the rest train.
    (
        "grpo-overlap-without-sampler",
        T,
        [*GRPO, "--set", "grpo.overlap=1"],
        None,
        "grpo.overlap: 1 samples on devices of its own while the update runs; set "
        "grpo.sampler_devices=N",
    ),
    (
        "grpo-sampler-leaves-no-trainer",
        T,
        [*GRPO, "--set", "grpo.overlap=1", "--set", "grpo.sampler_devices=8"],
        None,
        "grpo.sampler_devices: 8 of the run's 8 devices sample, which leaves none to train on; "
        "set it to at most 7",
    ),
    (
        "grpo-sampler-rows-not-divided",
        T,
        [*GRPO, "--set", "grpo.overlap=1", "--set", "grpo.sampler_devices=3"],
        None,
        "grpo.sampler_devices: 3 sampler devices split the rollout's 64 completions "
        "(data.batch_size) by rows, which they do not divide",
    ),
    # #72 point 4: a plan's or a search's split, against --plan TARGET's devices, before its
    # compiler is opened.
    (
        "plan-grpo-sampler-leaves-no-trainer",
        T,
        ["--config", "grpo_tiny", "--plan", "8xh100", "--set", "grpo.overlap=1", "--set",
         "grpo.sampler_devices=8"],
        None,
        "grpo.sampler_devices: 8 of --plan 8xh100's 8 devices sample, which leaves none to "
        "train on; set it to at most 7",
    ),  # fmt: skip
    (
        "search-samplers-leave-no-trainer",
        T,
        ["--config", "grpo_tiny", "--plan", "8xh100", "--search", "--search-samplers", "4,8"],
        None,
        "--search-samplers: '8' is no count of sampler devices of --plan 8xh100's 8: each must "
        "leave a trainer; give integers from 1 to 7",
    ),
    (
        "grpo-sampler-without-overlap",
        T,
        [*GRPO, "--set", "grpo.sampler_devices=2"],
        None,
        "grpo.sampler_devices: 2 sampler devices without grpo.overlap; set grpo.overlap=1",
    ),
    (
        "grpo-without-prompts",
        T,
        [*TINY, "--set", "grpo.group_size=4"],
        None,
        "grpo.group_size: applies to prompt data only (GRPO); set data.format=prompts",
    ),
    (
        "prompts-without-grpo",
        T,
        [*GRPO, "--set", "grpo.rewards=[]"],
        None,
        "grpo.rewards: data.format=prompts trains with GRPO, which needs at least one reward",
    ),
    (
        "grpo-completions-too-long",
        T,
        [*GRPO, "--set", "grpo.max_new_tokens=40"],
        None,
        "grpo.max_new_tokens: data.seq_len (32, the prompts) + 40 exceeds model.max_seq_len (64)",
    ),
    # GRPO's loss variants (issue #72): a combination TRL would run with a warning, or where one
    # setting would silently do nothing, is refused in one line naming the key and the fix.
    (
        "grpo-luspo-token-ratios",
        T,
        [*GRPO, "--set", "grpo.loss_type=luspo"],
        None,
        "grpo.importance_sampling_level: luspo weights GSPO's sequence ratio by the completion's "
        "length; set grpo.importance_sampling_level to sequence",
    ),
    (
        "grpo-cap-inside-the-clip",
        T,
        [*GRPO, "--set", "grpo.epsilon_high=0.28", "--set", "grpo.delta=1.2"],
        None,
        "grpo.delta: 1.2 must be > 1 + ε_high (1.28)",
    ),
    (
        "grpo-sapo-setting-under-dapo",
        T,
        [*GRPO, "--set", "grpo.sapo_temperature_neg=2.0"],
        None,
        "grpo.sapo_temperature_neg: applies to loss_type sapo, not dapo; drop it or change "
        "grpo.loss_type",
    ),
    ("one-token-sequences", T, [*TINY, "--set", "data.seq_len=1"], None, "data.seq_len: 1 is"),
    ("dropout-one", T, [*TINY, "--set", "model.dropout=1.0"], None, "model.dropout"),
    ("beta-one", T, [*TINY, "--set", "optimizer.b1=1.0"], None, "optimizer.b1"),
    ("log-every-zero", T, [*TINY, "--set", "train.log_every=0"], None, "train.log_every"),
    ("bad-wandb-mode", T, [*TINY, "--set", "logging.wandb_mode=loud"], None, "wandb_mode"),
    (
        "warmup-past-end",  # an explicit one: a preset's is a share of the run (#40 point 2)
        T,
        [*TINY, "--set", "train.steps=10", "--set", "optimizer.schedule.warmup_steps=50"],
        None,
        "optimizer.schedule.warmup_steps=50 is longer",
    ),
    (
        "fp16-params",
        T,
        [*TINY, "--set", "model.precision.param_dtype=float16"],
        None,
        "float16 parameters",
    ),
    (
        "fp16-no-scaling",
        T,
        [*TINY, "--set", "model.precision.compute_dtype=float16"],
        None,
        "'dynamic'",
    ),
    (
        "two-free-mesh-axes",
        T,
        [*TINY, "--set", "mesh.data=-1", "--set", "mesh.fsdp=-1"],
        None,
        "mesh: at most one of pipeline, data, fsdp, expert, context, tensor may be -1",
    ),
    (
        "keep-best-without-eval",
        T,
        [*TINY, "--set", "checkpoint.keep_best=2", "--set", "train.eval_every=0"],
        None,
        "checkpoint.keep_best: needs train.eval_every > 0",
    ),
    ("profile-past-end", T, [*TINY, "--profile-steps", "5:100000"], None, "ends after train.steps"),
    ("bad-coordinator", T, [*TINY, "--coordinator", "nohost"], None, "--coordinator: expected"),
    ("zero-processes", T, [*TINY, "--num-processes", "0"], None, "--num-processes: must be >= 1"),
    (
        "rank-out-of-range",
        T,
        [*TINY, "--num-processes", "2", "--process-id", "2"],
        None,
        "--process-id: must be in 0..1",
    ),
    ("zero-init-timeout", T, [*TINY, "--init-timeout", "0"], None, "--init-timeout: must be > 0"),
    # #71: what was checked late (after the plan, the search or the data) or not at all.
    (
        "plan-json-into-a-missing-folder",
        T,
        ["--config", "tiny", "--plan", "h100", "--plan-json", "no/such/plan.json"],
        None,
        "--plan-json: the folder 'no/such' of 'no/such/plan.json' does not exist; create it",
    ),
    (
        "plan-json-names-a-folder",
        T,
        ["--config", "tiny", "--plan", "h100", "--plan-json", "out"],
        _a_folder,
        "--plan-json: 'out' names a folder; name a file in it, e.g. 'out/plan.json'",
    ),
    (
        "plan-json-in-an-immutable-folder",
        T,
        ["--config", "tiny", "--plan", "h100", "--plan-json", "ro/plan.json"],
        _immutable_parent,
        "--plan-json: cannot write into 'ro' (",
    ),
    (
        "plan-json-over-an-immutable-file",
        T,
        ["--config", "tiny", "--plan", "h100", "--plan-json", "plan.json"],
        _immutable_file,
        "--plan-json: cannot write 'plan.json' (",
    ),
    (
        "search-out-into-a-missing-folder",
        T,
        ["--config", "tiny", "--plan", "h100", "--search", "--search-out", "no/such/b.yaml"],
        None,
        "--search-out: the folder 'no/such' of 'no/such/b.yaml' does not exist; create it",
    ),
    (
        "search-out-names-a-folder",
        T,
        ["--config", "tiny", "--plan", "h100", "--search", "--search-out", "out"],
        _a_folder,
        "--search-out: 'out' names a folder; name a file in it, e.g. 'out/search.yaml'",
    ),
    (
        "plan-json-without-plan",
        T,
        [*TINY, "--plan-json", "plan.json"],
        None,
        "--plan-json: writes the figures of --plan TARGET, which this command does not ask for",
    ),
    # #73: --replay's own flags without it; --replay of a folder that is no run.
    ("steps-without-replay", T, [*TINY, "--steps", "1:2"], None, "--steps: applies to --replay"),
    ("probe-without-replay", T, [*TINY, "--probe", "tokens"], None, "--probe: applies to --replay"),
    (
        "replay-an-empty-folder",
        T,
        ["--replay", "empty_run", "--steps", "1:2"],
        _empty_dir,
        "--replay: 'empty_run/config.yaml' is missing, so what the run trained is unknown; give",
    ),
    (
        "grpo-nan-reward-weight",
        T,
        [*GRPO, "--set", "grpo.reward_weights=[nan]"],
        None,
        "grpo.reward_weights: the weight of reward 'exact_answer', nan, is not a finite number",
    ),
    (
        "grpo-infinite-reward-weight",
        T,
        [*GRPO, *_sets(["grpo.rewards=[exact_answer,format]", "grpo.reward_weights=[1.0,-inf]"])],
        None,
        "grpo.reward_weights: the weight of reward 'format', -inf, is not a finite number",
    ),
    (
        "fp8-amax-history-of-a-billion",
        T,
        [*TINY, *_sets(["model.precision.matmul=fp8", *AMAX_OF_A_BILLION])],
        None,
        "model.precision.fp8_amax_history: 1000000000 is too large; allowed: <= 1024",
    ),
    (
        "fp8-settings-without-fp8",
        T,
        [*TINY, "--set", "model.precision.fp8_scaling=rowwise"],
        None,
        "model.precision.fp8_scaling='rowwise' has no effect: matmul is 'default' (no float8 "
        "products); set matmul='fp8' to use it, or leave fp8_scaling at its default",
    ),
    (
        "amax-history-with-current-scaling",
        T,
        [*TINY, *_sets(["model.precision.matmul=fp8", "model.precision.fp8_amax_history=64"])],
        None,
        "model.precision.fp8_amax_history=64 has no effect: fp8_recipe is 'current'",
    ),
    (
        "init-from-rope-over-no-dims",
        T,
        [*LLAMA, "--init-from", "hf"],
        _llama_rotating_nothing,
        "--init-from: config.json: rope_parameters.partial_rotary_factor is 0, not a number in "
        "(0, 1]",
    ),
    (
        "init-from-deepseek-v32-moe-before-dense",
        T,
        [*LLAMA, "--init-from", "hf"],
        _deepseek_v32_sparse_first,
        "--init-from: config.json mlp_layer_types ['sparse', 'dense'] is not supported: tjx's "
        "DeepSeek MoE layers are first_k_dense_replace (1) dense layers then sparse ones",
    ),
    (
        "init-from-partial-rope-of-zero",
        T,
        [*LLAMA, "--init-from", "hf"],
        _qwen3_5_rotating_nothing,
        "--init-from: config.json: partial_rotary_factor is 0, not a number in (0, 1]",
    ),
    (
        "init-from-kimi-k25-int8-experts",
        T,
        [*LLAMA, "--init-from", "hf"],
        _kimi_k25_int8,
        "--init-from: config.json: quantization_config.config_groups.group_0.weights is int8 "
        "symmetric, strategy 'group': tjx reads pack-quantized INT4 weights",
    ),
    (
        "init-from-minimax-m2-lightning-attention",
        T,
        [*LLAMA, "--init-from", "hf"],
        _minimax_m2_lightning,
        "--init-from: config.json attn_type_list [0] is not supported for minimax_m2: 0 marks a "
        "lightning-attention layer (MiniMax-01",
    ),
    (
        "delta-layers-on-a-split-sequence",
        T,
        [*LLAMA, *_sets(DELTA), *CONTEXT],
        None,
        "model.mixer_pattern: delta layers (Gated DeltaNet) carry a recurrent state along the "
        "sequence, which would restart on each device's part with mesh.context=2",
    ),
    (
        "kv-shared-layers-on-a-split-sequence",
        T,
        [*LLAMA, *_sets(KV_SHARED), *CONTEXT],
        None,
        "model.gemma4.kv_shared_layers: layers that read an earlier layer's keys and values (1) "
        "do not run on a split sequence with mesh.context=2",
    ),
    (
        "init-from-delta-layers-on-a-split-sequence",
        T,
        [*LLAMA, "--init-from", "hf", *CONTEXT],
        _hf_qwen3_5,
        "model.mixer_pattern: delta layers (Gated DeltaNet) carry a recurrent state",
    ),
    ("eval-zero-batches", E, ["--checkpoint", "x", "--max-batches", "0"], None, "--max-batches"),
    ("eval-zero-new-tokens", E, ["--checkpoint", "x", "--max-new-tokens", "0"], None, "tokens"),
    ("eval-negative-temperature", E, ["--checkpoint", "x", "--temperature", "-1"], None, ">= 0"),
    (
        "eval-random-safetensors",
        E,
        ["--checkpoint", "hf", "--data", "held.txt"],
        _random_safetensors,
        "--checkpoint: hf/model.safetensors is not a safetensors file",
    ),
    ("eval-missing-run", E, ["--checkpoint", "nowhere"], None, "no such run directory"),
    ("eval-not-a-run", E, ["--checkpoint", "empty_run"], _empty_dir, "has no config.yaml"),
    ("eval-no-target", E, [], None, "one of the arguments --checkpoint --compare is required"),
    ("eval-bad-batch", E, ["--checkpoint", "x", "--batch-size", "0"], None, "--batch-size"),
    ("eval-nan-temperature", E, ["--checkpoint", "x", "--temperature", "nan"], None, "finite"),
    ("eval-inf-temperature", E, ["--checkpoint", "x", "--temperature", "inf"], None, "finite"),
    (
        "eval-png-in-missing-folder",
        E,
        ["--checkpoint", "x", "--attention-png", "no/such/dir/a.png"],
        None,
        "--attention-png: the folder",
    ),
]


#: Cases run as real processes (``python -m APP``), one per way out: a config error the trainer
#: returns, an argparse error (its SystemExit), the evaluator's own error, and bad data found
#: after the first use of jax. The rest call the app's ``main`` in this process (`call_app`).
AS_PROCESSES = {"unknown-key", "unknown-flag", "eval-missing-run", "empty-file"}


@pytest.mark.parametrize(
    ("case", "app", "argv", "setup", "needle"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, case, app, argv, setup, needle):
    try:
        if setup is not None:
            setup(tmp_path)
        before = sorted(p.name for p in tmp_path.iterdir())
        if case in AS_PROCESSES:
            proc = run_app(app, argv, tmp_path, timeout=300)
        else:
            proc = call_app(app, argv, tmp_path)
    finally:
        writable_again()
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert needle in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # One line: the error (argparse's own errors also print the usage before it).
    assert sum(f"{app}: error:" in line for line in proc.stderr.splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run dir, nothing written


BAD_DATA = [
    # (id, file, its bytes, expected text in the one error line): issue #46's hostile corpora.
    ("empty-file", "empty.txt", b"", "empty dataset"),
    ("binary-file", "blob.bin", bytes(range(256)) * 4, "unsupported file type"),
    ("binary-as-text", "blob.txt", bytes(range(256)) * 4, "not valid UTF-8"),
    (
        "latin1-text",
        "latin1.txt",
        "caf\u00e9 cr\u00e8me\n".encode("latin-1") * 100,
        "not valid UTF-8",
    ),
    (
        "broken-jsonl",
        "broken.jsonl",
        b'{"text": "fine"}\n{"text": broken\n',
        "line 2: invalid JSON",
    ),
    ("fake-parquet", "fake.parquet", b"no parquet here\n" * 20, "not a readable Parquet file ("),
]


@pytest.mark.parametrize(("case", "name", "data", "needle"), BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_one_line_naming_key_and_file_and_leaves_no_debris(
    tmp_path, case, name, data, needle
):
    work, cache = tmp_path / "work", tmp_path / "cache"  # the cache: what ~/.cache/tjx/data is
    work.mkdir()
    cache.mkdir()
    (work / name).write_bytes(data)
    argv = [*TINY, "--data", f"./{name}"]
    if case in AS_PROCESSES:
        proc = run_app(T, argv, work, env=app_env(TJX_CACHE=str(cache)))
    else:
        proc = call_app(T, argv, work, env={"TJX_CACHE": str(cache)})
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Failed to read" not in proc.stderr, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if "trainer: error:" in x]
    assert len(errors) == 1, proc.stderr
    line = errors[0]
    assert "trainer: error: data.source: " in line and name in line and needle in line, line
    assert sorted(p.name for p in work.iterdir()) == [name]  # no run directory
    assert list(cache.rglob("*")) == []  # no shard folder, no .train.lock


def test_tables_are_large_enough():
    from tests_integration import test_bad_runs

    assert len(CASES) + len(test_bad_runs.CASES) >= 80


DIVERGED = [
    # (id, settings): the loss turns NaN and stays NaN, fewer steps than train.max_bad_steps=25
    (
        "fp16-dynamic-scale-lr10",
        [
            "model.precision.compute_dtype=float16",
            "optimizer.loss_scale=dynamic",
            "optimizer.schedule.peak_lr=10",
            "optimizer.clip_norm=null",
        ],
    ),
    (
        "sgd-lr10",
        ["optimizer.name=sgd", "optimizer.schedule.peak_lr=10", "optimizer.clip_norm=null"],
    ),
]


@pytest.mark.parametrize("sets", [c[1] for c in DIVERGED], ids=[c[0] for c in DIVERGED])
def test_a_run_ending_inside_a_nonfinite_streak_exits_3_and_saves_nothing_from_it(tmp_path, sets):
    argv = ["--config", "tiny", "--run-dir", "r"]
    for item in [*SMALL, "train.steps=20", "train.checkpoint_every=5", *sets]:
        argv += ["--set", item]
    proc = run_app(T, argv, tmp_path, timeout=600)
    assert proc.returncode == 3, (proc.stdout[-2000:], proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if "trainer: error:" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    found = re.search(
        r"training (?:ended inside a non-finite streak|diverged): steps (\d+)–20 ", errors[0]
    )
    assert found, errors[0]
    first_bad = int(found.group(1))
    run = tmp_path / "r"
    saved = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert all(step < first_bad for step in saved), (saved, errors[0])  # none from the streak
    last = f"the last checkpoint is step {saved[-1]}" if saved else "no checkpoint was saved"
    assert last in errors[0], errors[0]
    assert not (run / "final.json").exists() and "done:" not in proc.stdout
    # The log is standard JSON (jq reads it): what was not finite is null, named, read back.
    lines = (run / "metrics.jsonl").read_text().splitlines()
    strict = [json.loads(x, parse_constant=_refuse_bare_token) for x in lines]
    named = [(i, k) for i, r in enumerate(strict) for k in r.get("nonfinite", {})]
    assert named, lines[-3:]  # a loss or a gradient norm that was not finite
    records = read_log(run)
    assert all(strict[i][k] is None and not math.isfinite(records[i][k]) for i, k in named)


def _refuse_bare_token(token: str) -> None:
    raise AssertionError(f"metrics.jsonl holds a bare {token}: not standard JSON")
