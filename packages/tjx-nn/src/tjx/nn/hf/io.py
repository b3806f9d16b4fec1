"""Hugging Face checkpoint folders: find one, read its tensors lazily, write one (sharded).

A folder holds ``config.json`` and either ``model.safetensors`` or shards listed in
``model.safetensors.index.json`` (``{"weight_map": {tensor: file}}``). Tensors are read one at a
time through ``safetensors.safe_open`` (memory-mapped), so a conversion never holds the whole
checkpoint next to the model. PyTorch pickles (``pytorch_model.bin``) are never opened: unpickling
runs arbitrary code.

``safetensors`` (and ``huggingface_hub`` for hub names) are imported lazily.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Reads one tensor by name (HF or tjx naming, depending on the direction).
Read = Callable[[str], np.ndarray]
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
#: Tokenizer files that travel with the weights (whichever the folder has).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
_HUB_PATTERNS = ["config.json", "*.safetensors", INDEX, *TOKENIZER_FILES]
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.bin")


@dataclass(frozen=True)
class HFMapping:
    """How one architecture's HF tensors and tjx parameters correspond.

    Attributes
    ----------
    shapes : dict
        HF tensor name → the shape its ``config.json`` implies (the checkpoint's expected set).
    to_tjx : dict
        tjx flat parameter name (``params_io`` naming) → its value from a reader of HF tensors.
    to_hf : dict
        HF tensor name → its value from a reader of tjx parameters.
    ignored : Callable
        HF names a checkpoint may hold that carry nothing (buffers, a tied head's copy).
    """

    shapes: dict[str, tuple[int, ...]]
    to_tjx: dict[str, Callable[[Read], np.ndarray]]
    to_hf: dict[str, Callable[[Read], np.ndarray]]
    ignored: Callable[[str], bool]


def take(
    name: str, shape: tuple[int, ...] | None = None, columns: tuple[int, int] | None = None
) -> Callable[[Read], np.ndarray]:
    """A converter reading ``name``, its last axis cut to ``columns``, reshaped to ``shape``."""

    def convert(read: Read) -> np.ndarray:
        value = read(name)
        if columns is not None:
            value = value[..., columns[0] : columns[1]]
        return value if shape is None else value.reshape(shape)

    return convert


def concat(names: list[str], shape: tuple[int, ...], axis: int) -> Callable[[Read], np.ndarray]:
    """A converter joining ``names`` (each reshaped to ``shape``) along ``axis``."""

    def convert(read: Read) -> np.ndarray:
        return np.concatenate([read(n).reshape(shape) for n in names], axis=axis)

    return convert


def is_hub_id(source: str) -> bool:
    """Whether ``source`` reads as a hub repo id, ``org/name`` (what `resolve` downloads).

    Checked without the network, for an app to tell a typo from a hub name before it downloads
    anything: a local path would exist, or start with ``.`` or ``~``; a one-part name is a
    legacy hub name (``gpt2``) only an app's own list knows.
    """
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def resolve(path_or_hub: str | os.PathLike[str]) -> Path:
    """A local folder as it is, else a hub repo id downloaded (safetensors files only).

    Raises
    ------
    ValueError
        Neither a folder nor a repo the hub gives (offline, unknown name).
    """
    path = Path(path_or_hub).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError(
            f"{str(path_or_hub)!r} is not a local folder and huggingface_hub is not installed"
        ) from e
    try:
        local = snapshot_download(str(path_or_hub), allow_patterns=_HUB_PATTERNS)
    except Exception as e:
        raise ValueError(
            f"could not find {str(path_or_hub)!r} locally or download it from the hub: {e}"
        ) from e
    return Path(local)


def read_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json`` as a dict, after checking that the folder holds safetensors weights.

    Raises
    ------
    ValueError
        No ``config.json``; no weights; only PyTorch pickles (with how to convert them).
    """
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} has no config.json: not a Hugging Face checkpoint folder")
    if not (folder / SINGLE).is_file() and not (folder / INDEX).is_file():
        pickles = [name for name in _PICKLES if (folder / name).is_file()]
        if pickles:
            raise ValueError(
                f"{folder} holds only {pickles[0]} (a PyTorch pickle, never opened by tjx); "
                "convert it to safetensors first: in Python with torch and transformers, "
                f"AutoModelForCausalLM.from_pretrained('{folder}').save_pretrained('OUT', "
                "safe_serialization=True), then use OUT"
            )
        raise ValueError(f"{folder} has no {SINGLE} or {INDEX}: no weights to load")
    try:
        data = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{config_file} must hold a JSON object")
    return data


class LazyWeights:
    """The tensors of a checkpoint folder, read one at a time (use as a context manager).

    Parameters
    ----------
    folder : Path
        Holds ``model.safetensors`` or ``model.safetensors.index.json`` and its shards.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        if (folder / INDEX).is_file():
            index = json.loads((folder / INDEX).read_text())
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict):
                raise ValueError(f"{folder / INDEX} has no 'weight_map' object")
            self.files: dict[str, str] = {str(k): str(v) for k, v in weight_map.items()}
        else:
            self.files = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    def __enter__(self) -> LazyWeights:
        """Read every shard's header (names, shapes): no tensor data yet."""
        from safetensors import safe_open

        listed = dict(self.files)
        for name in sorted(set(listed.values())) or [SINGLE]:
            path = self.folder / name
            if not path.is_file():
                raise ValueError(f"{self.folder}: shard {name} named in {INDEX} is missing")
            with safe_open(str(path), framework="np") as handle:
                keys = list(handle.keys())
                for key in keys:
                    self._shapes[key] = tuple(handle.get_slice(key).get_shape())
                    self.files.setdefault(key, name)
            for key in (k for k, shard in listed.items() if shard == name):
                if key not in self._shapes:
                    raise ValueError(f"{path} lacks tensor {key} that {INDEX} names")
        return self

    def __exit__(self, *exc: object) -> None:
        self._shapes.clear()

    def names(self) -> set[str]:
        """Every tensor name in the checkpoint."""
        return set(self.files)

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of ``name`` (from the header, no data)."""
        return self._shapes[name]

    def get(self, name: str) -> np.ndarray:
        """The tensor ``name`` (its stored dtype; bf16 as ``ml_dtypes.bfloat16``).

        Each read maps its shard afresh and unmaps it after copying the tensor out: pages of a
        mapping held open stay in the process's resident set, which over a whole checkpoint
        would add a second copy of the weights to the peak (measured: 2.07× the weight bytes
        with the shards held open, see the README).
        """
        from safetensors import safe_open

        with safe_open(str(self.folder / self.files[name]), framework="np") as handle:
            return np.array(handle.get_tensor(name), copy=True)


def check_tensors(
    present: dict[str, tuple[int, ...]],
    expected: dict[str, tuple[int, ...]],
    ignored: Callable[[str], bool],
) -> None:
    """Raise one ``ValueError`` line on missing, extra or mis-shaped tensors (naming them)."""
    missing = sorted(set(expected) - set(present))
    if missing:
        raise ValueError(f"checkpoint lacks tensor(s) {_few(missing)} that its config.json implies")
    extra = sorted(n for n in set(present) - set(expected) if not ignored(n))
    if extra:
        raise ValueError(
            f"checkpoint has tensor(s) {_few(extra)} that its config.json does not explain"
        )
    for name, shape in expected.items():
        if tuple(present[name]) != tuple(shape):
            raise ValueError(
                f"tensor {name} has shape {list(present[name])}, config.json implies {list(shape)}"
            )


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")


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


def copy_tokenizer(source: Path, target: Path) -> list[str]:
    """Copy the tokenizer files ``source`` has (``TOKENIZER_FILES``) into ``target``."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
            copied.append(name)
    return copied
