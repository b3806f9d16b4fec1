"""Launch parameters of the flash-attention kernels: generic defaults and per-device tables.

:func:`default_launch` looks a launch (tiles, warps, stages of both passes) up per (dtype,
head_dim bucket) in the table of the device the kernel runs on (``launch_tables.json`` beside this
module; ``TJX_FLASH_LAUNCH_TABLES=/path.json`` replaces it), else in the generic table below.
Files are read once and cached; :func:`clear_launch_cache` forgets them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

ENV_VAR = "TJX_FLASH_LAUNCH_TABLES"  #: names a JSON file that replaces the packaged tables
SCHEMA = 1  #: version of the launch-table file format
MIN_BLOCK = 16  #: smallest tile edge (Triton's dot needs every matmul dimension >= 16)
_RULES: dict[str, tuple[Callable[[int], bool], str]] = {  # field-name prefix → (test, wanted)
    "block": (lambda v: v >= MIN_BLOCK and not v & (v - 1), f"a power of two >= {MIN_BLOCK}"),
    "num_warps": (lambda v: v in (1, 2, 4, 8, 16), "one of 1, 2, 4, 8, 16"),
    "num_stages": (lambda v: 1 <= v <= 8, "in 1..8"),
    "head_split": (lambda v: v in (1, 2, 4, 8), "one of 1, 2, 4, 8"),
}
_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
_KEY = re.compile(r"(bf16|fp16|fp32)-(64|128|256)")
#: Timings of the linear cross-entropy (``tjx.kernels.ce_choice``): one bucket per input dtype.
CE_KEY = re.compile(r"ce-(bf16|fp16|fp32)")
#: Timings of the gated delta rule's sequential part (``tjx.kernels.gated_delta``: the scan
#: against the Pallas kernels, forward and backward): one bucket per input dtype.
GDELTA_KEY = re.compile(r"gdelta-(bf16|fp16|fp32)")
#: Timings of the norms and the gated linear unit (``tjx.kernels.layer_kernels``: XLA against
#: tokamax's kernels, forward and backward): one bucket per layer and input dtype.
LAYER_KEY = re.compile(r"(norm|glu)-(bf16|fp16|fp32)")


@dataclasses.dataclass(frozen=True)
class LaunchDefaults:
    """Tiles, warps and pipeline stages of the forward and backward kernels for one bucket.

    Blocks are powers of two >= 16, warps one of 1, 2, 4, 8, 16 and stages 1..8; a bad value
    raises ``ValueError`` naming the field on construction.

    ``head_split_bwd`` (1, 2, 4 or 8; optional in a table file, default 1) > 1 selects the split
    backward (:mod:`tjx.kernels.flash_bwd`): each kernel runs that many programs per block, each
    writing its slice of the gradient's columns, and each kernel's own block (keys for dK/dV,
    queries for dQ) has ``block_k_bwd`` rows, the blocks it walks over ``block_q_bwd``.
    """

    block_q: int
    block_k: int
    num_warps: int
    block_q_bwd: int
    block_k_bwd: int
    num_warps_bwd: int
    num_stages: int = 2
    num_stages_bwd: int = 2
    head_split_bwd: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field out of range."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            test, want = next(r for p, r in _RULES.items() if field.name.startswith(p))
            if isinstance(value, bool) or not isinstance(value, int) or not test(value):
                raise ValueError(f"launch `{field.name}` must be {want}; got {value!r}")

    @classmethod
    def from_json(cls, data: Any) -> LaunchDefaults:
        """Parse one table entry (an object with every field but the optional
        ``head_split_bwd``); ``ValueError`` if malformed."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not names - {"head_split_bwd"} <= set(data) <= names:
            want = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ValueError(f"an entry must be an object with exactly the fields {want} "
                             "(head_split_bwd optional)")  # fmt: skip
        return cls(**data)


class DeviceTable(NamedTuple):
    """The measured launches of one device kind, a note of how they were measured and the
    kernels' measured fwd+bwd times (bucket key → kernel → ms; only kernels the suite found
    correct), which ``auto`` ranks by: attention's (``bf16-64``..., :mod:`tjx.kernels.choice`),
    the linear cross-entropy's (``ce-bf16``...) and the gated delta rule's (``gdelta-bf16``...)."""

    source: str
    entries: Mapping[str, LaunchDefaults]
    timings: Mapping[str, Mapping[str, float]] = MappingProxyType({})


# Chosen without a GPU by compiling every kernel with Triton for sm_90 and sm_80
# (benchmarks/triton_compile_check.py): the largest tiles whose kernels need no register spills on
# sm_90 and fit an A100's shared memory. E.g. 16-bit head_dim 64 with 128x128 tiles spilled
# 228 B/thread under 4 warps and none under 8; fp32 head_dim 128 backward 64x64 tiles needed
# 193 KiB of shared memory (A100 allows 163). Key: (inputs are 16-bit, head_dim bucket).
_GENERIC: dict[tuple[bool, int], LaunchDefaults] = {
    (True, 64): LaunchDefaults(128, 128, 8, 64, 64, 4),
    (True, 128): LaunchDefaults(128, 64, 8, 32, 64, 8),
    (True, 256): LaunchDefaults(64, 64, 8, 32, 32, 8),
    (False, 64): LaunchDefaults(128, 64, 8, 32, 64, 8),
    (False, 128): LaunchDefaults(128, 64, 8, 32, 32, 4),
    (False, 256): LaunchDefaults(32, 32, 4, 16, 16, 4),
}


# Hopper (sm_90 and later) where its warpgroup MMA (wgmma) needs other tiles: the 16-bit
# head_dim-128 backward with 32-row query tiles compiled to no wgmma for dq (96 mma.sync) and 8 of
# 72 for dk/dv; 128x64 tiles under 8 warps are all-wgmma with no spills on sm_90 (the kernels
# README's table), but spill 6.5 KB on sm_80, so only Hopper takes them. The 16-bit head_dim-256
# backward emitted wgmma only with tiles that spilled (2-4 KB); split in two column halves (dK/dV
# on transposed 64-key x 32-query tiles, dQ on 64-query x 32-key tiles) it is all-wgmma with no
# spills, at 1.5x the dK/dV and 1.67x the dQ kernel's products (the scores are computed twice).
_HOPPER: dict[tuple[bool, int], LaunchDefaults] = {
    (True, 128): LaunchDefaults(128, 64, 8, 128, 64, 8),
    (True, 256): LaunchDefaults(64, 64, 8, 32, 64, 8, head_split_bwd=2),
}


def default_is_hopper() -> bool:
    """Whether the default device is a CUDA GPU of compute capability 9.0 or later."""
    if device_kind_of_default_device() is None:
        return False
    cc = str(getattr(jax.devices()[0], "compute_capability", "0"))  # pragma: no cover - GPU only
    return float(cc) >= 9.0  # pragma: no cover - GPU only


def dtype_name(dtype: Any) -> str | None:
    """A table's short name of a dtype (``"bf16"``, ``"fp16"``, ``"fp32"``), None for others."""
    return _DTYPES.get(jnp.dtype(dtype).name)


def entry_key(dtype: Any, head_dim: int) -> str:
    """Table key ``"<bf16|fp16|fp32>-<64|128|256>"`` of an input dtype and head_dim (1..256)."""
    name = _DTYPES.get(jnp.dtype(dtype).name)
    if name is None:
        raise ValueError(f"no launch for dtype {jnp.dtype(dtype).name}; supported: {list(_DTYPES)}")
    if not 1 <= head_dim <= 256:
        raise ValueError(f"no launch for head_dim {head_dim}; supported: 1..256")
    return f"{name}-{64 if head_dim <= 64 else 128 if head_dim <= 128 else 256}"


def generic_launch(head_dim: int, dtype: Any, *, hopper: bool = False) -> LaunchDefaults:
    """The launch for ``head_dim`` and ``dtype`` chosen without a GPU (no table consulted);
    ``hopper``: for sm_90 and later."""
    name, bucket = entry_key(dtype, head_dim).split("-")
    key = (name != "fp32", int(bucket))
    return _HOPPER.get(key, _GENERIC[key]) if hopper else _GENERIC[key]


def _checked(key: str, value: Any, at: str) -> LaunchDefaults:
    """A table entry (JSON object or LaunchDefaults) validated, or ValueError naming ``at``/key."""
    try:
        if not _KEY.fullmatch(key):
            raise ValueError("unknown key format; want '<bf16|fp16|fp32>-<64|128|256>'")
        if not isinstance(value, LaunchDefaults):
            value = LaunchDefaults.from_json(value)
        value.validate()
        return value
    except ValueError as err:
        raise ValueError(f"{at}, key {key!r}: {err}") from None


def norm_kind(kind: str) -> str:
    """A device kind compared case-insensitively with whitespace collapsed."""
    return " ".join(kind.split()).casefold()


def device_kind_of_default_device() -> str | None:
    """``device_kind`` of the default device when the default backend is a CUDA GPU, else None."""
    try:
        if jax.default_backend() != "gpu":
            return None
        device = jax.devices()[0]
    except RuntimeError:  # pragma: no cover - no backend at all
        return None
    rocm = "rocm" in str(getattr(device.client, "platform_version", "")).lower()
    return None if rocm else str(device.device_kind)


_TABLE_KEYS = {"source", "entries", "timings"}
_KERNELS = ("xla", "cudnn", "pallas", "tokamax", "pallas_rows")  # the last: cross-entropy only


def _checked_timings(data: Any, at: str) -> Mapping[str, Mapping[str, float]]:
    """``{bucket key: {kernel: positive ms}}`` validated, or ValueError naming ``at``/key."""
    if not isinstance(data, dict):
        raise ValueError(f"{at}: 'timings' must be an object {{bucket: {{kernel: ms}}}}")
    out: dict[str, Mapping[str, float]] = {}
    for key, times in data.items():
        ok = isinstance(times, dict) and all(
            k in _KERNELS and isinstance(v, int | float) and not isinstance(v, bool) and v > 0
            for k, v in times.items()
        )
        keys = (_KEY, CE_KEY, GDELTA_KEY, LAYER_KEY)
        bucket = any(pattern.fullmatch(key) for pattern in keys)
        if not bucket or not ok:
            raise ValueError(
                f"{at}, timings {key!r}: want '<bf16|fp16|fp32>-<64|128|256>' (attention), "
                f"'ce-<bf16|fp16|fp32>' (cross-entropy), 'gdelta-<bf16|fp16|fp32>' (the gated "
                f"delta rule) or '<norm|glu>-<bf16|fp16|fp32>' (the norms, the gated linear "
                f"unit) → {{kernel ({', '.join(_KERNELS)}): milliseconds > 0}}"
            )
        out[key] = MappingProxyType({k: float(v) for k, v in times.items()})
    return MappingProxyType(out)


def _parse_tables(text: str, where: str) -> dict[str, DeviceTable]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"launch tables {where}: malformed JSON: {err}") from None
    ok = isinstance(data, dict) and set(data) == {"schema", "devices"}
    if not ok or data["schema"] != SCHEMA or not isinstance(data["devices"], dict):
        raise ValueError(f"launch tables {where}: want {{'schema': {SCHEMA}, 'devices': {{...}}}}")
    tables: dict[str, DeviceTable] = {}
    for kind, table in data["devices"].items():
        at = f"launch tables {where}: device {kind!r}"
        ok = isinstance(table, dict) and {"source", "entries"} <= set(table) <= _TABLE_KEYS
        if not ok or not isinstance(table["source"], str) or not isinstance(table["entries"], dict):
            want = "{'source': <text>, 'entries': {...}, 'timings' (optional): {...}}"
            raise ValueError(f"{at}: want {want}")
        entries = {k: _checked(k, v, at) for k, v in table["entries"].items()}
        timings = _checked_timings(table.get("timings", {}), at)
        tables[kind] = DeviceTable(table["source"], MappingProxyType(entries), timings)
    return tables


@functools.lru_cache(maxsize=8)
def _read_tables(path: str | None) -> Mapping[str, DeviceTable]:
    file = resources.files("tjx.kernels") / "launch_tables.json" if path is None else Path(path)
    return MappingProxyType(_parse_tables(file.read_text("utf-8"), str(file)))


def load_launch_tables(path: str | os.PathLike[str] | None = None) -> Mapping[str, DeviceTable]:
    """Read (once, cached) and validate launch tables: device kind as written → its table.

    Parameters
    ----------
    path : str or PathLike, optional
        Default ``$TJX_FLASH_LAUNCH_TABLES`` if set, else the packaged ``launch_tables.json``.
        Malformed JSON or a bad entry raises ``ValueError`` naming the file, device and key.
    """
    chosen = os.fspath(path) if path is not None else os.environ.get(ENV_VAR) or None
    return _read_tables(chosen)


def measured_bucket(bucket: str, device_kind: str, kernels: tuple[str, ...]) -> dict[str, float]:
    """Kernel → measured milliseconds in the timings ``bucket`` of ``device_kind``'s tables (only
    ``kernels``; empty when nothing was measured)."""
    found: dict[str, float] = {}
    for kind, table in load_launch_tables().items():
        if norm_kind(kind) == norm_kind(device_kind):
            times = table.timings.get(bucket, {})
            found.update({k: v for k, v in times.items() if k in kernels})
    return found


def clear_launch_cache() -> None:
    """Forget every launch-table file read so far (the next lookup reads the file again)."""
    _read_tables.cache_clear()


def default_launch(
    head_dim: int, dtype: Any, device_kind: str | None = None, *, hopper: bool | None = None
) -> LaunchDefaults:
    """The launch for ``head_dim`` (1..256) and input ``dtype`` on a device kind.

    ``device_kind`` None means the default device's kind when it is a CUDA GPU (else no device
    table is consulted). Device kinds compare case-insensitively with whitespace collapsed. Order:
    the device's entry for the dtype, its entry for the other 16-bit dtype, the generic table
    (its Hopper entries when ``hopper``; None: whether the default device is sm_90 or later).
    """
    key = entry_key(dtype, head_dim)
    kind = device_kind_of_default_device() if device_kind is None else device_kind
    tables = load_launch_tables() if kind is not None else {}
    found = [
        t.entries for k, t in tables.items() if kind is not None and norm_kind(k) == norm_kind(kind)
    ]
    name, bucket = key.split("-")
    other = {"bf16": "fp16", "fp16": "bf16"}.get(name, name)
    for candidate in (key, f"{other}-{bucket}"):
        for entries in found:
            if candidate in entries:
                return entries[candidate]
    return generic_launch(head_dim, dtype, hopper=default_is_hopper() if hopper is None else hopper)


def merge_launch_table(
    path: str | os.PathLike[str],
    device_kind: str,
    entries: Mapping[str, LaunchDefaults],
    source: str,
    timings: Mapping[str, Mapping[str, float]] | None = None,
) -> None:
    """Merge measured launches of one device kind into a launch-table file, atomically.

    Entries replace those of the same key, others are kept (so do ``timings``' buckets: bucket key
    → kernel → fwd+bwd ms, for kernels measured correct); ``source`` replaces the device's note
    (a device found under another spelling moves to ``device_kind``). The file (created if absent)
    is written sorted through a temporary file and ``os.replace``; the cache is cleared.

    Raises
    ------
    ValueError
        A bad key or launch, an empty device kind, or a malformed existing file.
    """
    target = Path(path)
    if not device_kind.strip():
        raise ValueError("`device_kind` must be a non-empty device kind")
    where = f"merging into {target}: device {device_kind!r}"
    new = {k: _checked(k, v, where) for k, v in entries.items()}
    tables = _parse_tables(target.read_text("utf-8"), str(target)) if target.exists() else {}
    times = _checked_timings(dict(timings or {}), where)
    merged: dict[str, LaunchDefaults] = {}
    merged_times: dict[str, Mapping[str, float]] = {}
    for kind in [k for k in tables if norm_kind(k) == norm_kind(device_kind)]:
        old = tables.pop(kind)
        merged.update(old.entries)
        merged_times.update(old.timings)
    merged.update(new)
    merged_times.update(times)
    tables[device_kind] = DeviceTable(source, merged, MappingProxyType(merged_times))
    devices: dict[str, dict[str, Any]] = {}
    for kind, t in tables.items():
        devices[kind] = {"source": t.source, "entries": dict(t.entries)}
        if t.timings:
            devices[kind]["timings"] = {k: dict(v) for k, v in t.timings.items()}
    data = {"schema": SCHEMA, "devices": devices}
    text = json.dumps(data, sort_keys=True, indent=1, default=dataclasses.asdict) + "\n"
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    clear_launch_cache()
