"""The logical axis names are one tuple, shared by tjx-nn's models and tjx-parallel's rules."""

from __future__ import annotations

from tjx.core import LOGICAL_AXES


def test_the_logical_axes_are_unique_strings_in_the_order_rules_list_them() -> None:
    assert isinstance(LOGICAL_AXES, tuple)
    assert all(isinstance(name, str) and name for name in LOGICAL_AXES)
    assert len(set(LOGICAL_AXES)) == len(LOGICAL_AXES)
    # the order tables print them in: batch and length first, then the parameters' dimensions
    assert LOGICAL_AXES[:3] == ("batch", "length", "embed")
    assert {"experts", "lora_rank", "classes", "vocab", "layers"} <= set(LOGICAL_AXES)
