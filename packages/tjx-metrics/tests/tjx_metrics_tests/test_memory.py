"""peak_bytes reads XLA's memory analysis; available_bytes reads the device's limit or free RAM."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.metrics import (
    GIB,
    MemoryCheck,
    MemoryFit,
    accelerator,
    available_bytes,
    budget_bytes,
    devices_for_bytes,
    first_fit,
    peak_bytes,
)
from tjx.metrics.memory import refused_bytes


def test_peak_of_an_abstractly_compiled_function_counts_its_arguments_and_outputs():
    rng = np.random.default_rng(0)
    m, k, n = (int(d) for d in rng.integers(16, 96, 3))
    a = jax.ShapeDtypeStruct((m, k), jnp.float32)
    b = jax.ShapeDtypeStruct((k, n), jnp.float32)
    compiled = jax.jit(lambda x, y: jnp.tanh(x @ y)).lower(a, b).compile()
    got = peak_bytes(compiled)
    # Reference: the operands' and the result's own sizes (exact; XLA pads nothing here).
    assert got["arguments"] == 4 * (m * k + k * n)
    assert got["outputs"] == 4 * m * n
    assert got["peak"] == got["arguments"] + got["outputs"] + got["temporaries"] - got["aliased"]
    # The result agrees with a run on fresh random inputs (the analysis does not execute it).
    x, y = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    np.testing.assert_allclose(compiled(x, y), np.tanh(x @ y), rtol=1e-4, atol=1e-5)


def test_donated_arguments_are_counted_once():
    analysis = SimpleNamespace(
        argument_size_in_bytes=400,
        output_size_in_bytes=300,
        temp_size_in_bytes=50,
        alias_size_in_bytes=300,
    )
    got = peak_bytes(SimpleNamespace(memory_analysis=lambda: analysis))
    assert got == {
        "arguments": 400,
        "outputs": 300,
        "temporaries": 50,
        "aliased": 300,
        "peak": 450,
    }
    del analysis.alias_size_in_bytes  # older jaxlib: no alias figure
    assert peak_bytes(SimpleNamespace(memory_analysis=lambda: analysis))["peak"] == 750


def _device(platform: str, stats: dict[str, int] | None) -> SimpleNamespace:
    return SimpleNamespace(platform=platform, memory_stats=lambda: stats)


def test_accelerator_memory_is_its_bytes_limit():
    assert available_bytes(_device("gpu", {"bytes_limit": 80 * GIB, "bytes_in_use": 1})) == (
        80 * GIB
    )
    assert available_bytes(_device("gpu", None)) is None
    assert available_bytes(_device("tpu", {"bytes_in_use": 1})) is None


def test_cpu_memory_is_the_hosts_available_ram(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       65536000 kB\nMemAvailable:   12345678 kB\n")
    assert available_bytes(_device("cpu", None), meminfo=meminfo) == 12345678 * 1024
    meminfo.write_text("MemTotal:       65536000 kB\n")
    assert available_bytes(_device("cpu", None), meminfo=meminfo) is None
    assert available_bytes(_device("cpu", None), meminfo=tmp_path / "absent") is None


@pytest.mark.parametrize("device", [None, jax.devices()[0]])
def test_this_machine_reports_a_positive_figure_or_none(device):
    found = available_bytes(device)
    assert found is None or found > 0


def test_first_fit_takes_the_first_candidate_that_fits_and_compiles_no_more():
    compiled = []

    def candidate(name: str, peak: int):
        return name, lambda: compiled.append(name) or peak

    seen: list = []
    fit = first_fit(
        [candidate("plain", 5 * GIB), candidate("remat", 2 * GIB), candidate("never", 1)],
        budget=3 * GIB,
        on_check=seen.append,
    )
    assert fit.chosen == "remat" and compiled == ["plain", "remat"]
    assert [(c.name, c.peak, c.budget, c.fits) for c in fit.checks] == [
        ("plain", 5 * GIB, 3 * GIB, False),
        ("remat", 2 * GIB, 3 * GIB, True),
    ]
    assert seen == list(fit.checks)  # reported as each was measured
    assert fit.report().splitlines()[0] == "plain needs 5.00 GiB; 3.00 GiB available"
    # The peak exactly at the budget fits; nothing fits: no choice, every peak reported.
    assert first_fit([("a", lambda: 10)], budget=10).chosen == "a"
    none = first_fit([("a", lambda: 11), ("b", lambda: 12)], budget=10)
    assert none.chosen is None and [c.peak for c in none.checks] == [11, 12]


def test_first_fit_reads_compiled_peaks():
    rng = np.random.default_rng(1)
    n = int(rng.integers(64, 256))
    x = jax.ShapeDtypeStruct((n, n), jnp.float32)

    def compile_():
        return jax.jit(lambda a: a @ a).lower(x).compile()

    peak = peak_bytes(compile_())["peak"]
    assert peak >= 2 * 4 * n * n  # the operand and the result at least
    assert first_fit([("matmul", compile_)], budget=peak).chosen == "matmul"
    assert first_fit([("matmul", compile_)], budget=peak - 1).chosen is None


def test_first_fit_without_a_known_budget_compiles_nothing(monkeypatch):
    from tjx.metrics import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device=None: None)
    fit = first_fit([("a", lambda: pytest.fail("compiled"))])
    assert fit == MemoryFit(None) and fit.chosen is None and fit.report() == ""
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 100)
    assert first_fit([("a", lambda: 100)]).checks == (MemoryCheck("a", 100, 100),)


def test_a_program_the_compiler_refuses_for_memory_does_not_fit():
    """A TPU's compiler refuses a step too big for its HBM instead of sizing it: that candidate
    does not fit, and the next one (full remat) is tried."""

    def refuse():
        raise RuntimeError(
            "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
            "temporaries (27.98G) exceeds available HBM (15.75G)"
        )

    fit = first_fit([("plain", refuse), ("remat", lambda: 4 * GIB)], budget=15 * GIB)
    assert fit.chosen == "remat"
    first = fit.checks[0]
    assert first.refused and not first.fits and first.peak == int(27.98 * GIB)
    assert str(first) == "plain needs more than 27.98 GiB; 15.00 GiB available"
    assert refused_bytes(RuntimeError("RESOURCE_EXHAUSTED: out of memory")) == 0
    assert refused_bytes(ValueError("INTERNAL: something else")) is None

    def broken():
        raise ValueError("INTERNAL: not a memory problem")

    with pytest.raises(ValueError, match="INTERNAL"):
        first_fit([("plain", broken)], budget=GIB)


@pytest.mark.parametrize("key", ["h100", "v5e"])
def test_devices_for_bytes_is_the_fewest_budgets_that_hold_them(key):
    """A floor on devices: the smallest n with n budgets >= the bytes (a GPU's budget is JAX's
    share of its memory, a TPU's all of it)."""
    device = accelerator(key)
    budget, _ = budget_bytes(device)
    for nbytes, want in [(1, 1), (budget, 1), (budget + 1, 2), (7 * budget - 1, 7)]:
        n = devices_for_bytes(nbytes, device)
        assert n == want and n * budget >= nbytes > (n - 1) * budget
