"""``--plan TARGET --init-from FOLDER`` of a published quantized release at its real size (#70,
point 3), FOLDER holding only its ``config.json`` and index (tests-support's transcribed
``tjx_published_hf``): the plan's config is the release's architecture, not a refusal of its
``quantization_config`` or of its absent shards; a run from the same folder still refuses the
missing shards in one line before anything is written. (The plan's compile for 8 H100s itself is
not run here: minutes per compile for a 117-685 B model.)"""

from __future__ import annotations

import pytest
import tjx_published_hf as published

from tjx import nn
from trainer.config.schema import ConfigError
from trainer.config.settings import apply_overrides, load_config_data
from trainer.config.typed import read_config
from trainer.step import init_from


def _llama_run():
    return read_config(apply_overrides(load_config_data("tiny"), ["model.kind=llama"]))


@pytest.mark.parametrize(
    ("name", "sizes"),
    [
        (
            "gpt-oss-120b",
            {
                "d_model": 2880,
                "num_layers": 36,
                "moe.num_experts": 128,
                "vocab_size": 201088,
            },
        ),
        (
            "DeepSeek-V3.1",
            {
                "d_model": 7168,
                "num_layers": 61,
                "moe.num_experts": 256,
                "mtp.depths": 1,
            },
        ),
        (
            "DeepSeek-V3.2",
            {
                "d_model": 7168,
                "mla.index_topk": 2048,
                "mla.index_n_heads": 64,
                "mtp.depths": 1,
            },
        ),
        (
            "Kimi-K2-Instruct",
            {
                "d_model": 7168,
                "num_layers": 61,
                "moe.num_experts": 384,
                "vocab_size": 163840,
            },
        ),
        (
            "Kimi-K2.5",  # the image-text folder, INT4 compressed-tensors experts: its text model
            {
                "d_model": 7168,
                "num_layers": 61,
                "moe.num_experts": 384,
                "norm.eps": 1e-5,
            },
        ),
        (
            "Qwen3.5-397B-A17B",
            {
                "d_model": 4096,
                "num_layers": 60,
                "moe.num_experts": 512,
                "delta.value_heads": 64,
            },
        ),
        (
            "Qwen3.5-27B",
            {
                "d_model": 5120,
                "num_layers": 64,
                "moe.num_experts": 0,
                "delta.value_heads": 48,
            },
        ),
        (
            "MiniMax-M2",
            {
                "d_model": 3072,
                "num_layers": 62,
                "moe.num_experts": 256,
                "position.rope_fraction": 0.5,
            },
        ),
    ],
)
def test_a_plan_reads_a_published_release_from_its_config_and_index(tmp_path, name, sizes):
    folder = published.config_only(name, tmp_path / name)
    cfg = _llama_run()
    planned = init_from.start_config(cfg, str(folder))
    assert {k: nn.setting_value(planned.model, k) for k in sizes} == sizes
    assert planned.vocab_size == planned.model.vocab_size
    assert planned.model.remat == cfg.model.remat  # how it trains: the config's
    with pytest.raises(ConfigError, match=r"^--init-from: .*is missing: model\.safetensors\.index"):
        init_from.check_init_from(cfg, str(folder))  # a run needs the weights
    left = sorted(p.name for p in folder.iterdir())
    assert left == ["config.json", "model.safetensors.index.json"]  # nothing written
