"""The typed ``rope_scaling`` setting: its forms, its errors and how each type rotates.

(The frequencies themselves are checked against transformers in tests-integration's
test_rope_scalings.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx import nn as tnn
from tjx.nn.positions import apply_rope

from ._helpers import llama_tiny

YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}


def test_every_form_reads_into_one_typed_setting():
    want = tnn.RopeScaling(type="yarn", factor=4.0, original_max_position_embeddings=16)
    assert tnn.RopeScaling.parse(YARN) == want
    assert tnn.RopeScaling.parse({**YARN, "rope_type": "yarn", "type": None}) == want
    assert llama_tiny(position=tnn.PositionConfig(rope_scaling=YARN)).position.rope_scaling == want
    legacy = llama_tiny(
        position=tnn.PositionConfig(rope_scaling=[8, 1, 4, 16])
    ).position.rope_scaling
    assert legacy.type == "llama3" and legacy.original_max_position_embeddings == 16
    assert tnn.RopeScaling.parse(None) is None
    # an app's unset section (every key null) is "no scaling": the config holds None
    assert (
        llama_tiny(
            position=tnn.PositionConfig(rope_scaling=tnn.RopeScaling())
        ).position.rope_scaling
        is None
    )
    assert (
        llama_tiny(
            position=tnn.PositionConfig(rope_scaling={"type": None, "factor": None})
        ).position.rope_scaling
        is None
    )
    cfg = llama_tiny(
        position=tnn.PositionConfig(rope_scaling={
            "type": "longrope", "factor": 2.0, "original_max_position_embeddings": 8,
            "short_factor": [1.0] * 4, "long_factor": [2, 3, 4, 5]})
    )  # fmt: skip
    hash(cfg)  # the factor lists are tuples: a config stays hashable (a static model attribute)
    assert tnn.config_from_dict(tnn.config_to_dict(cfg)) == cfg
    assert tnn.config_to_dict(cfg)["fields"]["position"]["rope_scaling"]["long_factor"] == [
        2,
        3,
        4,
        5,
    ]


@pytest.mark.parametrize(
    "value,match",
    [
        ({"type": "ntk"}, r"rope_scaling.type: 'ntk' is not a RoPE scaling tjx computes"),
        ({"factor": 2.0}, r"rope_scaling.type: None is not"),
        ({**YARN, "beta_faster": 1}, "rope_scaling: unknown key"),
        ({**YARN, "low_freq_factor": 1.0}, "low_freq_factor: type 'yarn' does not use it"),
        ({"type": "yarn", "factor": 4.0}, "original_max_position_embeddings: type 'yarn' needs"),
        ({"type": "linear", "factor": 0}, r"factor must be a number > 0; got 0"),
        ({"type": "linear", "factor": True}, r"factor must be a number > 0"),
        ({**YARN, "truncate": "no"}, "truncate must be true or false"),
        ([8, 4, 1, 16], "high_freq_factor must exceed low_freq_factor"),
        ([1, 2, 3], "must be a mapping with a type"),
        ("yarn", "must be a mapping with a type"),
    ],
)
def test_a_bad_rope_scaling_is_refused_naming_the_field(value, match):
    with pytest.raises(ValueError, match=match) as info:
        llama_tiny(position=tnn.PositionConfig(rope_scaling=value))
    assert str(info.value).startswith("PositionConfig.rope_scaling")


def test_longrope_factors_must_fit_the_head():
    with pytest.raises(ValueError, match="short_factor needs head_dim // 2 = 4 numbers; got 2"):
        llama_tiny(
            position=tnn.PositionConfig(
                rope_scaling={
                    "type": "longrope",
                    "factor": 2.0,
                    "short_factor": [1, 1],
                    "long_factor": [1, 1],
                    "original_max_position_embeddings": 8,
                }
            )
        )


def _rotate(scaling, positions, length=None):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, len(positions), 2, 8)))
    pos = jnp.asarray([positions], jnp.int32)
    return x, apply_rope(x, pos, theta=100.0, scaling=scaling, length=length)


def test_yarn_scales_queries_and_keys_by_its_attention_factor():
    with jax.enable_x64(True):
        x, out = (np.asarray(a) for a in _rotate(tnn.RopeScaling.parse(YARN), [0, 0]))
    # Position 0 rotates nothing: what is left is the factor 0.1 ln 4 + 1.
    np.testing.assert_allclose(out, x * (0.1 * np.log(4.0) + 1.0), rtol=1e-12)


def test_dynamic_and_longrope_follow_the_calls_longest_position():
    plain = None
    dynamic = tnn.RopeScaling(type="dynamic", factor=2.0, original_max_position_embeddings=8)
    long = tnn.RopeScaling(
        type="longrope", factor=2.0, original_max_position_embeddings=8,
        short_factor=[1.0] * 4, long_factor=[1.0, 2.0, 3.0, 4.0], attention_factor=1.0,
    )  # fmt: skip
    with jax.enable_x64(True):
        for scaling in (dynamic, long):
            # Within the original length: unscaled (longrope's short factors are all 1 here).
            np.testing.assert_allclose(
                _rotate(scaling, [1, 5])[1], _rotate(plain, [1, 5])[1], rtol=1e-12
            )
            # The same positions in a call reaching past it rotate differently ...
            far = np.asarray(_rotate(scaling, [1, 5, 20])[1])[:, :2]
            assert np.abs(far - np.asarray(_rotate(plain, [1, 5])[1])).max() > 1e-3
            # ... as when the call's length is given (a decode step re-rotating its cache).
            np.testing.assert_allclose(
                _rotate(scaling, [1, 5], length=jnp.asarray(21))[1], far, rtol=1e-12
            )
    inv, _ = tnn.rope_parameters(8, 100.0, dynamic, 16)
    base = 100.0 * (2.0 * 16 / 8 - 1.0) ** (8 / 6)
    np.testing.assert_allclose(inv, 1.0 / base ** (np.arange(4) * 2 / 8), rtol=1e-12)
