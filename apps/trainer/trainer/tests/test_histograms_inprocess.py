"""logging.histogram_every: parameter histograms in metrics.jsonl from a tiny in-process run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tjx.metrics import read_jsonl
from trainer.cli import main

from .test_loop_inprocess import SETS


def _run(root, every: int) -> list[dict]:
    text = root / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    run = root / f"run{every}"
    argv = ["--config", "tiny", "--run-dir", str(run), "--data", str(text)]
    # Two steps, nothing saved or sampled between them: the histograms are all this run adds.
    for item in [
        *SETS,
        "train.steps=2",
        "train.checkpoint_every=0",
        "train.sample_every=0",
        f"data.cache_dir={root / 'cache'}",
        f"logging.histogram_every={every}",
    ]:
        argv += ["--set", item]
    assert main(argv) == 0
    return read_jsonl(run / "metrics.jsonl")


@pytest.mark.parametrize("every", [1, 0])
def test_histograms_of_every_parameter(in_tmp, every):
    records = _run(in_tmp, every)
    hists = [r for r in records if "histograms" in r]
    if every == 0:
        assert hists == [] and any("loss" in r for r in records)
        return
    assert [r["step"] for r in hists] == [1, 2]
    num_params = json.loads((in_tmp / f"run{every}" / "final.json").read_text())["num_params"]
    for record in hists:
        named = record["histograms"]
        # Every parameter, once: the sizes add up to the model's parameter count.
        assert sum(h["count"] for h in named.values()) == num_params
        assert all("/" in name and not name.startswith("/") for name in named)
        for name, h in named.items():
            assert h["nonfinite"] == 0 and sum(h["counts"]) == h["count"], name
            assert len(h["bin_edges"]) == len(h["counts"]) + 1
            # numpy.histogram spans [min, max]; a constant parameter's range is widened by ±0.5.
            pad = 0.5 if h["min"] == h["max"] else 0.0
            assert h["bin_edges"][0] == h["min"] - pad, name
            assert h["bin_edges"][-1] == h["max"] + pad, name
            assert np.all(np.diff(h["bin_edges"]) > 0), name


def test_histogram_every_may_change_on_resume():
    from trainer.loop import resume

    # Logging only: it never reaches the train state, so a resume may turn histograms on or off.
    assert resume.is_training_only("logging.histogram_every")
