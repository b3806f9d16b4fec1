"""Shared pieces of the harness tests: a hand-made decoder run and the local tasks' data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from tjx import ckpt, nn

#: The task YAMLs (their data files are written by ``write_task_data`` into the working folder).
TASK_DIR = Path(__file__).parent / "harness_tasks"
TASKS = ("local_hellaswag", "local_lambada", "local_rolling", "local_generate")

WORDS = "the a rose by any other name would smell as sweet wherefore art thou romeo night".split()


def make_run(
    root: Path, *, max_seq_len: int = 64, seed: int = 3, model_json: Any = None
) -> tuple[Path, Any]:
    """A byte-tokenizer GPT-2 run directory (config, model.json, data.json, one checkpoint)."""
    fields = {
        "vocab_size": 257,
        "max_seq_len": max_seq_len,
        "d_model": 32,
        "num_layers": 2,
        "num_heads": 2,
        "precision": {"param_dtype": "float32", "compute_dtype": "float32"},
    }
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: hand-made\n")
    (run / "model.json").write_text(
        json.dumps(model_json or {"class": "GPT2Config", "fields": fields})
    )
    (run / "data.json").write_text(
        json.dumps(
            {
                "tokenizer": "byte",
                "val_dir": str(root / "shards" / "validation"),
                "bytes_per_token": 1.0,
                "seq_len": max_seq_len,
                "cache_dir": str(root / "cache"),
            }
        )
    )
    config = nn.config_from_dict(json.loads((run / "model.json").read_text()))
    model = nn.build_model(config, rngs=nnx.Rngs(seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    manager = ckpt.CheckpointManager(run / "checkpoints", async_save=False)
    manager.save(1, state={"params": params, "step": np.int32(1)}, config={}, force=True)
    manager.close()
    return run, model


def sentence(rng: np.random.Generator, n: int) -> str:
    """``n`` random words."""
    return " ".join(rng.choice(WORDS, size=n))


def write_task_data(folder: Path, rng: np.random.Generator, docs: int = 6) -> None:
    """The local tasks' JSONL files (HellaSwag's fields, LAMBADA's text, documents, questions)."""

    def dump(name: str, rows: list[dict[str, Any]]) -> None:
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    dump(
        "local_hellaswag",
        [
            {
                "ctx": sentence(rng, 5),
                "endings": [sentence(rng, int(rng.integers(1, 4))) for _ in range(4)],
                "label": int(rng.integers(0, 4)),
            }
            for _ in range(docs)
        ],
    )
    dump("local_lambada", [{"text": sentence(rng, int(rng.integers(3, 9)))} for _ in range(docs)])
    # Longer than a 64-token window: several rolling windows per document.
    dump("local_rolling", [{"text": sentence(rng, int(rng.integers(5, 40)))} for _ in range(docs)])
    dump(
        "local_generate",
        [{"question": sentence(rng, 3) + ":", "answer": "rose"} for _ in range(docs)],
    )
