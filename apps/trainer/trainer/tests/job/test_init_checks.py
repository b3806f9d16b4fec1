"""Where a start comes from is checked before anything is built: a Hugging Face checkpoint's
kind, its fixed settings, its tokenizer; another run's model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tjx import nn as tnn
from trainer.step.init_checks import check_hf_settings, clash_names, hf_start_config


def _llama(**kw: object) -> tnn.LlamaConfig:
    sizes: dict = dict(vocab_size=40, max_seq_len=16, d_model=16, num_layers=2, num_heads=4,
                       num_kv_heads=2, mlp=tnn.MLPConfig(dim=24))  # fmt: skip
    return tnn.LlamaConfig(**{**sizes, **kw})


def test_a_hugging_face_start_must_exist_and_be_of_the_models_kind(tmp_path: Path):
    assert hf_start_config("gpt2", "gpt2") is None  # known without downloading
    with pytest.raises(
        ValueError, match="^loads GPT-2 weights; model.kind must be 'gpt2', got 'llama'$"
    ):
        hf_start_config("gpt2", "llama")
    with pytest.raises(ValueError, match="'./nowhere' is neither a folder nor a hub name"):
        hf_start_config("./nowhere", "gpt2")
    with pytest.raises(ValueError, match="config.json"):
        hf_start_config(str(tmp_path), "llama")  # a folder without its config


def test_a_gpt2_start_needs_its_tokenizer_and_refuses_what_the_weights_fix():
    with pytest.raises(ValueError, match="^GPT-2 weights need data.tokenizer 'gpt2'"):
        check_hf_settings(None, {}, source="gpt2", tokenizer="byte")
    check_hf_settings(None, {"d_model": 8}, source="/ck", tokenizer="/ck")  # its folder
    with pytest.raises(ValueError) as err:
        check_hf_settings(None, {"position.kind": "rope"}, source="gpt2", tokenizer="gpt2")
    assert str(err.value) == (
        "GPT-2 weights fix the architecture, so model.position.kind 'rope' cannot apply; leave "
        "those settings unset"
    )
    with pytest.raises(
        ValueError,
        match="^the checkpoint's weights fix the architecture, so m.attention.qk_norm True",
    ):
        check_hf_settings(
            _llama(), {"attention.qk_norm": True}, source="x", tokenizer="t", section="m"
        )


def test_another_runs_model_is_named_by_up_to_three_clashes():
    assert clash_names(_llama(dropout=0.1), _llama(), vocab=True) == ""
    many = _llama(num_layers=3, mlp=tnn.MLPConfig(dim=48), d_model=32, num_heads=8)
    assert clash_names(many, _llama(), vocab=True) == (
        "model.d_model 32 (the run's: 16), model.num_layers 3 (the run's: 2), "
        "model.num_heads 8 (the run's: 4)"
    )
    gpt2 = tnn.GPT2Config(vocab_size=40, max_seq_len=16, d_model=16, num_layers=1, num_heads=2)
    assert clash_names(gpt2, _llama(), vocab=False) == (
        "model.kind (GPT2Config vs the run's LlamaConfig)"
    )
