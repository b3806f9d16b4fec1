"""Issue #58's damaged Hugging Face checkpoints, for the trainer's and eval's command-line tests.

Each case damages a copy of a saved checkpoint folder (fresh random bytes each time) and names
what the one-line refusal must say.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

#: (how, which saved folder it damages: "one" file or "sharded", a piece of the expected line).
HOSTILE_HF = [
    ("random-bytes", "one", "model.safetensors is not a safetensors file"),
    ("truncated", "one", "model.safetensors is truncated: its header"),
    ("missing-shard", "sharded", ".safetensors is missing: model.safetensors.index.json names"),
    ("integer-tensor", "one", "model.safetensors: tensor model.norm.weight is stored as I32"),
    ("misshaped-tensor", "one", "model.safetensors: tensor model.norm.weight has shape [15]"),
]


def damage(folder: Path, how: str) -> None:
    """Damage the HF checkpoint ``folder`` in place, as ``how`` (a `HOSTILE_HF` case) says.

    Parameters
    ----------
    folder : Path
        A folder `tjx.nn.save_hf` wrote (whole, or in shards for ``missing-shard``).
    how : str
        The first field of a `HOSTILE_HF` case.
    """
    rng = np.random.default_rng()
    whole = folder / "model.safetensors"
    if how == "random-bytes":
        whole.write_bytes(os.urandom(int(rng.integers(64, 4096))))
    elif how == "truncated":
        content = whole.read_bytes()
        whole.write_bytes(content[: -int(rng.integers(1, len(content) - 8))])
    elif how == "missing-shard":
        shards = sorted(folder.glob("model-0*.safetensors"))
        shards[int(rng.integers(len(shards)))].unlink()
    else:  # a tensor's dtype or shape is not what config.json implies
        weights = load_file(str(whole))
        norm = weights["model.norm.weight"]
        weights["model.norm.weight"] = (
            norm.astype(np.int32) if how == "integer-tensor" else rng.normal(size=norm.size - 1)
        )
        save_file(weights, str(whole))
