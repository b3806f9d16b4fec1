"""What a split run (pipeline stages, a sequence split), a preference run and a PEFT export need
of a model config: checked from the config alone, each refusal one ``ValueError`` naming the
setting and its fix."""

import re

import pytest

from tjx import nn as tnn
from tjx.nn.families.gemma4 import Gemma4Options
from tjx_nn_tests._helpers import TINY, gpt2_tiny, llama_tiny

BERT = tnn.make_config(tnn.BertConfig, TINY)
PIPELINABLE = llama_tiny(scan_layers=True, dropout=0.0)


def test_model_kind_is_the_registry_key_of_the_config_class():
    assert tnn.model_kind(gpt2_tiny()) == "gpt2" and tnn.model_kind(BERT) == "bert"
    assert tnn.model_kind(tnn.make_config(tnn.TransformerConfig, TINY)) == "TransformerConfig"


def test_a_scanned_decoder_without_dropout_or_experts_is_pipelinable():
    tnn.check_pipelinable(PIPELINABLE)
    tnn.check_pipelinable(gpt2_tiny(scan_layers=True, dropout=0.0))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (BERT, "only decoders (gpt2, llama) are pipelined; model.kind is 'bert'"),
        (
            llama_tiny(scan_layers=False, dropout=0.0),
            "needs model.scan_layers=true (a stage is a slice of the stacked layers)",
        ),
        (
            llama_tiny(scan_layers=True, dropout=0.1),
            "needs model.dropout=0 (no dropout keys per stage)",
        ),
        (
            llama_tiny(
                scan_layers=True, dropout=0.0, moe=tnn.MoEConfig(num_experts=4, expert_mlp_dim=16)
            ),
            "MoE layers are not pipelined (model.moe.num_experts=4); set mesh.pipeline=1 "
            "(mesh.expert splits the experts instead)",
        ),
    ],
    ids=["not-a-decoder", "not-scanned", "dropout", "moe"],
)
def test_what_a_pipeline_cannot_cut_is_refused_naming_the_setting(config, message):
    with pytest.raises(ValueError) as err:
        tnn.check_pipelinable(config)
    assert str(err.value) == message


def test_a_rope_decoder_splits_and_one_way_is_no_split():
    tnn.check_sequence_split(llama_tiny(attention_impl="xla"), 4)
    tnn.check_sequence_split(llama_tiny(attention_impl="pallas"), 2)  # no window: pallas serves
    tnn.check_sequence_split(
        llama_tiny(attention_impl="auto", attention=tnn.AttentionConfig(sliding_window=4)), 2
    )
    tnn.check_sequence_split(BERT, 1)  # context 1: nothing split, nothing to refuse


SPLIT = "with mesh.context=2 (each sequence split over 2 devices)"
DELTA = dict(delta=tnn.DeltaConfig(key_heads=2, value_heads=4, key_dim=8, value_dim=8))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            BERT,
            "mesh.context: context parallelism splits decoder language models; model.kind is "
            "'bert': set mesh.context=1",
        ),
        (
            llama_tiny(attention_impl="cudnn"),
            "model.attention_impl: cudnn cannot attend across a split sequence (jax's cuDNN call "
            f"has no separate forward and backward) {SPLIT}; use auto, pallas or xla",
        ),
        (
            llama_tiny(attention_impl="tokamax"),
            "model.attention_impl: tokamax cannot attend across a split sequence (tjx runs "
            f"tokamax's kernel whole, with no separate forward and backward halves) {SPLIT}; "
            "use auto, pallas or xla",
        ),
        (
            gpt2_tiny(position=tnn.PositionConfig(kind="alibi")),
            "model.position.kind: a split sequence takes no additive attention bias (alibi, t5) "
            f"and no attention dropout {SPLIT}; set model.position.kind=rope and "
            "model.attention.dropout=0",
        ),
        (
            llama_tiny(attention=tnn.AttentionConfig(dropout=0.1)),
            "model.attention.dropout: a split sequence takes no additive attention bias (alibi, "
            f"t5) and no attention dropout {SPLIT}; set model.position.kind=rope and "
            "model.attention.dropout=0",
        ),
        (
            llama_tiny(attention_impl="pallas", attention=tnn.AttentionConfig(sliding_window=4)),
            "model.attention_impl: pallas cannot apply model.attention.sliding_window across a "
            f"split sequence (its masks use the tile's own positions) {SPLIT}; use auto or xla",
        ),
        (
            llama_tiny(attention=tnn.AttentionConfig(sinks=True)),
            "model.attention.sinks: the split sequence's block kernels add no attention sinks "
            f"(gpt-oss) {SPLIT}; set mesh.context=1",
        ),
        # Refused while tracing before (tjx.nn.block, attention): said from the config now
        (
            llama_tiny(mixer_pattern=("delta", "attention"), **DELTA),
            "model.mixer_pattern: delta layers (Gated DeltaNet) carry a recurrent state along "
            f"the sequence, which would restart on each device's part {SPLIT}; set "
            "mesh.context=1",
        ),
        (
            llama_tiny(
                num_layers=3,
                gemma4=Gemma4Options(kv_shared_layers=1),
                attention=tnn.AttentionConfig(sliding_window=4, window_pattern=("local", "global")),
            ),
            "model.gemma4.kv_shared_layers: layers that read an earlier layer's keys and values "
            f"(1) do not run on a split sequence {SPLIT}; set mesh.context=1",
        ),
        (
            llama_tiny(attention=tnn.AttentionConfig(chunk=4, window_pattern=("local", "global"))),
            "model.attention.chunk: the split sequence's block kernels attend without chunks "
            f"{SPLIT}; set mesh.context=1",
        ),
    ],
    ids=[
        "not-a-decoder", "cudnn", "tokamax", "alibi", "attention-dropout", "pallas-window",
        "sinks", "delta", "kv-shared", "chunks",
    ],
)  # fmt: skip
def test_what_a_sequence_split_cannot_serve_is_refused_naming_the_key(config, message):
    with pytest.raises(ValueError) as err:
        tnn.check_sequence_split(config, 2)
    assert str(err.value) == message


def test_a_peft_export_goes_to_a_new_or_empty_folder(tmp_path):
    assert tnn.check_peft_export(llama_tiny(), tmp_path / "new") == tmp_path / "new"
    assert tnn.check_peft_export(llama_tiny(), str(tmp_path)) == tmp_path  # empty: fine
    assert not (tmp_path / "new").exists()  # nothing written


def test_a_peft_export_tjx_cannot_write_is_refused_before_training(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    mla = llama_tiny(
        num_kv_heads=4,
        mla=tnn.MLAConfig(kv_latent_dim=8),
        attention=tnn.AttentionConfig(type="mla"),
    )
    cases = [
        (
            gpt2_tiny(),
            tmp_path / "a",
            "PEFT adapters are written for Llama-family models, not model.kind=gpt2 (HF's GPT-2 "
            "fuses q/k/v); export the merged model with save_hf",
        ),
        (
            mla,
            tmp_path / "a",
            "PEFT adapters do not cover MLA attention (DeepSeek: its projections are not HF's "
            "q/k/v_proj); export the merged model with save_hf",
        ),
        (
            llama_tiny(),
            tmp_path / "full",
            f"{tmp_path / 'full'} exists and is not an empty folder; name a new one",
        ),
    ]
    for config, folder, message in cases:
        with pytest.raises(ValueError) as err:
            tnn.check_peft_export(config, folder)
        assert str(err.value) == message
    with pytest.raises(ValueError, match="export the merged model with eval --export-hf$"):
        tnn.check_peft_export(gpt2_tiny(), tmp_path / "a", "eval --export-hf")


def test_a_preference_run_of_a_dense_unsplit_model_without_z_loss_passes():
    tnn.check_preference_run(gpt2_tiny(), pipeline=1, context=1, z_loss=0.0)


@pytest.mark.parametrize(
    ("config", "split", "message"),
    [
        (gpt2_tiny(), {"pipeline": 2}, "mesh.pipeline: cannot apply with data.format=preference "
         "(DPO): the pipeline runs the SFT loss only; set it to 1"),
        (gpt2_tiny(), {"context": 2}, "mesh.context: cannot apply with data.format=preference "
         "(DPO): a pair's rows are scored whole; set it to 1"),
        (llama_tiny(moe=tnn.MoEConfig(num_experts=4, expert_mlp_dim=16)), {},
         "model.moe.num_experts: cannot apply with data.format=preference (DPO): the router's "
         "balancing losses are not part of the DPO "
         "loss; train a dense model"),
        (gpt2_tiny(), {"z_loss": 1e-4}, "train.z_loss: cannot apply with data.format=preference "
         "(DPO): the DPO loss has no z-loss term; set it to 0"),
        (gpt2_tiny(), {"pipeline": 2, "z_loss": 1e-4}, "mesh.pipeline: "),  # the first refused
    ],
)  # fmt: skip
def test_a_preference_run_refuses_what_its_loss_cannot_apply(config, split, message):
    settings = {"pipeline": 1, "context": 1, "z_loss": 0.0, **split}
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        tnn.check_preference_run(config, **settings)
