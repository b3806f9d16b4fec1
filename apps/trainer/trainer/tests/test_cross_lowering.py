"""gpt2_small's train step cross-lowered for an abstract H100 (no GPU here, no launch table): the
unmeasured Pallas kernel never enters it unless asked for by name; ``auto`` takes cuDNN.

jax's cuDNN attention checks the installed cuDNN and the GPU's compute capability while tracing;
on a CPU machine there is neither, so the test answers them as an H100 with cuDNN 9.10 would.
"""

from __future__ import annotations

import json

import pytest
from jax._src.cudnn import fused_attention_stablehlo as cudnn_fmha
from jax.sharding import AbstractDevice, AbstractMesh, use_abstract_mesh

from tjx import kernels
from tjx.kernels import launch
from trainer.config.settings import apply_overrides, load_config_data
from trainer.config.typed import read_config, resolve, step_config
from trainer.plan.memory_fit import abstract_step

TRITON, CUDNN = "__gpu$xla.gpu.triton", "__cudnn$fmha"
H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def h100(tmp_path, monkeypatch):
    """An abstract H100 with cuDNN, and a launch table with nothing measured."""
    monkeypatch.setattr(cudnn_fmha, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(cudnn_fmha, "check_compute_capability", lambda cap: cap <= "9.0")
    monkeypatch.setattr(cudnn_fmha, "is_cuda_compute_capability_equal", lambda cap: cap == "9.0")
    empty = tmp_path / "tables.json"
    empty.write_text(json.dumps({"schema": 1, "devices": {}}))
    monkeypatch.setenv(launch.ENV_VAR, str(empty))
    launch.clear_launch_cache()
    gpu = AbstractDevice(device_kind=H100, num_cores=None, platform="gpu")
    with (
        kernels.target("gpu", H100, (9, 0)),
        use_abstract_mesh(AbstractMesh((), (), abstract_device=gpu)),
    ):
        yield
    launch.clear_launch_cache()


def _lowered(*sets: str) -> str:
    # Scanned layers: one layer's kernels in the program (the preset unrolls its 12).
    sets = ("model.scan_layers=true", *sets)
    cfg = read_config(apply_overrides(load_config_data("gpt2_small"), list(sets)))
    step, state, batch = abstract_step(step_config(resolve(cfg, cfg.vocab_size or 50257)))
    return step.trace(state, batch).lower(lowering_platforms=("cuda",)).as_text()


def test_auto_on_an_h100_with_no_measurement_lowers_to_cudnn_not_triton(h100):
    text = _lowered()
    assert text.count(TRITON) == 0
    assert text.count(CUDNN) >= 2  # forward and backward of the scanned layer


def test_pallas_by_name_lowers_to_triton(h100):
    text = _lowered("model.attention_impl=pallas")
    assert text.count(TRITON) == 3 and text.count(CUDNN) == 0  # fwd, bwd dq, bwd dk/dv
