"""A device that is not here, compiled for: the planned target and what its compiler needs.

A target is a name of the device table (``h100``, ``a100-40gb``, ``v5e``...), optionally with a
count (``8xh100``: one host of eight; :func:`parse_target`). A GPU needs jax's CUDA plugin (with
cuDNN and the CUDA compiler's ``ptxas``), a TPU libtpu: both from PyPI, in the same versions as
the installed jax. Neither needs the device: with JAX on its CPU platform
(:func:`use_cpu_platform`), the plugin builds XLA's real compiler for the target from its device
spec (:func:`gpu_target_config`), and a caller's mesh library hands back the slice's abstract
devices. :func:`check_packages` names what to install in one line; :func:`quiet_native_stderr`
keeps the native libraries' start-up chatter (libtpu's missing-metadata warnings, the CUDA stub's
"no driver") off the terminal. A target's :class:`~tjx.metrics.compile_findings.CompileFindings`
keeps what each compile found, so a second plan of the same program reads it back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tjx.metrics.compile_findings import CompileFindings

__all__ = ["Target", "check_packages", "quiet_native_stderr", "use_cpu_platform"]


@dataclass(frozen=True)
class Target:
    """A planned device and how many of them.

    Attributes
    ----------
    device : Accelerator
        The device table's entry.
    count : int
        Devices in the mesh.
    devices : list
        Abstract (or real) ``jax.Device`` objects, ``count`` of them.
    findings : CompileFindings or None
        Where abstract devices' compiles are kept (None: compiled every time; this machine's
        own devices use JAX's compilation cache instead).
    """

    device: Any
    count: int
    devices: list[Any]
    findings: CompileFindings | None = None

    @property
    def kernel_target(self) -> tuple[str, str, tuple[int, int] | None]:
        """``tjx.kernels.target(...)`` arguments: the platform kernels are chosen for."""
        d = self.device
        return ("gpu" if d.platform == "gpu" else d.platform), d.device_kind, d.compute_capability

    def describe(self) -> str:
        """``"8 × H100 SXM (NVIDIA H100 80GB HBM3)"``."""
        return f"{self.count} × {self.device.name} ({self.device.device_kind})"


def _find(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package that is not there
        return False


def check_packages(platform: str, flag: str = "--plan") -> None:
    """Raise one line naming what to install to compile for ``platform`` without the device.

    Parameters
    ----------
    platform : str
        ``"gpu"`` or ``"tpu"`` (an `Accelerator`'s ``platform``).
    flag : str
        The command-line flag the line starts with.

    Raises
    ------
    ImportError
        A package is missing; the message is the ``pip install`` line, in the installed jax's
        version (the plugin must match it exactly).
    """
    import jax

    version = jax.__version__
    if platform == "tpu":
        if not _find("libtpu"):
            raise ImportError(
                f"{flag}: a TPU plan needs libtpu (no TPU needed); pip install "
                f"'jax[tpu]=={version}' (libtpu from PyPI)"
            )
        return
    wanted = {
        "jax_cuda12_plugin": f"jax-cuda12-plugin=={version}",
        "jax_plugins.xla_cuda12": f"jax-cuda12-pjrt=={version}",
        "nvidia.cudnn": "nvidia-cudnn-cu12",
    }
    missing = [pip for module, pip in wanted.items() if not _find(module)]
    if not _find("nvidia.cuda_nvcc") and shutil.which("ptxas") is None:
        missing.append("nvidia-cuda-nvcc-cu12")  # ptxas: PTX to GPU code
    if missing:
        raise ImportError(
            f"{flag}: a GPU plan needs jax's CUDA plugin (no GPU needed); pip install "
            f"{' '.join(repr(m) if '=' in m else m for m in missing)}"
        )


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to a scratch file while inside.

    Python's own ``sys.stderr`` is flushed first, so nothing written before is lost; lines meant
    for the user go to stdout.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def use_cpu_platform() -> None:
    """JAX on its CPU platform (the plugins' topologies need it; no accelerator is touched)."""
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_platforms", "cpu")
