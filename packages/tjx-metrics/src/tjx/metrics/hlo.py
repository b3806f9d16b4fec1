"""A reader of XLA's optimized HLO text (``jax.stages.Compiled.as_text()``), enough for a roofline.

It keeps what a cost model needs and nothing else: each computation's instructions with their
result shapes (element type, dimensions, memory space), opcode, operand names and attributes
(``calls=``, ``body=``, ``custom_call_target=``, ``backend_config=``...), left as text to be read
by whoever needs one. The text format is XLA's ``HloModule::ToString``: one instruction per line,
``[ROOT ]%name = SHAPE opcode(operands), key=value, ...`` inside ``%computation (...) -> ... {``
blocks; the source-location tables printed before the first computation are skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Array",
    "Computation",
    "HloModule",
    "Instruction",
    "element_bytes",
    "json_config",
    "parse_hlo",
]

#: Bytes per element of each HLO element type (sub-byte types as fractions).
_ELEMENT_BYTES: dict[str, float] = {
    "pred": 1, "s1": 0.125, "u1": 0.125, "s2": 0.25, "u2": 0.25, "s4": 0.5, "u4": 0.5,
    "s8": 1, "u8": 1, "s16": 2, "u16": 2, "s32": 4, "u32": 4, "s64": 8, "u64": 8,
    "f16": 2, "bf16": 2, "f32": 4, "f64": 8, "c64": 8, "c128": 16, "f4e2m1fn": 0.5,
    "f8e3m4": 1, "f8e4m3": 1, "f8e4m3fn": 1, "f8e4m3fnuz": 1, "f8e4m3b11fnuz": 1,
    "f8e5m2": 1, "f8e5m2fnuz": 1, "f8e8m0fnu": 1, "token": 0, "opaque": 0,
}  # fmt: skip

_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([^\]]*)\](\{[^}]*\})?")
_MEMORY_SPACE = re.compile(r"S\((\d+)\)")
_HEADER = re.compile(r"^(ENTRY )?%?([^\s(]+) \(.*\) -> .* \{$")
_INSTRUCTION = re.compile(r"^\s*(ROOT )?%([^\s=]+) = ")


def element_bytes(dtype: str) -> float:
    """Bytes per element of an HLO element type (``"bf16"`` → 2); unknown types count 4."""
    return _ELEMENT_BYTES.get(dtype, 4)


@dataclass(frozen=True)
class Array:
    """One array of a shape: element type, dimensions and memory space (0: device memory)."""

    dtype: str
    dims: tuple[int, ...]
    memory_space: int = 0

    @property
    def elements(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.dims:
            n *= d
        return n

    @property
    def bytes(self) -> float:
        """Bytes of the array (no padding counted)."""
        return self.elements * element_bytes(self.dtype)


@dataclass
class Instruction:
    """One HLO instruction.

    Attributes
    ----------
    name : str
        Without the ``%``.
    shape : tuple of Array
        The result's arrays (several for a tuple, none for a token or an empty tuple).
    opcode : str
        ``"fusion"``, ``"custom-call"``, ``"while"``...
    operands : list of str
        Operand names (without ``%``); literals of ``constant(...)`` are not operands.
    attrs : dict of str to str
        ``key=value`` attributes after the operands, values as written.
    root : bool
        The computation's ROOT.
    """

    name: str
    shape: tuple[Array, ...]
    opcode: str
    operands: list[str]
    attrs: dict[str, str]
    root: bool = False

    @property
    def bytes(self) -> float:
        """Bytes of the result (summed over a tuple's arrays)."""
        return sum(a.bytes for a in self.shape)

    def attr_list(self, key: str) -> list[str]:
        """A ``{a, b}`` / ``{%a, %b}`` attribute as a list of names (``branch_computations``)."""
        text = self.attrs.get(key, "").strip("{}")
        return [part.strip().lstrip("%") for part in text.split(",") if part.strip()]

    def called(self, key: str) -> str | None:
        """The computation an attribute names (``calls``, ``body``, ``to_apply``...)."""
        value = self.attrs.get(key)
        return None if value is None else value.strip().lstrip("%")


@dataclass
class Computation:
    """A named computation: its instructions in order, and each by name."""

    name: str
    instructions: list[Instruction] = field(default_factory=list)
    by_name: dict[str, Instruction] = field(default_factory=dict)
    entry: bool = False

    @property
    def root(self) -> Instruction:
        """The ROOT instruction (the last one when none is marked)."""
        for ins in self.instructions:
            if ins.root:
                return ins
        return self.instructions[-1]

    def parameters(self) -> dict[int, Instruction]:
        """``parameter(i)`` instructions by their number."""
        found = {}
        for ins in self.instructions:
            if ins.opcode == "parameter":
                found[int(ins.attrs.get("_literal", "0"))] = ins
        return found

    def users(self) -> dict[str, list[Instruction]]:
        """Each instruction's users inside this computation, by name."""
        out: dict[str, list[Instruction]] = {}
        for ins in self.instructions:
            for op in ins.operands:
                out.setdefault(op, []).append(ins)
        return out


@dataclass
class HloModule:
    """A parsed module: its computations by name, the entry's name and the header's attributes."""

    name: str
    computations: dict[str, Computation]
    entry: str
    header: str = ""

    @property
    def entry_computation(self) -> Computation:
        """The ENTRY computation."""
        return self.computations[self.entry]

    @property
    def num_partitions(self) -> int:
        """Devices the program is partitioned over (``num_partitions=`` in the header, else 1)."""
        match = re.search(r"num_partitions=(\d+)", self.header)
        return int(match.group(1)) if match else 1


def _unquoted(text: str, start: int) -> Iterator[tuple[int, str]]:
    """``(index, character)`` of ``text`` from ``start`` on, outside double-quoted strings
    (their quotes and backslash escapes included)."""
    i, quote = start, False
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
        else:
            yield i, ch
        i += 1


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``start`` (quotes and nesting respected)."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = [pairs[text[start]]]
    for i, ch in _unquoted(text, start + 1):
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch == stack[-1]:
            stack.pop()
            if not stack:
                return i
    raise ValueError(f"unbalanced brackets in HLO text: {text[start:start + 80]!r}")


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets and quotes."""
    parts, depth, start = [], 0, 0
    for i, ch in _unquoted(text, 0):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _arrays(text: str) -> tuple[Array, ...]:
    """Every array of a shape (``bf16[2,3]{1,0}`` or a tuple of them); ``/*index=5*/`` comments
    and dynamic-dimension markers (``<=``) are ignored."""
    found = []
    for m in _ARRAY.finditer(re.sub(r"/\*.*?\*/", "", text)):
        dims = tuple(int(d.strip().lstrip("<=")) for d in m.group(2).split(",") if d.strip())
        space = _MEMORY_SPACE.search(m.group(3) or "")
        found.append(Array(m.group(1), dims, int(space.group(1)) if space else 0))
    return tuple(found)


def _instruction(line: str) -> Instruction:
    head = _INSTRUCTION.match(line)
    assert head is not None
    rest = line[head.end() :]
    if rest.startswith("("):
        end = _closing(rest, 0)
        shape_text, rest = rest[: end + 1], rest[end + 1 :].lstrip()
    else:
        shape_text, _, rest = rest.partition(" ")
    paren = rest.index("(")
    opcode = rest[:paren]
    close = _closing(rest, paren)
    inside, tail = rest[paren + 1 : close], rest[close + 1 :]
    operands, attrs = [], {}
    for part in _split_top(inside):
        part = re.sub(r"/\*.*?\*/", "", part).strip()
        if part.startswith("%"):
            operands.append(part[1:])
        elif " %" in part:  # an operand printed with its shape: `f32[2]{0} %x`
            operands.append(part.rsplit("%", 1)[1])
        else:
            attrs["_literal"] = part
    for part in _split_top(tail.lstrip(", ")):
        key, sep, value = part.partition("=")
        if sep:
            attrs[key.strip()] = value.strip()
    return Instruction(
        head.group(2), _arrays(shape_text), opcode, operands, attrs, root=bool(head.group(1))
    )


def parse_hlo(text: str) -> HloModule:
    """Parse an HLO module's text.

    Parameters
    ----------
    text : str
        ``compiled.as_text()`` of a jitted function (or any ``HloModule`` dump).

    Returns
    -------
    HloModule

    Raises
    ------
    ValueError
        The text has no ``HloModule`` line or no ENTRY computation.
    """
    lines = text.splitlines()
    header = next((ln for ln in lines if ln.startswith("HloModule ")), None)
    if header is None:
        raise ValueError("not HLO text: no 'HloModule' line")
    module_name = header.split()[1].rstrip(",")
    computations: dict[str, Computation] = {}
    current: Computation | None = None
    entry = None
    for line in lines:
        if current is None:
            m = _HEADER.match(line)
            if m:
                current = Computation(m.group(2), entry=bool(m.group(1)))
                if current.entry:
                    entry = current.name
            continue
        if line.strip() == "}":
            computations[current.name] = current
            current = None
            continue
        if _INSTRUCTION.match(line):
            ins = _instruction(line)
            current.instructions.append(ins)
            current.by_name[ins.name] = ins
    if entry is None:
        raise ValueError(f"HLO module {module_name!r} has no ENTRY computation")
    return HloModule(module_name, computations, entry, header)


def json_config(text: str) -> dict[str, Any]:
    """A JSON ``backend_config`` attribute as a dict (``{}`` when it is not JSON)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}
