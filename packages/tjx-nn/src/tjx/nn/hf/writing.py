"""Writing a checkpoint's tensors as safetensors, one shard in memory at a time
(`write_safetensors`), in shards of at most `parse_size` bytes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from tjx.nn.hf.io import INDEX, SINGLE


def parse_size(size: int | str) -> int:
    """Bytes of ``size``: an int, or ``"5GB"``/``"500MB"``/``"10KB"`` (powers of 1000, like HF)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        text = str(size).strip().upper()
        units = {"GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}
        unit = next((u for u in units if text.endswith(u)), None)
        try:
            value = int(float(text[: -len(unit)]) * units[unit]) if unit else int(text)
        except ValueError:
            value = 0
    if value <= 0:
        raise ValueError(f"max_shard_size must be a positive size such as '5GB'; got {size!r}")
    return value


def write_safetensors(
    folder: Path,
    tensors: Iterable[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]],
    *,
    itemsize: int,
    max_shard_size: int,
) -> list[str]:
    """Write tensors (name, shape, producer) into ``folder``, one shard in memory at a time.

    All in ``model.safetensors`` when they fit ``max_shard_size`` bytes, else
    ``model-0000k-of-0000n.safetensors`` shards and ``model.safetensors.index.json``, the layout
    ``transformers`` writes. A tensor larger than the limit gets a shard of its own.

    Returns
    -------
    list of str
        The files written.
    """
    from safetensors.numpy import save_file

    groups: list[list[tuple[str, Callable[[], np.ndarray]]]] = [[]]
    sizes = [0]
    total = 0
    for name, shape, produce in tensors:
        nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
        if groups[-1] and sizes[-1] + nbytes > max_shard_size:
            groups.append([])
            sizes.append(0)
        groups[-1].append((name, produce))
        sizes[-1] += nbytes
        total += nbytes
    meta = {"format": "pt"}
    if len(groups) == 1:
        save_file(_materialise(groups[0]), str(folder / SINGLE), metadata=meta)
        return [SINGLE]
    files, weight_map = [], {}
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file(_materialise(group), str(folder / fname), metadata=meta)
        files.append(fname)
        weight_map.update({name: fname for name, _ in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return [*files, INDEX]


def _materialise(group: list[tuple[str, Callable[[], np.ndarray]]]) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(produce()) for name, produce in group}
