"""How one architecture's HF tensors and tjx parameters correspond (`HFMapping`, built from
converters such as `take` and `concat`), and a checkpoint's tensors checked against it
(`check_tensors`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Reads one tensor by name (HF or tjx naming, depending on the direction).
Read = Callable[[str], np.ndarray]
#: The dtypes weights may be stored in: each is cast to the model's param dtype (as HF does).
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


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
