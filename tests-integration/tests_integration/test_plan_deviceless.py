"""The presets compile for an H100 without one, as shipped: CI's guard on the GPU path and on
their memory. The smaller deviceless plans (the presets shrunk for a TPU v5e, #56's hybrid, #68's
float8 and tokamax runs, the families' folders, #72's RL plans) are test_plan_deviceless_small's:
a Pants batch of their own beside this one (CI's two cores, tests-integration/BUILD).

Each case is one ``python -m trainer --config PRESET --plan TARGET --set model.attention_impl=K``
(XLA's real GPU compiler through jax's CUDA plugin, or libtpu's, on abstract devices; the
packages in a scratch folder this test installs once, `_deviceless.py`). Asserted per case
(`_deviceless.check_preset_plan`, here and for the shrunk presets):

* it compiles (train and eval step); ``auto`` takes cuDNN on an H100 no tjx measurement covers
  (the plans read an empty launch table: the packaged one holds the GPU suite's H100 timings,
  whose choice tools/tjx_tools/gpu_suite/test_gpu_suite.py checks),
  and XLA on a TPU (an explicit ``cudnn`` is the same program as that ``auto``: not compiled
  twice);
* the Pallas kernels compile through jaxlib's own Triton (their ``tjx_flash_*`` Triton calls are
  in the program XLA built; a Triton failure fails the compile);
* no float32 matrix product in these bf16 runs except the ones ``ALLOWED_F32_DOTS`` names;
* here only: the compiled peak per device is within 5 % of the figure committed in
  BENCHMARKS.md's guard table (a regression guard: update the table on purpose when the program
  changes), for each preset compiled as shipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests_integration._deviceless import check_preset_plan, plan, scratch_envs

ROOT = Path(__file__).resolve().parents[2]
GUARD = re.compile(r"<!-- plan-guard -->(.*?)<!-- /plan-guard -->", re.S)
GIB = 2**30

CASES = [
    # gpt2_small's XLA and Pallas attention on an H100 are llama_small's programs but for GPT-2's
    # own layers, which its auto (cuDNN) case compiles: not compiled again (CI's 60 minutes; the
    # unrolled preset's Pallas case took 155 s of CI on 2026-11-27, llama_small's 42 s).
    ("gpt2_small", "h100", "auto"),
    *[("llama_small", "h100", k) for k in ("auto", "pallas", "xla")],
    # #43: LoRA chat fine-tuning of Llama-3.1-8B's shape (the trainer README's figure)
    ("sft_llama", "h100", "auto"),
]


def guard_table() -> dict[tuple[str, str, str], float]:
    """(preset, target, kernel) → peak GiB from BENCHMARKS.md's guard table."""
    found = GUARD.search((ROOT / "BENCHMARKS.md").read_text(encoding="utf-8"))
    assert found, "BENCHMARKS.md has no <!-- plan-guard --> table"
    rows = {}
    for line in found.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] not in ("preset", "") and not cells[0].startswith("-"):
            rows[(cells[0], cells[1], cells[2])] = float(cells[4].split()[0])
    return rows


@pytest.fixture(scope="module")
def envs() -> dict[str, Path]:
    return scratch_envs()


@pytest.mark.parametrize("preset,target,kernel", CASES)
def test_the_preset_compiles_for_the_device_without_it(preset, target, kernel, envs, tmp_path):
    data = plan(preset, target, kernel, envs["cuda12"], tmp_path)
    chosen = check_preset_plan(data, preset, target, kernel)
    committed = guard_table()[(preset, target, chosen)]  # the preset as shipped: its figure
    peak = data["train"]["peak_bytes"] / GIB
    assert peak == pytest.approx(committed, rel=0.05), (
        f"{preset} on {target} ({chosen}): compiled peak {peak:.2f} GiB, BENCHMARKS.md says "
        f"{committed:.2f} GiB; update its guard table if the change is meant"
    )
