"""Every ``config.json`` key a family's import reads, damaged one at a time: a required key left
out, null where transformers takes none, a wrong type, a value out of range, a per-layer list of
the wrong length; each is one `HFConfigError` line naming ``config.json`` and the key (issue #71,
point 4: tracebacks and silent acceptances before). And a config that leaves every optional key
out reads with transformers 5.24's defaults for its family (table below, from its
``configuration_*.py``), not tjx's own guesses. Configs only: no model is built, no weight read.
"""

import dataclasses
import json

import pytest

from tjx import nn as tnn
from tjx.nn.families.deepseek_v32.hf import deepseek_v32_config_to_hf
from tjx.nn.families.gemma4.hf_write import gemma4_config_to_hf
from tjx.nn.families.llama4.hf_write import llama4_config_to_hf
from tjx.nn.families.minimax_m2.hf_write import minimax_m2_config_to_hf
from tjx.nn.families.qwen3_5_moe.hf import qwen3_5_moe_config_to_hf
from tjx.nn.families.registry import FAMILIES
from tjx.nn.hf import config as llama_hf
from tjx.nn.hf import (
    deepseek,
    families,
    gemma,
    glm4_moe,
    gpt2,
    gpt_oss,
    moe,
    qwen3_5,
    qwen3_next,
)
from tjx.nn.hf.config import HARMLESS
from tjx.nn.hf.deepseek import deepseek_config_to_hf
from tjx.nn.hf.families import family_config_to_hf
from tjx.nn.hf.glm4_moe import glm4_moe_config_to_hf
from tjx.nn.hf.gpt_oss import gpt_oss_config_to_hf
from tjx.nn.hf.keys import REFUSE, REQUIRED, UNSET, HFConfigError, Key
from tjx.nn.hf.moe import moe_config_to_hf
from tjx.nn.hf.plan import HF_MODEL_TYPES
from tjx.nn.hf.qwen3_5 import qwen3_5_config_to_hf
from tjx.nn.hf.qwen3_next import qwen3_next_config_to_hf
from tjx_nn_tests.hf.test_family_checkpoints import BASE as FAMILY_BASE
from tjx_nn_tests.hf.test_family_checkpoints import CONFIGS as FAMILY_CONFIGS
from tjx_nn_tests.hf.test_gemma4 import GEMMA4
from tjx_nn_tests.hf.test_gpt_oss_glm import FAMILIES as OSS_GLM
from tjx_nn_tests.hf.test_gpt_oss_glm import SIZES as OSS_GLM_SIZES
from tjx_nn_tests.hf.test_llama4 import LLAMA4
from tjx_nn_tests.hf.test_minimax_m2 import MINIMAX
from tjx_nn_tests.hf.test_moe import SIZES as MOE_SIZES
from tjx_nn_tests.hf.test_moe import TYPES as MOE_TYPES
from tjx_nn_tests.hf.test_qwen3_5 import QWEN3_5
from tjx_nn_tests.hf.test_qwen3_5_moe import QWEN3_5_MOE
from tjx_nn_tests.hf.test_qwen3_next import QWEN3_NEXT
from tjx_nn_tests.test_mla_deepseek import V2, V3

LLAMA = dict(vocab_size=48, max_seq_len=32, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2)
#: Each type's spec (`tjx.nn.hf.keys.Spec`): the keys its import reads.
SPECS = {
    **llama_hf.SPECS,
    **families.SPECS,
    **gemma.SPECS,
    **moe.SPECS,
    **deepseek.SPECS,
    "gpt2": gpt2.SPEC,
    "gpt_oss": gpt_oss.SPEC,
    "glm4_moe": glm4_moe.SPEC,
    "qwen3_5_text": qwen3_5.SPEC,
    "qwen3_next": qwen3_next.SPEC,
    **{family.model_types[0]: family.spec for family in FAMILIES},
}
#: The image-text types, read as their text model (``text_config``).
IMAGE_TEXT = {"qwen3_5": "qwen3_5_text", "llama4": "llama4_text", "gemma4": "gemma4_text"}
IMAGE_TEXT["kimi_k25"] = "kimi_k2"
IMAGE_TEXT["qwen3_5_moe"] = "qwen3_5_moe_text"


def _valid(model_type: str) -> dict:
    """A config.json tjx writes for a tiny model of ``model_type`` (the family tests' configs)."""
    if model_type in IMAGE_TEXT:
        return {"model_type": model_type, "text_config": _valid(IMAGE_TEXT[model_type])}

    def config(**fields):
        return tnn.make_config(tnn.LlamaConfig, fields)

    if model_type == "gpt2":
        return gpt2.config_to_hf(
            tnn.GPT2Config(vocab_size=24, max_seq_len=16, d_model=16, num_layers=2, num_heads=4)
        )
    if model_type in llama_hf.LLAMA_TYPES:
        extra = {
            "mistral": dict(**{"attention.sliding_window": 8}),
            "qwen2": dict(**{"attention.qkv_bias": True}),
        }
        return llama_hf.llama_config_to_hf(config(**LLAMA, **extra.get(model_type, {})), model_type)
    if model_type in FAMILY_CONFIGS:
        fields = FAMILY_BASE | FAMILY_CONFIGS[model_type]
        return family_config_to_hf(config(**fields), model_type)
    if model_type in MOE_TYPES:
        return moe_config_to_hf(config(**MOE_SIZES, **MOE_TYPES[model_type]), model_type)
    if model_type == "kimi_k2":  # Kimi-K2's folders: a DeepSeek-V3 config under its own type
        return _valid("deepseek_v3") | {"model_type": "kimi_k2"}
    if model_type == "deepseek_v32":  # V3's with its sparse attention's indexer
        v3 = tnn.make_config(tnn.LlamaConfig, {**V3, "position": tnn.PositionConfig()})
        sparse = dict(index_topk=4, index_n_heads=2, index_head_dim=8)
        return deepseek_v32_config_to_hf(v3.replace(mla=dataclasses.replace(v3.mla, **sparse)))
    if model_type in deepseek.DEEPSEEK_TYPES:
        fields = V2 if model_type == "deepseek_v2" else {**V3, "position": tnn.PositionConfig()}
        return deepseek_config_to_hf(config(**fields), model_type)
    if model_type in OSS_GLM:
        fields = {**OSS_GLM_SIZES, **OSS_GLM[model_type]}
        write = gpt_oss_config_to_hf if model_type == "gpt_oss" else glm4_moe_config_to_hf
        return write(config(**fields))  # gpt_oss: a dotted mlp.activation
    writers = {
        "qwen3_5_text": (qwen3_5_config_to_hf, QWEN3_5),
        "qwen3_next": (qwen3_next_config_to_hf, QWEN3_NEXT),
        "llama4_text": (llama4_config_to_hf, LLAMA4),
        "gemma4_text": (gemma4_config_to_hf, GEMMA4),
        "qwen3_5_moe_text": (qwen3_5_moe_config_to_hf, QWEN3_5_MOE),
        "minimax_m2": (minimax_m2_config_to_hf, MINIMAX),
    }
    write, fields = writers[model_type]
    return write(config(**fields))


def _read(folder, hf):
    """``read_hf_config`` of a folder holding ``hf`` as its config.json (and no real weights:
    the config is read first, and a refused one never reaches them)."""
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf))
    (folder / "model.safetensors").write_bytes(b"")
    return tnn.read_hf_config(folder)


def _damages(name: str, key: Key) -> list[tuple[str, object]]:
    """The damages of key ``name`` its spec refuses: (what, value; ``DROP`` leaves it out)."""
    out: list[tuple[str, object]] = []
    if key.default in (REQUIRED, UNSET):
        out.append(("is missing", "DROP"))
    if key.null in (REFUSE, UNSET):
        out.append(("is null", None))
    wrong = {"int": ["7", True, 1.5], "float": ["7", True], "bool": ["yes", 1], "str": [7],
             "list": ["x", 7], "dict": ["x", [1]]}[key.kind]  # fmt: skip
    out += [("is", value) for value in wrong]
    if key.kind in ("int", "float"):
        if key.low is not None:
            out.append(("is", key.low - 1))
        if key.above is not None:
            out.append(("is", key.above))
        if key.high is not None:
            out.append(("is", key.high + 1))
    return out


ALL_TYPES = [t for t in HF_MODEL_TYPES if t not in IMAGE_TEXT]


def test_every_model_type_tjx_loads_has_a_spec():
    assert sorted(SPECS) == sorted(ALL_TYPES)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_every_key_a_family_reads_is_in_its_spec_and_every_damage_is_one_line(tmp_path, model_type):
    spec, hf = SPECS[model_type], _valid(model_type)
    assert hf["model_type"] == model_type
    _read(tmp_path / "ok", hf)  # the valid config reads
    # Every key tjx writes (and so reads back) but bookkeeping is typed by the spec.
    assert set(hf) - set(spec.keys) - HARMLESS == set()
    wrong = []
    for name, key in spec.keys.items():
        for what, value in _damages(name, key):
            damaged = {k: v for k, v in (hf | {name: value}).items() if v != "DROP"}
            try:
                _read(tmp_path / "bad", damaged)
            except HFConfigError as err:
                line = str(err)
                said = "must list" if key.per_layer and what == "is" else what
                if "\n" in line or not line.startswith(f"config.json: {name} {said}"):
                    wrong.append(f"{name}={value!r}: {line}")
            else:
                wrong.append(f"{name}={value!r} ({what}) was accepted")
    assert wrong == []


#: The issue's damages, one line each for every type (tracebacks before: KeyError, TypeError).
ISSUE = [
    ("hidden_size", "DROP", "hidden_size is missing"),
    ("num_hidden_layers", "DROP", "num_hidden_layers is missing"),
    ("num_attention_heads", None, "num_attention_heads is null"),
    ("num_attention_heads", "4", "num_attention_heads is '4' (a string), not an integer >= 1"),
    ("vocab_size", True, "vocab_size is True (a bool), not an integer >= 1"),
    ("num_hidden_layers", 0, "num_hidden_layers is 0, not an integer >= 1"),
]
GPT2_NAMES = {
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
}


@pytest.mark.parametrize("model_type", [*ALL_TYPES, *IMAGE_TEXT])
def test_the_issues_damages_are_one_line_naming_the_key(tmp_path, model_type):
    hf, prefix = _valid(model_type), ""
    if model_type in IMAGE_TEXT:
        prefix = "text_config."
    for key, value, needle in ISSUE:
        if model_type == "gpt2":
            needle = needle.replace(key, GPT2_NAMES.get(key, key))
            key = GPT2_NAMES.get(key, key)
        inner = hf["text_config"] if prefix else hf
        damaged = {k: v for k, v in (inner | {key: value}).items() if v != "DROP"}
        with pytest.raises(HFConfigError) as info:
            _read(tmp_path, hf | {"text_config": damaged} if prefix else damaged)
        assert str(info.value).startswith(f"config.json: {prefix}{needle}"), str(info.value)


@pytest.mark.parametrize(
    ("model_type", "change", "needle"),
    [
        ("llama", {"num_key_value_heads": 3}, "num_key_value_heads 3 does not divide"),
        ("qwen3_next", {"num_key_value_heads": 8}, "num_key_value_heads 8 does not divide"),
        ("llama", {"head_dim": None, "hidden_size": 30}, "hidden_size 30 is not a multiple"),
        ("gpt2", {"n_head": 5}, "n_head 5 does not divide n_embd 16"),
        ("qwen3", {"layer_types": ["full_attention"]}, "layer_types must list 2 of"),
        ("gemma4_text", {"layer_types": "sliding"}, "layer_types must list 4 of"),
        ("olmo3", {"layer_types": ["sliding_attention", 7]}, "got 2 entries with 7"),
        ("mixtral", {"num_experts_per_tok": 9}, "num_experts_per_tok 9 exceeds"),
        ("deepseek_v3", {"n_group": 3}, "n_group 3 does not divide n_routed_experts 8"),
        ("glm4_moe", {"topk_group": 5}, "topk_group 5 exceeds n_group 4"),
        ("qwen3_5_text", {"linear_num_key_heads": 3}, "linear_num_key_heads 3 does not divide"),
        ("gpt_oss", {"rope_parameters": {"rope_theta": None}}, "rope_parameters.rope_theta is"),
        ("glm4_moe", {"rope_parameters": {"partial_rotary_factor": 0}}, "partial_rotary_factor"),
        (
            "gemma4_text",
            {"rope_parameters": {"full_attention": {"rope_theta": "1e6"}}},
            "rope_parameters.full_attention.rope_theta is '1e6' (a string)",
        ),
        ("deepseek_v2", {"num_experts_per_tok": None}, "has no value for it and tjx needs one"),
        ("llama4", {"tie_word_embeddings": "no"}, "config.json: tie_word_embeddings is 'no'"),
        ("phi3", {"rms_norm_eps": float("nan")}, "rms_norm_eps is nan, not a number > 0"),
    ],
)
def test_keys_that_do_not_fit_together_are_one_line(tmp_path, model_type, change, needle):
    hf = _valid(model_type) | change
    if model_type == "deepseek_v2":
        del hf["num_experts_per_tok"]
        with pytest.raises(HFConfigError, match="num_experts_per_tok is missing; transformers'"):
            _read(tmp_path, hf)
        hf["num_experts_per_tok"] = None
    with pytest.raises(HFConfigError) as info:
        _read(tmp_path, hf)
    assert needle in str(info.value) and "\n" not in str(info.value)


#: transformers 5.24's defaults (its ``configuration_*.py``) for what a config.json leaves out,
#: as the tjx config fields they become; the sizes given (required) fit them. Before #71 tjx read
#: several otherwise (one key/value head per query head, 2048 positions, no window ...).
SIZES = dict(vocab_size=64, hidden_size=64, intermediate_size=32, num_hidden_layers=4)
DEFAULTS = {
    "llama": ({}, dict(num_kv_heads=32, head_dim=2, max_seq_len=2048, **{"norm.eps": 1e-6})),
    "mistral": ({}, dict(num_kv_heads=8, max_seq_len=131072, **{"attention.sliding_window": 4096})),
    "qwen2": ({}, dict(num_kv_heads=32, max_seq_len=32768, **{"attention.sliding_window": None})),
    "qwen3": ({}, dict(num_kv_heads=32, head_dim=128, max_seq_len=32768)),
    "olmo2": ({}, dict(num_kv_heads=32, max_seq_len=2048, **{"norm.eps": 1e-5})),
    "olmo3": (
        {},
        dict(
            **{"attention.sliding_window": 4096},
            **{"attention.window_pattern": ("local",) * 3 + ("global",)},
        ),
    ),
    "phi3": (
        {},
        dict(
            max_seq_len=4096,
            **{"norm.eps": 1e-5},
            dropout=0.0,
            **{"attention.sliding_window": None},
        ),
    ),
    "gemma2": (
        {},
        dict(num_kv_heads=4, head_dim=256, max_seq_len=8192, **{"attention.logit_softcap": 50}),
    ),
    "gemma3_text": ({}, dict(num_kv_heads=4, head_dim=256, max_seq_len=131072)),
    "mixtral": (
        {},
        {
            "num_kv_heads": 8,
            "norm.eps": 1e-5,
            "moe.num_experts": 8,
            "moe.experts_per_token": 2,
            "moe.router_aux_loss": 0.001,
            "max_seq_len": 131072,
        },
    ),
    "qwen2_moe": (
        {},
        {
            "num_kv_heads": 16,
            "moe.num_experts": 60,
            "moe.experts_per_token": 4,
            "moe.expert_mlp_dim": 1408,
            "moe.shared_expert_mlp_dim": 5632,
            "moe.router_aux_loss": 0.001,
        },
    ),
    "qwen3_moe": ({}, {"num_kv_heads": 4, "moe.num_experts": 128, "moe.experts_per_token": 8}),
    "deepseek_v2": (
        {"num_experts_per_tok": 6},
        {
            "mla.q_lora_rank": 1536,
            "mla.kv_latent_dim": 512,
            "head_dim": 192,
            "mla.v_head_dim": 128,
            "moe.num_experts": 64,
            "moe.num_shared_experts": 2,
            "moe.expert_mlp_dim": 1407,
        },
    ),
    "deepseek_v3": (
        {"num_attention_heads": 128},  # its 128 key/value heads: MLA has one per head
        {
            "mla.q_lora_rank": 1536,
            "moe.num_experts": 256,
            "moe.experts_per_token": 8,
            "moe.router_groups": 8,
            "moe.router_topk_groups": 4,
            "moe.router_scale": 2.5,
            "moe.first_dense": 3,
            "max_seq_len": 4096,
        },
    ),
    "gpt_oss": (
        {},
        dict(head_dim=64, num_kv_heads=8, **{"attention.sliding_window": 128}, max_seq_len=131072),
    ),
    "glm4_moe": (
        {"num_attention_heads": 8},  # heads of 8: half of each rotates
        {
            "num_kv_heads": 8,
            "moe.num_experts": 128,
            "moe.experts_per_token": 8,
            "moe.expert_mlp_dim": 1408,
            "position.rope_fraction": 0.5,
            "norm.eps": 1e-5,
        },
    ),
    "qwen3_5_text": ({}, dict(num_kv_heads=4, head_dim=256, max_seq_len=32768)),
    "qwen3_next": ({}, {"num_kv_heads": 2, "moe.num_experts": 512, "moe.experts_per_token": 10}),
    "llama4_text": (
        {},
        {
            "num_kv_heads": 8,
            "head_dim": 128,
            "mlp.dim": 16384,
            "moe.num_experts": 16,
        },
    ),
    "gemma4_text": ({}, dict(num_kv_heads=4, head_dim=256, **{"attention.sliding_window": 512})),
}


@pytest.mark.parametrize("model_type", list(DEFAULTS))
def test_a_config_leaving_optional_keys_out_reads_with_transformers_defaults(tmp_path, model_type):
    given, want = DEFAULTS[model_type]
    sizes = SIZES | {"num_attention_heads": 32, "model_type": model_type, **given}
    config = _read(tmp_path, sizes)
    assert {k: tnn.setting_value(config, k) for k in want} == want


def test_gpt2_leaving_optional_keys_out_reads_with_transformers_defaults(tmp_path):
    config = _read(tmp_path, dict(model_type="gpt2", vocab_size=64, n_embd=16, n_layer=2, n_head=4))
    assert (config.max_seq_len, config.mlp.dim, config.norm.eps, config.mlp.activation) == (
        1024,
        64,
        1e-5,
        "gelu",
    )
