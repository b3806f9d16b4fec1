"""Logical-axis rules: presets, unknown names, divisibility fallback, mesh-axis reuse."""

from __future__ import annotations

import warnings

import pytest
from jax import P

import tjx.parallel
import tjx.parallel.mesh  # imports the rules' module
from tjx.parallel import LOGICAL_AXES, STRATEGIES, AxisRules, MeshConfig, make_mesh, rules


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


def test_presets_map_names_as_documented() -> None:
    assert set(STRATEGIES) == {"dp", "fsdp", "tp", "fsdp_tp", "dp_tp"}
    for strategy in STRATEGIES:
        table = rules(strategy).as_dict()
        assert set(LOGICAL_AXES) <= set(table)
        assert table["batch"] == ("data", "fsdp", "expert")
        assert table["experts"] == "expert"  # every strategy: MoE experts over the expert axis
        assert table["length"] == "context"  # context parallelism splits the sequence
        assert table["head_dim"] is None and table["norm"] is None
        assert table["embed"] == ("fsdp" if "fsdp" in strategy else None)
        for name in ("mlp", "heads", "kv_heads", "vocab"):
            assert table[name] == ("tensor" if strategy.endswith("tp") else None)


def test_to_mesh_spec_fsdp_tp(mesh) -> None:
    r = rules("fsdp_tp")
    assert r.to_mesh_spec(P("embed", "mlp"), mesh, (8, 16)) == P("fsdp", "tensor")
    assert r.to_mesh_spec(P("mlp", "embed"), mesh, (16, 8)) == P("tensor", "fsdp")
    assert r.to_mesh_spec(P("heads", "head_dim", "embed"), mesh, (4, 2, 8)) == P(
        "tensor", None, "fsdp"
    )
    # fsdp is taken by the batch, so the activation's embed dim is replicated
    spec = r.to_mesh_spec(P("batch", "length", "embed"), mesh, (4, 3, 8))
    assert spec == P(("data", "fsdp", "expert"), "context")
    assert r.to_mesh_spec(P(None, "norm"), mesh, (3, 5)) == P()
    assert r.to_mesh_spec(P(("embed", "vocab")), mesh, (8,)) == P(("fsdp", "tensor"))


def test_unknown_logical_name_lists_known(mesh) -> None:
    with pytest.raises(ValueError, match="unknown logical axis name 'embd'.*embed.*vocab"):
        rules("dp").to_mesh_spec(P("embd"), mesh)
    with pytest.raises(ValueError, match="strategy must be one of"):
        rules("zero3")


def test_non_divisible_dim_replicates_once_or_raises(mesh) -> None:
    r = rules("tp")
    with pytest.warns(UserWarning, match="vocab.*50257.*not divisible"):
        assert r.to_mesh_spec(P("vocab", "embed"), mesh, (50257, 8)) == P()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same case again: no second warning
        assert r.to_mesh_spec(P("vocab", "embed"), mesh, (50257, 8)) == P()
    with pytest.raises(ValueError, match="50259 is not divisible"):
        rules("tp", strict=True).to_mesh_spec(P("vocab"), mesh, (50259,))
    # without a shape no check is possible: the rule is applied as is
    assert r.to_mesh_spec(P("vocab"), mesh) == P("tensor")


def test_spec_longer_than_array_and_missing_mesh_axis(mesh) -> None:
    with pytest.raises(ValueError, match="has 2 entries but the array has shape"):
        rules("dp").to_mesh_spec(P("embed", "mlp"), mesh, (4,))
    with pytest.raises(ValueError, match="mesh axis 'stage'"):
        rules("dp", layers="stage").to_mesh_spec(P("layers"), mesh, (4,))


def test_overrides_replace_and_validation() -> None:
    r = rules("fsdp").replace(vocab="fsdp", layers=("data",))
    assert r.as_dict()["vocab"] == "fsdp" and r.as_dict()["layers"] == "data"
    assert r.mesh_axes("batch") == ("data", "fsdp", "expert") and r.mesh_axes("norm") == ()
    assert rules("dp", embed=()).mesh_axes("embed") == ()
    assert ("embed", "fsdp") in rules("fsdp").flax_rules()
    assert "stage" in AxisRules.from_dict({"stage": "data"}).known
    with pytest.raises(ValueError, match="twice"):
        AxisRules((("embed", None), ("embed", "fsdp")))
    with pytest.raises(ValueError, match="mesh axes must be None, a str or a tuple"):
        AxisRules((("embed", ("fsdp", 3)),))
    with pytest.raises(ValueError, match="logical name must be a str"):
        AxisRules(((1, "fsdp"),))


def test_rules_is_the_function_after_every_module_loaded() -> None:
    """The module that defines it is ``axis_rules``: no submodule named ``rules`` can hide it."""
    assert callable(tjx.parallel.rules) and tjx.parallel.rules is rules
    assert tjx.parallel.rules("dp") == rules("dp")
