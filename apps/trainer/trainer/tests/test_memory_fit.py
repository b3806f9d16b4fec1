"""The memory check before training: fit, unchanged; too big, full remat; else an error."""

from __future__ import annotations

import pytest

from tjx.metrics import GIB
from trainer.config.schema import ConfigError
from trainer.config.settings import apply_overrides, load_config_data
from trainer.config.typed import read_config, resolve, step_config
from trainer.plan.memory_fit import fit_memory, step_peak

VOCAB = 257
# A scanned stack whose activations dominate its memory, so full remat shrinks it measurably.
SETS = [
    "data.batch_size=16",
    "data.seq_len=128",
    "model.max_seq_len=128",
    "model.num_layers=2",
    "model.scan_layers=true",
]


def run_config(*extra: str):
    return resolve(read_config(apply_overrides(load_config_data("tiny"), [*SETS, *extra])), VOCAB)


def config(*extra: str):
    return step_config(run_config(*extra))


@pytest.fixture(scope="module")
def peaks() -> tuple[int, int]:
    plain = step_peak(config())
    full = step_peak(config("model.remat=full"))
    assert full < plain, "the premise: full remat needs less memory than no remat"
    return plain, full


def test_fitting_step_is_unchanged(peaks, capsys):
    cfg = config()
    assert fit_memory(cfg, budget=peaks[0] + 1, devices=1) is cfg
    # One compile, said before it starts (minutes for a big model on a CPU), and one figure:
    # full remat is never compiled when the step fits.
    assert capsys.readouterr().out == (
        "memory: compiling the train step to measure its peak…\n"
        f"memory: the train step needs {peaks[0] / GIB:.2f} GiB; "
        f"{(peaks[0] + 1) / GIB:.2f} GiB available\n"
    )


def test_too_big_switches_to_full_remat_and_says_so(peaks, capsys):
    plain, full = peaks
    fitted = fit_memory(config(), budget=(plain + full) // 2, devices=1)
    # The model the state is built from, and the config saved with it (`Config.with_step`).
    saved = run_config().with_step(fitted).to_dict()
    assert fitted.model.remat == "full" and saved["model"]["remat"] == "full"
    assert fitted.data.batch_size == 16  # nothing else changes
    assert fitted.model == config("model.remat=full").model
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "memory: compiling the train step to measure its peak…"
    assert lines[1].startswith(f"memory: the train step needs {plain / GIB:.2f} GiB")
    assert lines[2] == "memory: compiling the train step with model.remat=full to measure its peak…"
    assert lines[3].startswith(
        f"memory: the train step with model.remat=full needs {full / GIB:.2f} GiB"
    )
    assert "uses model.remat=full" in lines[4] and len(lines) == 5


def test_too_big_even_with_remat_names_the_fix(peaks):
    with pytest.raises(ConfigError, match=r"lower data\.batch_size.*optimizer\.accumulation_steps"):
        fit_memory(config(), budget=peaks[1] - 1, devices=1)
    # Already full remat: its one figure is the one named.
    with pytest.raises(ConfigError, match=f"needs {peaks[1] / GIB:.2f} GiB even with"):
        fit_memory(config("model.remat=full"), budget=peaks[1] - 1, devices=1)


def test_unrolled_layers_on_cpu_are_told_to_scan(peaks):
    """XLA:CPU keeps remat only in scanned stacks; the error says so for an unrolled one."""
    with pytest.raises(ConfigError, match=r"accumulation_steps; set model\.scan_layers=true"):
        fit_memory(config("model.scan_layers=false"), budget=1, devices=1)
    with pytest.raises(ConfigError) as scanned:
        fit_memory(config(), budget=1, devices=1)
    assert "scan_layers" not in str(scanned.value)


def test_opt_out_and_multi_device_skip_the_check():
    tiny_budget = 1  # would fail if the check ran
    assert fit_memory(config("train.fit_memory=false"), budget=tiny_budget, devices=1)
    assert fit_memory(config(), budget=tiny_budget, devices=8)
