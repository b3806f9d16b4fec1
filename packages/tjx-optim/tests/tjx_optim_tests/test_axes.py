"""Weight decay and Muon decided by logical axes; paths only for leaves that have no names."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec
from optax import contrib

from tjx.optim import OptimizerConfig, build_optimizer, decay_mask, muon_dimension_numbers
from tjx.optim.axes import is_muon_matrix, is_weight, names_by_path

from ._ref import Var

MDN = contrib.MuonDimensionNumbers

# (axes, decays, Muon's) for the parameter kinds of a transformer; the stacked form adds `layers`.
KINDS = [
    (("embed", "mlp"), True, True),
    (("mlp", "embed"), True, True),
    (("embed", "heads", "head_dim"), True, True),
    (("heads", "head_dim", "embed"), True, True),
    (("embed", "kv_heads", "head_dim"), True, True),
    ((None, "kv_heads", "head_dim"), True, True),  # MLA: keys from the unnamed latent
    (("embed", None), True, True),  # MLA: the latent's down projection
    (("embed", "vocab"), True, False),  # LM head: decays, AdamW's
    (("embed", "classes"), True, False),  # classifier head
    (("vocab", "embed"), False, False),  # token embedding
    ((None, "embed"), False, False),  # positions, token types, patch pixels
    ((None, "heads"), True, False),  # T5 relative-position buckets: a lookup table
    (("heads", "head_dim"), False, False),  # query bias
    (("kv_heads", "head_dim"), False, False),  # key/value bias
    (("embed",), False, False),  # bias
    (("norm",), False, False),  # norm scale
    (("vocab",), False, False),  # output bias
    (("experts", "embed", "mlp"), True, True),  # MoE: one matrix per expert, stacked
    (("experts", "mlp", "embed"), True, True),
    (("experts", "mlp"), False, False),  # an expert's bias
    (("experts", "embed"), False, False),
]


@pytest.mark.parametrize(("names", "decays", "muon"), KINDS)
def test_the_axes_say_whether_a_parameter_decays_and_goes_to_muon(names, decays, muon) -> None:
    for axes in (names, ("layers", *names)):
        assert is_weight(axes) is decays, axes
        assert is_muon_matrix(axes) is muon, axes


def _named(kinds) -> tuple[dict, dict]:
    # Paths that tell nothing ("p0", "p1", ...): only the axes can decide.
    params = {f"p{i}": jnp.ones((3,) * len(names)) for i, (names, _, _) in enumerate(kinds)}
    axes = {f"p{i}": PartitionSpec(*names) for i, (names, _, _) in enumerate(kinds)}
    return params, axes


def test_the_masks_read_the_axes_not_the_paths() -> None:
    params, axes = _named(KINDS)
    want_decay = [decays for _, decays, _ in KINDS]
    assert [decay_mask(params, axes=axes)[f"p{i}"] for i in range(len(KINDS))] == want_decay
    dims = muon_dimension_numbers(params, axes=axes)
    assert [dims[f"p{i}"] is not None for i in range(len(KINDS))] == [m for *_, m in KINDS]
    # Without the names, the path rule sees only shapes: every matrix decays.
    assert decay_mask(params)["p9"] is True and decay_mask(params, axes=axes)["p9"] is False


def test_a_leading_layers_axis_is_muons_batch_axis() -> None:
    params = {"w": jnp.ones((2, 4, 8)), "v": jnp.ones((8, 2, 4))}
    axes = {"w": ("layers", "embed", "mlp"), "v": ("embed", "heads", "head_dim")}
    dims = muon_dimension_numbers(params, axes=axes)
    assert dims["w"] == MDN((1,), (2,)) and dims["v"] == MDN((0,), (1, 2))
    # An explicit setting still wins over the axes.
    assert muon_dimension_numbers(params, axes=axes, stacked=False)["w"] == MDN((0, 1), (2,))


def test_stack_axes_are_layers_then_experts_and_inputs_come_before_outputs() -> None:
    from tjx.optim.axes import input_axes, stack_axes

    assert stack_axes(("layers", "experts", "embed", "mlp")) == 2
    assert stack_axes(("experts", "embed", "mlp")) == 1
    assert stack_axes(("experts", "layers", "mlp")) == 1  # layers only leads
    assert stack_axes(("layers",)) == 0  # a stack axis alone is no stack
    assert input_axes(("embed", "heads", "head_dim")) == 1
    assert input_axes(("heads", "head_dim", "embed")) == 2
    assert input_axes((None, "kv_heads", "head_dim")) == 1  # MLA: the latent alone
    assert input_axes(("layers", "experts", "mlp", "embed")) == 1


def test_unnamed_leaves_fall_back_to_the_path_rules() -> None:
    params = {"mlp": {"kernel": jnp.ones((4, 8))}, "embed": {"embedding": jnp.ones((9, 4))}}
    partial = {
        "mlp": {"kernel": PartitionSpec()},
        "embed": {"embedding": PartitionSpec(None, None)},
    }
    assert decay_mask(params, axes=partial) == {
        "mlp": {"kernel": True},
        "embed": {"embedding": False},
    }
    assert names_by_path(partial) == {}


def test_a_parameter_missing_from_the_axes_is_an_error_not_a_path_guess() -> None:
    params = {"mlp": {"kernel": jnp.ones((4, 8))}, "head": {"kernel": jnp.ones((4, 9))}}
    axes = {"mlp": {"kernel": ("embed", "mlp")}}  # another tree: the head has no entry
    with pytest.raises(ValueError, match=r"axes: no entry for parameter\(s\) head/kernel;"):
        decay_mask(params, axes=axes)
    with pytest.raises(ValueError, match=r"head/kernel"):
        muon_dimension_numbers(params, axes=axes)


def test_the_regex_options_override_named_leaves_too() -> None:
    params = {"a": jnp.ones((4, 8)), "b": jnp.ones((4, 8))}
    axes = {"a": ("embed", "mlp"), "b": ("vocab", "embed")}
    assert decay_mask(params, axes=axes, decay_regex="b") == {"a": False, "b": True}
    assert decay_mask(params, axes=axes, no_decay_regex="a") == {"a": False, "b": False}
    dims = muon_dimension_numbers(params, axes=axes, exclude_regex="a")
    assert dims == {"a": None, "b": None}


def test_names_meet_the_params_through_variable_wrappers() -> None:
    # NNX state on either side: a `.value` wrapper does not change the path the two meet at.
    params = {"blocks": {0: {"fc": Var(jnp.ones((4, 8)))}}, "tok": Var(jnp.ones((9, 4)))}
    axes = {"blocks": {0: {"fc": Var(PartitionSpec("embed", "mlp"))}}, "tok": ("vocab", "embed")}
    assert names_by_path(axes) == {"blocks/0/fc": ("embed", "mlp"), "tok": ("vocab", "embed")}
    mask = decay_mask(params, axes=axes)
    assert mask["blocks"][0]["fc"].value is True and mask["tok"].value is False


def _decayed(axes) -> np.ndarray:
    # One adamw step with zero gradients: only decay moves a parameter.
    params = {"table": jnp.ones((4, 8))}
    cfg = OptimizerConfig(name="adamw", learning_rate=0.1, weight_decay=0.5, clip_norm=None)
    tx = build_optimizer(cfg, axes=axes)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    return np.asarray(updates["table"])


def test_build_optimizer_passes_the_axes_to_the_decay_mask() -> None:
    # The path says "table", which the path rule decays; its axes say embedding: no decay.
    assert np.all(_decayed(None) < 0)
    assert np.all(_decayed({"table": PartitionSpec("vocab", "embed")}) == 0)


def test_build_optimizer_passes_the_axes_to_muon() -> None:
    params = {"w": jnp.ones((4, 8)) * jnp.arange(8.0)}
    cfg = OptimizerConfig(name="muon", learning_rate=1.0, clip_norm=None)
    grads = {"w": jnp.arange(32.0).reshape(4, 8)}
    step = {}
    for label, axes in (
        ("muon", {"w": PartitionSpec("embed", "mlp")}),
        ("adamw", {"w": PartitionSpec("embed", "vocab")}),
    ):
        tx = build_optimizer(cfg, axes=axes)
        step[label], _ = tx.update(grads, tx.init(params), params)
    # AdamW's first step is sign-like (one magnitude wherever the gradient is not 0); Muon's,
    # an orthogonalized rank-2 gradient, is not.
    adam = np.abs(np.asarray(step["adamw"]["w"])).ravel()[1:]
    muon = np.abs(np.asarray(step["muon"]["w"])).ravel()[1:]
    np.testing.assert_allclose(adam, adam[0], rtol=1e-3)
    assert not np.allclose(muon, muon[0], rtol=1e-1)
