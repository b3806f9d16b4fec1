"""Reading a checkpoint's safetensors files: each file's header checked before any model is
built (`read_header`), then its tensors read one at a time (`LazyWeights`).

Tensors are read through ``safetensors.safe_open`` (memory-mapped), so a conversion never holds
the whole checkpoint next to the model. ``safetensors`` is imported lazily.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ml_dtypes
import numpy as np

from tjx.nn.hf.io import INDEX, SINGLE

#: Bytes per element of each safetensors dtype tjx can read (sub-byte ones are refused).
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
#: The 1-byte float dtypes safetensors' NumPy reader does not give (NumPy has no float8): read as
#: their bytes, viewed as ml_dtypes' types (the quantized checkpoints', `tjx.nn.hf.quantized`).
RAW_DTYPES: dict[str, Any] = {
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "F8_E8M0": ml_dtypes.float8_e8m0fnu,
}
#: The largest header safetensors itself reads (its ``MAX_HEADER_SIZE``).
MAX_HEADER_BYTES = 100_000_000
#: What to do about a damaged weights file, the end of every such message.
_FIX = "download or save the checkpoint again"


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a safetensors header describes it (no data read); ``offset``: where its bytes
    start in the file (-1: not known)."""

    dtype: str
    shape: tuple[int, ...]
    offset: int = -1


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of safetensors file ``path`` (name → dtype and shape), from its header alone.

    Checks what ``safe_open`` would otherwise report as a traceback, before any model is built:
    the 8-byte header length fits the file, the header is a JSON object of well-formed entries,
    each tensor's byte range holds its shape and dtype, and the ranges cover the data end to end
    (a truncated file lacks the end of its last tensors). Reads the header only, never tensor data.

    Raises
    ------
    ValueError
        One line naming ``path``, what is wrong with it and the fix.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            length = int.from_bytes(head, "little")
            raw = handle.read(length) if len(head) == 8 and length <= MAX_HEADER_BYTES else b""
    except OSError as e:
        raise ValueError(f"cannot read {path} ({e.strerror}); make it readable") from None
    if len(head) < 8:
        raise ValueError(f"{path} is {size} bytes, too short for a safetensors file; {_FIX}")
    if length > MAX_HEADER_BYTES:
        raise ValueError(
            f"{path} is not a safetensors file: its first 8 bytes give a header length of "
            f"{length} bytes, more than safetensors allows ({MAX_HEADER_BYTES}); {_FIX}"
        )
    if 8 + length > size:
        raise ValueError(
            f"{path} is truncated: its header needs {length} bytes, the file holds "
            f"{size - 8} after the length; {_FIX}"
        )
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path} is not a safetensors file: its header is not JSON ({e}); {_FIX}"
        ) from None
    if not isinstance(header, dict):
        raise ValueError(
            f"{path} is not a safetensors file: its header is not a JSON object; {_FIX}"
        )
    tensors: dict[str, TensorEntry] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, span = _entry(path, name, entry)
        need = math.prod(shape) * _DTYPE_BYTES[dtype]  # exact: a hostile shape cannot overflow
        if span[1] - span[0] != need:
            raise ValueError(
                f"{path}: tensor {name} spans {span[1] - span[0]} bytes, its shape {list(shape)} "
                f"and dtype {dtype} need {need}; {_FIX}"
            )
        tensors[name] = TensorEntry(dtype, shape, 8 + length + span[0])
        spans.append((span[0], span[1], name))
    _check_coverage(path, sorted(spans), size - 8 - length)
    return tensors


def _entry(path: Path, name: str, entry: Any) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """One header entry's dtype, shape and byte range, each checked for its form."""

    def count(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    fields = entry if isinstance(entry, dict) else {}
    dtype, shape, span = fields.get("dtype"), fields.get("shape"), fields.get("data_offsets")
    if not (
        isinstance(shape, list)
        and all(count(d) for d in shape)
        and isinstance(span, list)
        and len(span) == 2
        and all(count(o) for o in span)
        and span[0] <= span[1]
    ):
        raise ValueError(
            f"{path}: header entry {name!r} is not a tensor (dtype, shape and data_offsets); "
            f"{_FIX}"
        )
    if dtype not in _DTYPE_BYTES:
        raise ValueError(
            f"{path}: tensor {name} has dtype {dtype!r}, which tjx does not read (it reads "
            f"{', '.join(_DTYPE_BYTES)}); save the checkpoint in one of those"
        )
    return str(dtype), tuple(shape), (span[0], span[1])


def _check_coverage(path: Path, spans: list[tuple[int, int, str]], data_bytes: int) -> None:
    """The tensors' byte ranges (sorted) must tile the file's data: no gap, no overlap, no rest."""
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            raise ValueError(
                f"{path}: tensor {name}'s data starts at byte {begin}, the one before ends at "
                f"{end} (a gap or an overlap: not a file safetensors wrote); {_FIX}"
            )
        end = stop
    if end > data_bytes:
        raise ValueError(
            f"{path} is truncated: its header describes {end} bytes of tensor data, the file "
            f"holds {data_bytes}; {_FIX}"
        )
    if end < data_bytes:
        raise ValueError(
            f"{path} has {data_bytes - end} bytes after its last tensor (not a file safetensors "
            f"wrote); {_FIX}"
        )


class Tensors(Protocol):
    """What the loader reads a checkpoint's tensors through: `LazyWeights`, or its tensors
    dequantized (`tjx.nn.hf.quantized.Dequantized`)."""

    def names(self) -> set[str]: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def dtype(self, name: str) -> str: ...
    def path(self, name: str) -> Path: ...
    def get(self, name: str) -> np.ndarray: ...


class LazyWeights:
    """The tensors of a checkpoint folder, read one at a time (use as a context manager).

    Parameters
    ----------
    folder : Path
        Holds ``model.safetensors`` or ``model.safetensors.index.json`` and its shards.

    Raises
    ------
    ValueError
        An index that is not JSON or names a shard outside the folder; on entering, a missing
        shard, a file that is not whole safetensors (`read_header`), or a tensor the index names
        that its shard lacks: one line naming the file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        if (folder / INDEX).is_file():
            try:
                index = json.loads((folder / INDEX).read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{folder / INDEX} is not valid JSON ({e}); {_FIX}") from None
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict):
                raise ValueError(f"{folder / INDEX} has no 'weight_map' object; {_FIX}")
            self.files: dict[str, str] = {str(k): str(v) for k, v in weight_map.items()}
            for shard in set(self.files.values()):
                # A shard is a file of this folder: never read a path the index points elsewhere.
                if Path(shard).name != shard or shard in ("", ".", ".."):
                    raise ValueError(
                        f"{folder / INDEX} names shard {shard!r}, not a file name in the folder; "
                        f"{_FIX}"
                    )
        else:
            self.files = {}
        self._entries: dict[str, TensorEntry] = {}

    def __enter__(self) -> LazyWeights:
        """Read and check every shard's header (names, dtypes, shapes): no tensor data yet."""
        listed = dict(self.files)
        for name in sorted(set(listed.values())) or [SINGLE]:
            path = self.folder / name
            if not path.is_file():
                raise ValueError(
                    f"{path} is missing: {INDEX} names it as a shard; {_FIX} with all its shards"
                )
            for key, entry in read_header(path).items():
                self._entries[key] = entry
                self.files.setdefault(key, name)
            for key in (k for k, shard in listed.items() if shard == name):
                if key not in self._entries:
                    raise ValueError(f"{path} lacks tensor {key} that {INDEX} names; {_FIX}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._entries.clear()

    def names(self) -> set[str]:
        """Every tensor name in the checkpoint."""
        return set(self.files)

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of ``name`` (from the header, no data)."""
        return self._entries[name].shape

    def dtype(self, name: str) -> str:
        """The stored safetensors dtype of ``name`` (``"BF16"``, ``"F32"``, ...; no data)."""
        return self._entries[name].dtype

    def path(self, name: str) -> Path:
        """The file that holds ``name``."""
        return self.folder / self.files[name]

    def get(self, name: str) -> np.ndarray:
        """The tensor ``name`` (its stored dtype; bf16 as ``ml_dtypes.bfloat16``).

        Each read maps its shard afresh and unmaps it after copying the tensor out: pages of a
        mapping held open stay in the process's resident set, which over a whole checkpoint
        would add a second copy of the weights to the peak (measured: 2.07× the weight bytes
        with the shards held open, see the README).

        Raises
        ------
        ValueError
            The shard no longer reads (changed since its header was checked), naming it.
        """
        from safetensors import SafetensorError, safe_open

        path = self.path(name)
        entry = self._entries[name]
        if entry.dtype in RAW_DTYPES:
            return _raw(path, entry)
        try:
            with safe_open(str(path), framework="np") as handle:
                return np.array(handle.get_tensor(name), copy=True)
        except SafetensorError as e:
            raise ValueError(f"{path} no longer reads ({e}); {_FIX}") from None


def _raw(path: Path, entry: TensorEntry) -> np.ndarray:
    """The tensor of ``entry`` read as its bytes from ``path`` (a `RAW_DTYPES` one): NumPy has no
    float8 types, so safetensors' NumPy reader refuses them; its header gave the byte range."""
    count = math.prod(entry.shape)
    try:
        data = np.fromfile(path, dtype=np.uint8, count=count, offset=entry.offset)
    except OSError as e:
        raise ValueError(f"{path} no longer reads ({e.strerror}); {_FIX}") from None
    if data.size != count:
        raise ValueError(f"{path} no longer reads (it is shorter than its header says); {_FIX}")
    return data.view(RAW_DTYPES[entry.dtype]).reshape(entry.shape)
