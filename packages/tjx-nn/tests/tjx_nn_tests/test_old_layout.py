"""A model section in an older layout reads as today's: renamed keys moved, Llama 3's four numbers
a RoPE scaling section, the flat defaults a kind never read dropped; where a start comes from is
checked before anything is built (a Hugging Face checkpoint's kind, its fixed settings, its
tokenizer; another run's model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tjx import nn as tnn

#: The keys an old saved section listed for every kind, at the values they then held.
FLAT = {"image_size": 8, "patch_size": 2, "num_classes": 10, "tie_embeddings": True}


def test_the_old_precision_keys_move_to_the_precision_section():
    old = {"kind": "gpt2", "param_dtype": "float32", "compute_dtype": "bfloat16"}
    got = tnn.migrate_model_section(old)
    assert got == {
        "kind": "gpt2",
        "precision": {"param_dtype": "float32", "compute_dtype": "bfloat16"},
    }
    assert "param_dtype" in old  # the input is not modified
    with pytest.raises(ValueError) as err:
        tnn.migrate_model_section({"param_dtype": "float32", "precision": {"param_dtype": "x"}})
    new = "model.precision.param_dtype"
    assert str(err.value) == f"model.param_dtype: is {new} now, which is set too; keep only {new}"


@pytest.mark.parametrize(
    ("kind", "kept"),
    [
        ("gpt2", {"tie_embeddings"}),
        ("bert", set()),
        ("vit", {"image_size", "patch_size", "num_classes"}),
    ],
)
def test_a_flat_default_stays_only_where_the_kind_reads_it(kind, kept):
    got = tnn.migrate_model_section({"kind": kind, **FLAT})
    assert set(got) - {"kind", "num_channels"} == kept
    changed = tnn.migrate_model_section({"kind": "bert", "image_size": 32})
    assert changed["image_size"] == 32  # not the old default: the user's, left to the class


def test_an_old_vit_read_grey_images():
    assert (
        tnn.migrate_model_section({"kind": "vit", "compute_dtype": "float32"})["num_channels"] == 1
    )
    assert tnn.migrate_model_section({"kind": "vit"}, old_layout=True)["num_channels"] == 1
    assert "num_channels" not in tnn.migrate_model_section({"kind": "vit"})
    assert (
        tnn.migrate_model_section({"kind": "vit", "num_channels": 3}, old_layout=True)[
            "num_channels"
        ]
        == 3
    )


def test_llama3s_four_numbers_read_as_the_rope_scaling_section():
    got = tnn.migrate_model_section({"kind": "llama", "rope_scaling": [8, 1, 4, 8192]})
    assert got["rope_scaling"]["type"] == "llama3" and got["rope_scaling"]["factor"] == 8
    with pytest.raises(ValueError, match="^m.rope_scaling"):
        tnn.migrate_model_section({"rope_scaling": [8, 4, 1, 16]}, key="m")
    assert "model.param_dtype" in {f"model.{k}" for k in tnn.RENAMED_MODEL_KEYS}


def _llama(**kw: object) -> tnn.LlamaConfig:
    sizes: dict = dict(vocab_size=40, max_seq_len=16, d_model=16, num_layers=2, num_heads=4,
                       num_kv_heads=2, mlp_dim=24)  # fmt: skip
    return tnn.LlamaConfig(**{**sizes, **kw})


def test_a_hugging_face_start_must_exist_and_be_of_the_models_kind(tmp_path: Path):
    assert tnn.hf_start_config("gpt2", "gpt2") is None  # known without downloading
    with pytest.raises(
        ValueError, match="^loads GPT-2 weights; model.kind must be 'gpt2', got 'llama'$"
    ):
        tnn.hf_start_config("gpt2", "llama")
    with pytest.raises(ValueError, match="'./nowhere' is neither a folder nor a hub name"):
        tnn.hf_start_config("./nowhere", "gpt2")
    with pytest.raises(ValueError, match="config.json"):
        tnn.hf_start_config(str(tmp_path), "llama")  # a folder without its config


def test_a_gpt2_start_needs_its_tokenizer_and_refuses_what_the_weights_fix():
    with pytest.raises(ValueError, match="^GPT-2 weights need data.tokenizer 'gpt2'"):
        tnn.check_hf_settings(None, {}, source="gpt2", tokenizer="byte")
    tnn.check_hf_settings(None, {"d_model": 8}, source="/ck", tokenizer="/ck")  # its folder
    with pytest.raises(ValueError) as err:
        tnn.check_hf_settings(None, {"position": "rope"}, source="gpt2", tokenizer="gpt2")
    assert str(err.value) == (
        "GPT-2 weights fix the architecture, so model.position 'rope' cannot apply; leave those "
        "settings unset"
    )
    with pytest.raises(
        ValueError, match="^the checkpoint's weights fix the architecture, so m.qk_norm True"
    ):
        tnn.check_hf_settings(_llama(), {"qk_norm": True}, source="x", tokenizer="t", section="m")


def test_another_runs_model_is_named_by_up_to_three_clashes():
    assert tnn.clash_names(_llama(dropout=0.1), _llama(), vocab=True) == ""
    many = _llama(num_layers=3, mlp_dim=48, d_model=32, num_heads=8)
    assert tnn.clash_names(many, _llama(), vocab=True) == (
        "model.d_model 32 (the run's: 16), model.num_layers 3 (the run's: 2), "
        "model.num_heads 8 (the run's: 4)"
    )
    gpt2 = tnn.GPT2Config(vocab_size=40, max_seq_len=16, d_model=16, num_layers=1, num_heads=2)
    assert tnn.clash_names(gpt2, _llama(), vocab=False) == (
        "model.kind (GPT2Config vs the run's LlamaConfig)"
    )
