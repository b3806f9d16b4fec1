"""What a compile for a device that is not here found, kept on disk: a second plan of the same
program on the same target skips XLA's compile.

JAX's persistent compilation cache cannot serve a deviceless compile: it writes the executable,
but a compile-only client cannot load one back (jax 0.10.2: "PjRtCompiler must be constructed with
a Client to call DeserializeLoadedExecutable"), so every ``--plan h100`` compiled every program
again (a DeepSeek-V3.2 plan: minutes). A plan needs only what the compile found — the optimized
HLO text and XLA's memory analysis, or a refusal for memory — so that is what
:class:`CompileFindings` keeps, keyed by everything the compile reads: the lowered program with its
op names, the compile options, ``XLA_FLAGS`` and ``LIBTPU_INIT_ARGS``, the versions of jax, jaxlib
and every compiler plugin, and the target (:func:`target_key`). A changed program, flag, version
or target is a new key; nothing is ever looked up by name alone. Source locations are left out of
the key (they change with every edit above a line, and with the folder a clone is in, never the
program): a kept program's metadata may name the lines of the compile that wrote it.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.metadata
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jax

__all__ = [
    "CompileFindings",
    "CompiledProgram",
    "CompiledText",
    "Found",
    "MemoryStats",
    "target_key",
]

#: The entry's layout: a new layout is a new key, never a misread entry.
FORMAT = 1
#: Compiler packages whose versions change what XLA emits for a target (jaxlib holds XLA).
COMPILER_PACKAGES = (
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "libtpu",
    "nvidia-cuda-nvcc-cu12",
)
#: Environment variables the target's compiler reads its flags from.
COMPILER_VARIABLES = ("XLA_FLAGS", "LIBTPU_INIT_ARGS")
#: A source location (``"/src/layer.py":12:3 to :30``): not part of the key (its op name is).
_SOURCE = re.compile(r'"[^"\n]*":\d+:\d+(?: to (?:\d+)?:\d+)?')


@dataclass(frozen=True)
class MemoryStats:
    """XLA's memory analysis of a compiled program (``compiled.memory_analysis()``'s fields)."""

    argument_size_in_bytes: int
    output_size_in_bytes: int
    temp_size_in_bytes: int
    alias_size_in_bytes: int
    generated_code_size_in_bytes: int


@dataclass(frozen=True)
class CompiledText:
    """A compiled program as a plan reads it: ``as_text()`` and ``memory_analysis()``."""

    text: str
    memory: MemoryStats

    def as_text(self) -> str:
        """The optimized HLO (``jax.stages.Compiled.as_text()`` of the compile it came from)."""
        return self.text

    def memory_analysis(self) -> MemoryStats:
        """XLA's memory analysis of the compile it came from."""
        return self.memory


class CompiledProgram(Protocol):
    """What a plan reads of a compiled program: a ``jax.stages.Compiled`` or a
    :class:`CompiledText`."""

    def as_text(self) -> str | None: ...

    def memory_analysis(self) -> Any: ...


@dataclass(frozen=True)
class Found:
    """One compile's findings: the program (None when refused) and how it was compiled."""

    compiled: CompiledProgram | None
    error: str | None = None
    note: str | None = None


def target_key(*parts: str) -> str:
    """The target's part of a key: what names its compiler (the device table's key, the
    topology, XLA's GPU spec text...), hashed.

    Examples
    --------
    >>> target_key("h100", "1x1x1", "gpu_device_info {}") == target_key("h100", "1x1x1", "x")
    False
    """
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _versions() -> list[str]:
    found = [f"jax={jax.__version__}"]
    for name in COMPILER_PACKAGES:
        try:
            found.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name}=-")
    return found


def _memory(compiled: CompiledProgram) -> MemoryStats:
    m = compiled.memory_analysis()
    return MemoryStats(
        int(m.argument_size_in_bytes),
        int(m.output_size_in_bytes),
        int(m.temp_size_in_bytes),
        int(getattr(m, "alias_size_in_bytes", 0)),
        int(getattr(m, "generated_code_size_in_bytes", 0)),
    )


@dataclass(frozen=True)
class CompileFindings:
    """A folder of deviceless compiles' findings for one target.

    Attributes
    ----------
    folder : Path
        Where the entries go (created on the first write).
    target : str
        The target's :func:`target_key`.
    """

    folder: Path
    target: str

    def key(self, lowered: Any, options: dict[str, Any] | None = None) -> str:
        """The entry's name for ``lowered`` (a ``jax.stages.Lowered``) compiled with
        ``options`` (``compile(compiler_options=...)``)."""
        program = _SOURCE.sub('"?"', lowered.as_text(debug_info=True))
        parts = [
            f"format={FORMAT}",
            self.target,
            *_versions(),
            *(f"{v}={os.environ.get(v, '')}" for v in COMPILER_VARIABLES),
            json.dumps(options or {}, sort_keys=True, default=str),
            program,
        ]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json.gz"

    def load(self, key: str) -> Found | None:
        """The findings kept under ``key``, or None (none kept, or an entry that cannot be read:
        it is compiled again and written anew)."""
        try:
            with gzip.open(self._path(key), "rt", encoding="utf-8") as f:
                entry = json.load(f)
            if entry.get("format") != FORMAT:
                return None
            compiled = None
            if entry["text"] is not None:
                compiled = CompiledText(entry["text"], MemoryStats(**entry["memory"]))
            return Found(compiled, entry["error"], entry["note"])
        except (OSError, EOFError, ValueError, KeyError, TypeError):
            return None

    def store(self, key: str, found: Found) -> None:
        """Keep ``found`` under ``key``: a whole file or none (written aside, then renamed).

        A folder that cannot be written keeps nothing: the plan is the same without the entry,
        only the next one compiles again.
        """
        compiled = found.compiled
        entry = {
            "format": FORMAT,
            "text": None if compiled is None else compiled.as_text() or "",
            "memory": None if compiled is None else dataclasses.asdict(_memory(compiled)),
            "error": found.error,
            "note": found.note,
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as f:
                    f.write(json.dumps(entry).encode("utf-8"))
                os.replace(tmp, self._path(key))
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError:
            pass  # nothing kept: this plan has its findings either way
