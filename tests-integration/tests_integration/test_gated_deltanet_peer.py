"""tjx.nn's Gated DeltaNet mixer against transformers' ``Qwen3_5GatedDeltaNet`` (issue #56), in
float64: transformers builds the layer with random weights and runs it (its chunked path, its
causal convolution, L2-normalised q and k, grouped value heads, the gated RMSNorm); tjx.nn's
`GatedDeltaNet` is given the same weights and must give the same output within 1e-5 of its
largest value: transformers runs the rule and the gated norm in float32 even in a float64 layer
(its ``torch_chunk_gated_delta_rule`` casts to float32), so float32's rounding is the bound."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tests_integration._hf_peer import run_peer
from tjx import nn

CONFIG = {
    "model_type": "qwen3_5_text",
    "hidden_size": 24,
    "num_hidden_layers": 1,
    "layer_types": ["linear_attention"],
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 8,
    "linear_value_head_dim": 6,
    "linear_conv_kernel_dim": 4,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
}


def test_the_mixer_gives_transformers_output_for_its_weights(tmp_path):
    x = np.random.default_rng().standard_normal((2, 70, CONFIG["hidden_size"]))  # > one chunk
    np.save(tmp_path / "x.npy", x)
    run_peer([{"delta_layer": CONFIG, "inputs": str(tmp_path / "x.npy"),
               "out": str(tmp_path / "peer.npz")}], tmp_path)  # fmt: skip
    peer = np.load(tmp_path / "peer.npz")
    w = {k.removeprefix("w/"): peer[k] for k in peer.files if k.startswith("w/")}
    f64 = nn.Precision(param_dtype=jnp.float64, compute_dtype=jnp.float64,
                       logits_dtype=jnp.float64)  # fmt: skip
    with jax.enable_x64(True):
        layer = nn.GatedDeltaNet(CONFIG["hidden_size"], num_k_heads=2, num_v_heads=4,
                                 head_k_dim=8, head_v_dim=6, conv_kernel=4, rngs=nnx.Rngs(0),
                                 precision=f64)  # fmt: skip
        # torch's Linear weights are [out, in]; tjx.nn's Dense kernels [in, out].
        for name in ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj"):
            getattr(layer, name).kernel.set_value(jnp.asarray(w[f"{name}.weight"].T))
        layer.conv_weight.set_value(jnp.asarray(w["conv1d.weight"][:, 0, :]))
        layer.dt_bias.set_value(jnp.asarray(w["dt_bias"]))
        layer.a_log.set_value(jnp.asarray(w["A_log"]))
        layer.norm_scale.set_value(jnp.asarray(w["norm.weight"]))
        got = np.asarray(layer(jnp.asarray(x)))
    assert set(w) == {"in_proj_qkv.weight", "in_proj_z.weight", "in_proj_b.weight",
                      "in_proj_a.weight", "out_proj.weight", "conv1d.weight", "dt_bias", "A_log",
                      "norm.weight"}  # fmt: skip
    np.testing.assert_allclose(got, peer["out"], rtol=0, atol=1e-5 * np.abs(peer["out"]).max())
