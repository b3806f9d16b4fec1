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
import math
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ml_dtypes
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
#: The dtypes weights may be stored in: each is cast to the model's param dtype (as HF does).
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
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


def check_tensors(
    present: dict[str, tuple[int, ...]],
    expected: dict[str, tuple[int, ...]],
    ignored: Callable[[str], bool],
    *,
    dtypes: dict[str, str] | None = None,
    files: dict[str, Path] | None = None,
) -> None:
    """Raise one ``ValueError`` line on missing, extra, mis-shaped or non-float tensors.

    Parameters
    ----------
    present : dict
        Tensor name → stored shape.
    expected : dict
        Tensor name → the shape ``config.json`` implies (`HFMapping.shapes`).
    ignored : Callable
        Names that may be present without being expected.
    dtypes : dict, optional
        Tensor name → stored safetensors dtype: an expected tensor must be floating point
        (`FLOAT_DTYPES`, cast to the model's dtype as HF does); integers, booleans or FP8 are a
        quantized or wrong checkpoint, which a cast would silently turn into other numbers.
    files : dict, optional
        Tensor name → the file holding it, named in the message.
    """
    missing = sorted(set(expected) - set(present))
    if missing:
        raise ValueError(f"checkpoint lacks tensor(s) {_few(missing)} that its config.json implies")
    extra = sorted(n for n in set(present) - set(expected) if not ignored(n))
    if extra:
        raise ValueError(
            f"checkpoint has tensor(s) {_few(extra)} that its config.json does not explain"
        )

    def where(name: str) -> str:
        return f"{files[name]}: " if files and name in files else ""

    for name, shape in expected.items():
        if tuple(present[name]) != tuple(shape):
            raise ValueError(
                f"{where(name)}tensor {name} has shape {list(present[name])}, config.json implies "
                f"{list(shape)}; the weights are another model's: use the config.json saved "
                "with them"
            )
        if dtypes is not None and dtypes[name] not in FLOAT_DTYPES:
            raise ValueError(
                f"{where(name)}tensor {name} is stored as {dtypes[name]}, config.json's model has "
                f"floating-point weights ({', '.join(FLOAT_DTYPES)}); save the checkpoint "
                "unquantized"
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
