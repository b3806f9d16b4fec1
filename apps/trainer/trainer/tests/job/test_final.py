"""``final.json``: the last step, why the run stopped, the parameters' digest (tjx.ckpt's
`params_sha256`, checked there against a NumPy reference) and the last validation metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tjx.ckpt import params_sha256
from trainer.config.folder import RunDir, final_summary


def _params(seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((8, 4)).astype(np.float32),
        "b": rng.standard_normal(3).astype(np.float32),
        "blocks": [{"scale": rng.standard_normal(5).astype(np.float32)}],
    }


def test_final_summary_is_what_final_json_holds(tmp_path: Path) -> None:
    params = _params(2)
    rng = np.random.default_rng(3)
    val = {"loss": float(rng.uniform(1, 3)), "perplexity": float(rng.uniform(3, 20))}
    summary = final_summary(7, params, num_params=41, interrupted_by="SIGTERM", validation=val)
    assert summary == {
        "step": 7,
        "interrupted_by": "SIGTERM",
        "params_sha256": params_sha256(params),
        "num_params": 41,
        "val_loss": val["loss"],
        "val_perplexity": val["perplexity"],
    }
    # A run that reached its end, before any evaluation.
    bare = final_summary(9, params, num_params=41)
    assert bare == {
        "step": 9,
        "interrupted_by": None,
        "params_sha256": params_sha256(params),
        "num_params": 41,
    }
    run = RunDir(tmp_path)
    assert run.write_final(summary)
    assert run.read(RunDir.FINAL_FILE) == summary
