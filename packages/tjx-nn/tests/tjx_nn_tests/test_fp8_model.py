"""A model with ``precision.matmul="fp8"`` (#54): its gradients near float32's, its config
checked and saved, on a tiny Llama."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.config_io import config_from_dict, config_to_dict
from tjx.nn.precision import MAX_AMAX_HISTORY

from ._helpers import build, llama_tiny


def _grads(precision: tnn.Precision, tokens: jnp.ndarray) -> np.ndarray:
    """All parameter gradients of a 1-layer tiny Llama's next-token loss, as one float64
    vector (one jitted gradient: one compile per precision, faster than eager here)."""
    model = build(llama_tiny(precision=precision, num_layers=1))

    @nnx.jit
    def grad(m):
        def loss(m):
            logits = m(tokens[:, :-1]).astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

        return nnx.grad(loss)(m)

    flat = nnx.to_flat_state(grad(model))
    return np.concatenate([np.asarray(v.get_value(), np.float64).ravel() for _, v in flat])


def test_fp8_gradients_stay_near_float32_while_bf16_stays_nearer():
    tokens = jnp.asarray(np.random.default_rng(7).integers(0, 64, (4, 16)))
    exact = _grads(tnn.Precision("float32", "float32"), tokens)
    bf16 = _grads(tnn.Precision("float32", "bfloat16"), tokens)
    rel = lambda g: np.linalg.norm(g - exact) / np.linalg.norm(exact)
    # One scaling (the default): the model test costs a compile per precision, and the
    # scalings' products are checked one by one in test_fp8.
    fp8 = _grads(tnn.Precision("float32", "bfloat16", matmul="fp8"), tokens)
    # e4m3 operands round to 2⁻⁴ (≈3.6 % rms per element), the e5m2 output gradient to 2⁻³
    # (≈7 %); sums over tokens and features average that down (measured 2.9 % here, 2.4 %
    # rowwise): 0.1 is the bound. bf16 (2⁻⁹) must sit well inside it, so that the float8 path
    # is the one measured (measured 0.4 %).
    assert rel(fp8) < 0.1
    assert rel(bf16) < rel(fp8) / 3


def test_fp8_settings_are_checked_and_saved_only_when_set():
    with pytest.raises(ValueError, match="matmul must be one of"):
        tnn.Precision(matmul="fp4")
    with pytest.raises(ValueError, match="fp8_scaling must be one of"):
        tnn.Precision(matmul="fp8", fp8_scaling="blockwise")
    with pytest.raises(ValueError, match="fp8_amax_history must be >= 1"):
        tnn.Precision(fp8_amax_history=0)
    with pytest.raises(ValueError, match="fp8_recipe='delayed' scales tensorwise only"):
        llama_tiny(
            precision=tnn.Precision(matmul="fp8", fp8_recipe="delayed", fp8_scaling="rowwise")
        )
    with pytest.raises(ValueError, match="MoE experts"):
        llama_tiny(precision=tnn.Precision(matmul="fp8"), moe=tnn.MoEConfig(num_experts=4))
    plain = config_to_dict(llama_tiny())["fields"]["precision"]
    assert "matmul" not in plain  # a default config's file is as before #54
    cfg = llama_tiny(
        precision=tnn.Precision("float32", "bfloat16", matmul="fp8", fp8_scaling="rowwise")
    )
    data = config_to_dict(cfg)
    assert data["fields"]["precision"]["fp8_scaling"] == "rowwise"
    assert config_from_dict(data) == cfg
    # A model.json saved before #71 with an amax history its current scaling never read loads.
    data["fields"]["precision"]["fp8_amax_history"] = 64
    assert config_from_dict(data) == cfg


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"fp8_scaling": "rowwise"},
            "Precision.fp8_scaling='rowwise' has no effect: matmul is 'default' (no float8 "
            "products); set matmul='fp8' to use it, or leave fp8_scaling at its default "
            "'tensorwise'",
        ),
        ({"fp8_recipe": "delayed"}, "Precision.fp8_recipe='delayed' has no effect: matmul is"),
        ({"fp8_amax_history": 4}, "Precision.fp8_amax_history=4 has no effect: matmul is"),
        (
            {"matmul": "fp8", "fp8_amax_history": 4},
            "Precision.fp8_amax_history=4 has no effect: fp8_recipe is 'current' (scales from "
            "each tensor itself); set fp8_recipe='delayed' to use it, or leave fp8_amax_history "
            "at its default 16",
        ),
    ],
    ids=["scaling", "recipe", "history", "history-current"],
)
def test_a_float8_setting_nothing_reads_is_refused(settings, message):
    with pytest.raises(ValueError) as err:
        tnn.Precision("float32", "bfloat16", **settings)
    assert str(err.value).startswith(message)


def test_the_amax_history_is_bounded_and_float8_turns_off_whole():
    longest = MAX_AMAX_HISTORY
    on = tnn.Precision(matmul="fp8", fp8_recipe="delayed", fp8_amax_history=longest)
    with pytest.raises(ValueError, match=f"fp8_amax_history must be <= {longest} "):
        tnn.Precision(matmul="fp8", fp8_recipe="delayed", fp8_amax_history=longest + 1)
    off = on.without_fp8()  # the dtypes kept, every float8 setting at its default
    assert off == tnn.Precision() and not off.fp8
    rowwise = tnn.Precision("float32", "bfloat16", matmul="fp8", fp8_scaling="rowwise")
    assert rowwise.without_fp8() == tnn.Precision("float32", "bfloat16")
    assert tnn.idle_fp8_settings("fp8", "delayed") == ()
    assert tnn.idle_fp8_settings("fp8", "current") == ("fp8_amax_history",)
    assert "fp8_lm_head" in tnn.idle_fp8_settings("default", "current")


def test_an_fp8_model_holds_the_same_state_as_a_bf16_one():
    # Current scaling keeps no float8 meta: checkpoints, resumes and HF exports (bf16 weights)
    # see the very tree a bf16 model has, same names, shapes, dtypes and values.
    def state(precision):
        flat = nnx.to_flat_state(nnx.state(build(llama_tiny(precision=precision, num_layers=1))))
        return {path: np.asarray(v.get_value()) for path, v in flat}

    bf16 = state(tnn.Precision("float32", "bfloat16"))
    fp8 = state(tnn.Precision("float32", "bfloat16", matmul="fp8", fp8_scaling="rowwise"))
    assert fp8.keys() == bf16.keys()
    for path, value in bf16.items():
        assert fp8[path].dtype == value.dtype and np.array_equal(fp8[path], value), path
