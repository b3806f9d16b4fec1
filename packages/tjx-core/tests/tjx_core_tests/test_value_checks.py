"""A config class's own checks of one value (`choice`, `positive`, `rate`, `positive_float`): silent
on a good value, one ``ValueError`` naming ``Class.field``, the rule and the value on a bad one."""

from __future__ import annotations

import pytest

from tjx.core.config.values import choice, positive, positive_float, rate


def test_a_value_among_the_allowed_passes_and_another_names_the_field_and_the_allowed() -> None:
    choice("Model", "norm", "rmsnorm", ("layernorm", "rmsnorm"))
    with pytest.raises(ValueError) as err:
        choice("Model", "norm", "batchnorm", ("layernorm", "rmsnorm"))
    assert str(err.value) == ("Model.norm must be one of ('layernorm', 'rmsnorm'); got 'batchnorm'")


@pytest.mark.parametrize(
    ("value", "allow_zero", "ok"),
    [
        (3, False, True),
        (0, False, False),
        (0, True, True),
        (-1, True, False),
        (True, True, False),
        (2.0, False, False),
    ],
)
def test_positive_takes_an_int_above_zero_or_from_zero_and_no_bool_or_float(
    value: object, allow_zero: bool, ok: bool
) -> None:
    if ok:
        positive("Model", "num_heads", value, allow_zero=allow_zero)
        return
    kind = "a non-negative" if allow_zero else "a positive"
    with pytest.raises(ValueError) as err:
        positive("Model", "num_heads", value, allow_zero=allow_zero)
    assert str(err.value) == f"Model.num_heads must be {kind} int; got {value!r}"


@pytest.mark.parametrize(
    ("value", "ok"), [(0, True), (0.5, True), (1.0, False), (-0.1, False), ("0.1", False)]
)
def test_a_rate_is_a_number_from_zero_up_to_one_excluded(value: object, ok: bool) -> None:
    if ok:
        rate("Model", "dropout", value)
        return
    with pytest.raises(ValueError) as err:
        rate("Model", "dropout", value)
    assert str(err.value) == f"Model.dropout must be a float in [0, 1); got {value!r}"


@pytest.mark.parametrize(
    ("value", "want"),
    [(None, None), (2, 2.0), (0.5, 0.5), (0, "bad"), (-1.0, "bad"), (float("inf"), "bad"),
     (True, "bad"), ("3", "bad")],
)  # fmt: skip
def test_a_positive_float_is_none_or_a_finite_number_above_zero_as_a_float(
    value: object, want: object
) -> None:
    if want != "bad":
        got = positive_float("Model", "logit_softcap", value)
        assert got == want and (got is None or isinstance(got, float))
        return
    with pytest.raises(ValueError) as err:
        positive_float("Model", "logit_softcap", value)
    assert str(err.value) == f"Model.logit_softcap must be a positive number or None; got {value!r}"
