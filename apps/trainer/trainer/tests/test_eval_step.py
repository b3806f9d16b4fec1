"""The held-out step is built once per setup, and a new setup never gets an old one's step — even
at the address of a freed setup (a study runs configs one after another in one process)."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import trainer.loop.evaluation as evaluation
from trainer.step.state import Setup


def _setup(scale: float) -> Setup:
    # Only graphdef, rest and split reach make_eval_step; the graphdef stands for the model here.
    return Setup(None, None, None, scale, None, None, {}, 0, None)


@pytest.fixture()
def scaled_steps(monkeypatch):
    """make_eval_step replaced by one whose step multiplies by the setup's graphdef."""

    def make(graphdef, rest, cfg, split):
        return lambda params, batch: params * graphdef

    monkeypatch.setattr(evaluation, "make_eval_step", make)


def test_a_setup_reuses_its_step(scaled_steps):
    a = _setup(2.0)
    assert evaluation.eval_step(a, None) is evaluation.eval_step(a, None)
    assert float(evaluation.eval_step(a, None)(jnp.float32(3.0), None)) == 6.0


def test_a_new_setup_at_a_freed_setups_address_gets_its_own_step(scaled_steps):
    addresses = []
    for scale in range(1, 9):  # one setup after another, each freed before the next is made
        setup = _setup(float(scale))
        addresses.append(id(setup))
        assert float(evaluation.eval_step(setup, None)(jnp.float32(3.0), None)) == 3.0 * scale
        del setup
    # CPython gives a freed object's block to the next of its size: the case above was exercised.
    assert len(set(addresses)) < len(addresses)
