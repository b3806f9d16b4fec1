"""A model's step as facts for a plan: the batch its objective reads, and what a roofline
estimate needs of it (units, the model's FLOPs both ways, the kernels' prices)."""

from __future__ import annotations

from types import SimpleNamespace

import jax.numpy as jnp
import pytest

from tjx import kernels
from tjx import nn as tnn
from trainer.plan.step_plan import TOKEN_KEYS, batch_shapes, roofline_inputs

VIT = dict(d_model=32, num_layers=2, num_heads=4, image_size=8, patch_size=4, num_classes=5)
H100 = SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3", compute_capability=(9, 0))


def gpt2_tiny() -> tnn.GPT2Config:
    return tnn.GPT2Config(vocab_size=64, max_seq_len=16, d_model=32, num_layers=2, num_heads=4)


def task_of(config: tnn.TransformerConfig) -> str:
    return tnn.objective_of(type(config)).name


def test_a_token_objective_reads_the_loaders_four_token_arrays():
    shapes = batch_shapes(task_of(gpt2_tiny()), 3, 16)
    assert tuple(shapes) == TOKEN_KEYS == ("inputs", "targets", "segment_ids", "positions")
    assert set(shapes.values()) == {((3, 16), jnp.int32)}
    bert = tnn.BertConfig(vocab_size=64, max_seq_len=16, d_model=32, num_layers=1, num_heads=4)
    assert batch_shapes(task_of(bert), 2, 8)["inputs"] == ((2, 8), jnp.int32)


def test_a_classifier_reads_images_and_labels():
    vit = tnn.ViTConfig(**VIT)
    images = {"image_size": vit.image_size, "num_channels": vit.num_channels}
    shapes = batch_shapes(task_of(vit), 4, 999, **images)  # its sequence is fixed: no seq_len
    assert shapes == {"images": ((4, 8, 8, 3), jnp.float32), "labels": ((4,), jnp.int32)}


@pytest.fixture
def costs(monkeypatch) -> list[dict]:
    """The arguments each `tjx.kernels.roofline_costs` call got."""
    calls: list[dict] = []

    def roofline_costs(**kw):
        calls.append(kw)
        return "cost"

    monkeypatch.setattr(kernels, "roofline_costs", roofline_costs)
    return calls


def test_the_roofline_inputs_count_causal_attention_at_half_and_in_full(costs):
    cfg = gpt2_tiny()
    got = roofline_inputs(cfg, 16, 64, 1, H100)
    half = tnn.flops_per_unit(cfg, 16, causal_half=True) * 64
    full = tnn.flops_per_unit(cfg, 16, causal_half=False) * 64
    assert got == {
        "units": 64,
        "unit": "tokens",
        "model_flops": (half, full),
        "custom_call_cost": "cost",
    }
    assert half < full
    assert costs == [
        {"causal": True, "device_kind": H100.device_kind, "compute_capability": (9, 0)}
    ]


def test_a_split_sequence_and_a_classifier_are_priced_as_not_causal(costs):
    roofline_inputs(gpt2_tiny(), 16, 64, 4, H100)  # each device's own block only is causal
    got = roofline_inputs(tnn.ViTConfig(**VIT), 16, 8, 1, H100)
    assert [c["causal"] for c in costs] == [False, False]
    assert got["unit"] == "images" and got["units"] == 8
