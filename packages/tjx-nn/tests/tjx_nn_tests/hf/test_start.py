"""Starting from a checkpoint: what a Hugging Face checkpoint fixes, how two configs clash."""

from __future__ import annotations

import dataclasses

import pytest

from tjx import nn as tnn
from tjx.nn.families.gemma4 import Gemma4Options
from tjx.nn.families.llama4.options import Llama4Options


def _llama(**kw: object) -> tnn.LlamaConfig:
    sizes: dict = dict(vocab_size=40, max_seq_len=16, d_model=16, num_layers=2, num_heads=4,
                       num_kv_heads=2, mlp=tnn.MLPConfig(dim=24))  # fmt: skip
    return tnn.make_config(tnn.LlamaConfig, {**{**sizes, **kw}})


def test_a_gpt2_checkpoint_or_a_gpt2_hub_name_is_checked_against_what_gpt2_fixes():
    asked = {"position.kind": "rope", "d_model": 7, "dropout": 0.1}
    assert tnn.hf_conflicts(asked, None) == {"position.kind": "rope"}
    gpt2 = tnn.GPT2Config(vocab_size=40, max_seq_len=16, d_model=16, num_layers=1, num_heads=2)
    assert tnn.hf_conflicts(asked, gpt2) == tnn.hf_gpt2_conflicts(asked)


def test_a_llama_family_checkpoint_refuses_the_fixed_settings_it_does_not_have():
    checkpoint = _llama(
        attention=tnn.AttentionConfig(sliding_window=8, window_pattern=("local", "global"))
    )
    # Its own values (a YAML list as the tuple it holds) and unset ones fit; sizes are not fixed.
    fits = {
        "num_kv_heads": 2,
        "attention.window_pattern": ["local", "global"],
        "attention.qk_norm": None,
        "d_model": 9,
    }
    assert tnn.hf_conflicts(fits, checkpoint) == {}
    asked = {
        "attention.sliding_window": 4,
        "num_kv_heads": 1,
        "attention.window_pattern": ["global"],
    }
    # In HF_LLAMA_FIXED's order, with the values asked for.
    assert list(tnn.hf_conflicts(asked, checkpoint).items()) == [
        ("num_kv_heads", 1), ("attention.sliding_window", 4),
        ("attention.window_pattern", ["global"])]  # fmt: skip
    fields = {f.name for f in dataclasses.fields(tnn.LlamaConfig)}
    assert {k.split(".")[0] for k in tnn.HF_LLAMA_FIXED} <= fields


def test_the_late_2026_families_fix_their_layers_and_mtp_depths():
    """A Llama 4 start refuses another chunk or NoPE choice, a Qwen3.5 one another mixer
    pattern, a DeepSeek-V3 one another count of MTP depths (#56's switches are fixed too)."""
    llama4 = _llama(
        attention=tnn.AttentionConfig(chunk=4, window_pattern=("local", "global")),
        llama4=Llama4Options(global_nope=True),
    )
    asked = {"attention.chunk": 8, "llama4.global_nope": True, "mtp.depths": 1}
    assert tnn.hf_conflicts(asked, llama4) == {"attention.chunk": 8, "mtp.depths": 1}
    delta = tnn.DeltaConfig(key_heads=2, value_heads=4, key_dim=4, value_dim=4)
    hybrid = _llama(mixer_pattern=("delta", "attention"), delta=delta)
    assert tnn.hf_conflicts({"delta.key_heads": 8, "delta.impl": "xla"}, hybrid) == {
        "delta.key_heads": 8
    }
    assert tnn.hf_conflicts({"mixer_pattern": ["attention"]}, hybrid) == {
        "mixer_pattern": ["attention"]
    }
    gemma4 = _llama(
        gemma4=Gemma4Options(value_norm=True),
        attention=tnn.AttentionConfig(sliding_window=4, window_pattern=("local", "global")),
    )
    changes = {"gemma4.value_norm": False, "gemma4.layer_scale": True, "gemma4.kv_shared_layers": 0}
    assert tnn.hf_conflicts(changes, gemma4) == {
        "gemma4.value_norm": False, "gemma4.layer_scale": True}  # fmt: skip


def test_two_configs_clash_in_what_the_model_is_not_in_how_it_trains():
    ours = _llama(dropout=0.1, remat="full")
    assert tnn.config_clashes(ours, _llama(), vocab=True) == {}  # how it trains differs only
    # A component section's settings by their dotted keys; delta.impl is how it trains.
    experts = _llama(moe=tnn.MoEConfig(num_experts=4, capacity_factor=2.0))
    assert tnn.config_clashes(experts, _llama(), vocab=True) == {
        "moe.num_experts": (4, 0), "moe.capacity_factor": (2.0, None)}  # fmt: skip
    delta = dict(mixer_pattern=["delta"], delta=tnn.DeltaConfig(key_heads=1, value_heads=1,
                                                               key_dim=4, value_dim=4))  # fmt: skip
    xla = _llama(**delta).replace(**{"delta.impl": "xla"})
    assert tnn.config_clashes(xla, _llama(**delta), vocab=True) == {}
    assert tnn.config_clashes(ours, _llama(num_layers=3, mlp=tnn.MLPConfig(dim=48)),
                              vocab=True) == {
        "num_layers": (2, 3), "mlp.dim": (24, 48)}  # fmt: skip
    other_vocab = _llama(vocab_size=50)
    assert tnn.config_clashes(ours, other_vocab, vocab=False) == {}
    assert tnn.config_clashes(ours, other_vocab, vocab=True) == {"vocab_size": (40, 50)}
    gpt2 = tnn.GPT2Config(vocab_size=40, max_seq_len=16, d_model=16, num_layers=2, num_heads=4)
    assert tnn.config_clashes(ours, gpt2, vocab=True) == {"class": ("LlamaConfig", "GPT2Config")}
    assert {"scan_layers", "precision"} <= set(tnn.TRAINING_FIELDS)
    assert {"dropout", "remat"} <= set(tnn.HOW_TO_TRAIN)


@pytest.mark.parametrize(
    ("source", "hub"),
    [("org/name", True), ("gpt2", False), ("./org/name", False), ("~/a", False),
     ("a/b/c", False), ("org/", False), ("/abs", False)],
)  # fmt: skip
def test_a_hub_id_is_org_slash_name_told_from_a_path_without_the_network(source: str, hub: bool):
    assert tnn.is_hub_id(source) is hub
