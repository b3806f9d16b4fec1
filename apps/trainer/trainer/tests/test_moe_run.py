"""The ``moe_tiny`` preset, shrunk, trains in-process: its loss falls, the router's metrics are
logged for every log line (balance and z-losses, dropped share, every MoE layer's expert load),
it evaluates and samples (KV-cache generation through MoE layers); bad MoE input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml  # type: ignore[import-untyped]

from tjx import nn
from trainer.cli import main

SETS = [
    "model.d_model=32",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.mlp.dim=32",
    "model.max_seq_len=32",
    "data.seq_len=32",
    "data.batch_size=8",
    "eval.batch_size=8",
    "train.steps=24",
    "train.log_every=4",
    "train.eval_every=24",
    "train.eval_batches=1",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "optimizer.schedule.warmup_steps=2",
    "sampling.max_new_tokens=4",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]


def _argv(root, *extra):
    text = root / "corpus.txt"
    rng = np.random.default_rng()
    words = ["to", "be", "or", "not", "that", "is", "the", "question"]
    text.write_text("".join(" ".join(rng.choice(words, 9)) + ".\n" for _ in range(300)))
    argv = ["--config", "moe_tiny", "--run-dir", str(root / "run"), "--data", str(text)]
    for item in [*SETS, f"data.cache_dir={root / 'cache'}", *extra]:
        argv += ["--set", item]
    return argv


def test_moe_tiny_learns_and_logs_its_routers(in_tmp, capsys):
    assert main(_argv(in_tmp)) == 0
    capsys.readouterr()
    run = in_tmp / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and "step" in r]
    assert [r["step"] for r in steps] == [4, 8, 12, 16, 20, 24]
    assert steps[-1]["loss"] < 0.7 * steps[0]["loss"], [r["loss"] for r in steps]
    for r in steps:
        # Dropless routing drops nothing; the Switch balance loss is >= 1 (1: balanced); the
        # loads of each MoE layer (layers 0 and 1) are shares of its assignments.
        assert r["moe_dropped_fraction"] == 0.0
        assert r["moe_balance_loss"] >= 1.0 - 1e-6 and r["moe_z_loss"] > 0
        assert r["moe_load_max"] >= 1.0 >= r["moe_load_min"] >= 0.0
        for layer in (0, 1):
            loads = [r[f"moe_load/{layer}/{e}"] for e in range(4)]
            assert sum(loads) == pytest.approx(1.0, abs=1e-9)
            assert r[f"moe_load_max/{layer}"] == pytest.approx(4 * max(loads))
    assert any("val_loss" in r for r in rows)
    assert (run / "samples" / "step_0000024.txt").read_text().strip()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["mesh.data=1", "mesh.expert=8"], "mesh.expert: 8 devices do not divide"),
        (["model.moe.experts_per_token=5"], "model.moe.experts_per_token"),
        (["model.moe.capacity_factor=0"], "model.moe.capacity_factor"),
        (["model.moe.capacity_factor=1.0", "mesh.context=2"], "per sequence"),
    ],
)
def test_bad_moe_input_is_one_line_and_writes_nothing(in_tmp, capsys, extra, message):
    assert main(_argv(in_tmp, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (in_tmp / "run").exists()


#: A sigmoid router with a balancing bias (state the checkpoint holds and the update moves), every
#: other layer MoE: set by the flat keys the trainer read before the ``moe`` section.
FLAT_MOE = ["model.moe_layer_step=2", "model.router=sigmoid", "model.router_bias_rate=0.002"]
SAVED_BEFORE_SECTIONS = Path(__file__).parent / "saved_before_sections"


#: The settings newer than 0.28 whose off value is not None (the rest are off at None); the
#: norm's and the MLP's kernels at ``auto`` are tjx's own layers on a CPU (no measured tokamax).
NEWER_OFF = {
    "mla.index_loss_weight": 0.0,
    "mla.index_loss": "sparse",
    "norm.impl": "auto",
    "mlp.impl": "auto",
}


def _flat(model: dict) -> dict:
    """A model section (or a model.json's fields) as tjx-nn 0.28 wrote it: the ``moe``, ``mla``
    and ``delta`` sections' settings flat, by their old names."""
    old = {new: name for name, new in nn.RENAMED_MODEL_KEYS.items()}
    out = {k: v for k, v in model.items() if k not in nn.SECTIONS}
    for section in nn.SECTIONS:
        for k, v in model[section].items():
            if f"{section}.{k}" in old:
                out[old[f"{section}.{k}"]] = v
            else:  # newer than 0.28 (DeepSeek-V3.2's, Kimi's, the kernels'): not written then, off
                assert v == NEWER_OFF.get(f"{section}.{k}"), f"{section}.{k}"
    return out


def test_a_run_written_with_flat_moe_keys_resumes_bit_for_bit(in_tmp, capsys):
    """A run whose config.yaml and model.json hold the MoE settings flat (as the trainer wrote
    them before the ``moe`` section: the saved moe_tiny run's keys) and resumed with the same
    command, its flat ``--set`` keys too, ends where the run that went through ends."""
    saved = yaml.safe_load((SAVED_BEFORE_SECTIONS / "moe_tiny.yaml").read_text())["model"]
    rng = np.random.default_rng()  # fresh text: the resume must hold on any data
    text = in_tmp / "text.txt"
    words = ["to", "be", "or", "not", "that", "is", "the", "question"]
    text.write_text("".join(" ".join(rng.choice(words, 9)) + ".\n" for _ in range(300)))
    sets = [*SETS, *FLAT_MOE, "train.steps=4", "train.eval_every=4", f"data.cache_dir={in_tmp}"]

    def argv(root, *extra):
        run = ["--config", "moe_tiny", "--run-dir", str(root / "run"), "--data", str(text)]
        return [*run, *(a for s in sets for a in ("--set", s)), *extra]

    assert main(argv(in_tmp / "whole")) == 0
    assert main(argv(in_tmp / "split", "--set", "train.stop_at=2")) == 0
    run = in_tmp / "split" / "run"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["moe"]["layer_step"] == 2  # written in today's sections
    config["model"] = _flat(config["model"])
    assert set(config["model"]) == set(saved)  # the layout the trainer wrote then
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    model = json.loads((run / "model.json").read_text())
    model["fields"] = _flat(model["fields"])
    (run / "model.json").write_text(json.dumps(model))
    assert main(argv(in_tmp / "split", "--resume")) == 0
    capsys.readouterr()
    whole = in_tmp / "whole" / "run"
    a, b = (json.loads((d / "final.json").read_text()) for d in (whole, run))
    assert a["params_sha256"] == b["params_sha256"] and a["val_loss"] == b["val_loss"]
    assert np.isfinite(a["val_loss"])
    # Every logged number too: step 4's line sums the routers over steps 1-4, those of steps 1
    # and 2 carried by the stop's checkpoint (a resume that dropped them logged 3-4's).
    logged = [_logged(d) for d in (whole, run)]
    assert logged[0] == logged[1] and "moe_load_max" in logged[0][0]


def _logged(run: Path) -> list[dict]:
    """``metrics.jsonl``'s rows without what a clock measures (their times and rates)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time" and not k.endswith("_per_s")} for r in rows]
